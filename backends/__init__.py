"""qssm.backends"""
