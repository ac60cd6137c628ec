"""Torch models (QMamba, QLAM, baselines), the exact statevector simulator, tasks and training."""
