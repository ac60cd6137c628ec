"""qssm.pipeline"""
