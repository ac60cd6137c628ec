"""argparse types for qssm's options: a bad value is refused while the command line is parsed, in
one line that names the option and the range (qssm.cli turns argparse errors into QssmError)."""

from __future__ import annotations

import argparse
import math
import re

from qssm.backends.cluster_address import parse_cluster
from qssm.errors import QssmError
from qssm.limits import MAX_SHOTS, MAX_TEST

SEED_MAX = 2**63 - 1
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _span(lo, hi) -> str:
    return f">= {lo}" if hi is None else f"{lo}..{hi}"


def integer(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {_span(lo, hi)}, got {text!r:.40}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_span(lo, hi)}, got {value}")
        return value

    return parse


def number(lo: float, hi: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {lo:g}..{hi:g}, got {text!r:.40}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"must be a finite number {lo:g}..{hi:g}, got {text!r:.40}")
        return value

    return parse


def _items(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got {text!r:.60}")
    return items


def integers(lo: int, hi: int | None = None):
    """A comma-separated list of integers, e.g. --shots 250,1000,4000."""
    one = integer(lo, hi)
    return lambda text: [one(s) for s in _items(text, f"integers {_span(lo, hi)}")]


def names(text: str) -> list[str]:
    """A comma-separated list of names, e.g. --targets aer:fake_fez,aer:fake_torino."""
    return _items(text, "names")


def job_id(text: str) -> str:
    if not JOB_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a job id (ids look like 20261125-080300-a1b2c3; "
                                         f"list them with `qssm status`)")
    return text


def cluster(text: str) -> str:
    """--cluster: the same parser as [backend] cluster (backends/cluster_address.py)."""
    if not text:  # in a spec "" means no cluster; an empty flag is a slip
        raise argparse.ArgumentTypeError('is empty; give "local:N" or a scheduler address, or leave --cluster out')
    try:
        return parse_cluster(text)
    except QssmError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def shots(text: str) -> int:
    return integer(0, MAX_SHOTS)(text)


def job_shots(text: str) -> int | str:
    """A job's shots per circuit, or "auto" (adaptive, decision-aware shots: pipeline/adaptive.py)."""
    return text if text == "auto" else shots(text)


seed = integer(0, SEED_MAX)


def examples(text: str) -> int:
    """--n: the first n test examples."""
    return integer(1, MAX_TEST)(text)
