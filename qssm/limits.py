"""Bounds shared by the spec parser (jobs/spec.py) and the command line (qssm/args.py)."""

MAX_SHOTS = 100_000_000  # shots per circuit a spec or --shots may ask for
MAX_TEST = 100_000  # test examples a spec or --n may ask for
