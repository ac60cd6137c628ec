"""Provenance of a run: what produced a report, so that a number in it can be traced and repeated.
Recorded by the run itself (pipeline/inference.py), so a stored job's report carries the versions,
spec and checkpoint it actually ran with, not those of the process that renders it later."""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata

from qssm.models import checkpoint

PACKAGES = ("qssm", "qiskit", "torch", "qiskit-aer", "qiskit-ibm-runtime", "amazon-braket-sdk",
            "qiskit-addon-cutting", "mthree", "numpy")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provenance(spec, sha256: str | None = None) -> dict:
    """Versions, the spec as run, when, on which cluster, and the checkpoint's content hash (the
    SHA-256 over its tensors that `checkpoint.load` verifies: `sha256` when the caller read it,
    else from the checkpoint's header)."""
    return {"versions": versions(), "timestamp": now(), "spec": spec.to_dict(),
            "cluster": spec.backend.cluster or None,
            "checkpoint_sha256": sha256 or checkpoint.read_metadata(spec.checkpoint).get("sha256")}
