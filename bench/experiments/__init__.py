"""Experiments: accuracy, noise and cost studies whose results the README quotes."""
