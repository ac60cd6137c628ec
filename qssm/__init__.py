"""qssm: run trained quantum state-space sequence models on simulators and cloud QPUs."""

__version__ = "0.1.0"
