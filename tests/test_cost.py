"""What a job costs: the preflight prices exactly what dispatch sends, `qssm estimate` prices without
credentials and records nothing, and every command shows the price per example."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qssm.jobs.run import create_job, run_job  # noqa: E402
from qssm.jobs.spec import parse_spec  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CK = ROOT / "checkpoints"


def spec(checkpoint: str, backend="dm:fake_fez", shots=100, n=1, **extra):
    raw = {"model": {"checkpoint": str(CK / checkpoint)}, "data": {"n": n},
           "backend": {"name": backend, "shots": shots, "seed_simulator": 1}}
    raw.update(extra)
    return parse_spec(raw, "test")


@pytest.mark.parametrize("checkpoint,extra", [
    ("qmamba-haystack.safetensors", {}),  # token-table round trip, then a layer on the same qubits
    ("qlam-digits-chain.safetensors", {"split": {"segment": 4}}),  # hand-off round trips
])
def test_readout_mitigated_preflight_prices_what_dispatch_sends(tmp_path, checkpoint, extra):
    """Readout calibrations are planned once per qubit per run: the priced transform (no results
    ever come back) must plan them as the dispatched run does (it once priced one extra batch per
    later round trip)."""
    s = spec(checkpoint, mitigation={"readout": True}, **extra)
    store = JobStore(tmp_path / "s.sqlite")
    job_id, est = create_job(store, s)
    report = run_job(store, job_id)
    assert report["calibration_circuits"] > 0
    assert (est["batches"], est["executions"], est["shots"]) == (
        report["dispatched_batches"], report["executions"], report["total_shots"])
    assert est["batches"] == report["store_batches"]
