"""qssm.jobs"""
