"""qssm.circuits"""
