"""The dm: backend (qssm's batched density-matrix engine behind the backend contract) against the
libraries that do the same thing: Aer's density matrix on the same compacted circuits and device
noise, and Braket's density-matrix simulator on a Braket snapshot's noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from prepared import Prepared  # noqa: E402
from test_braket import ROWS, template  # noqa: E402

from qssm.app.inference import run_inference  # noqa: E402
from qssm.backends.registry import get_backend  # noqa: E402
from qssm.jobs.spec import parse_spec  # noqa: E402

HAYSTACK, DIGITS = "checkpoints/qmamba-haystack.safetensors", "checkpoints/qlam-digits.safetensors"


def spec(ck, backend, shots, n):
    return parse_spec({"model": {"checkpoint": ck}, "data": {"n": n}, "backend": {"name": backend, "shots": shots}})


@pytest.mark.parametrize("ck,n", [(HAYSTACK, 6), (DIGITS, 3)])
@pytest.mark.parametrize("device", ["fake_fez", "fake_sherbrooke"])
def test_exact_noisy_logits_equal_aer(ck, n, device):
    """Every template of the checkpoint, through the whole pipeline, exact noisy values: the logits
    of dm: and aer: (Aer's density matrix) agree to 1e-6 relative (the readouts themselves agree
    to 1e-6 absolute in test_dmsim.py; QLAM's head multiplies them into logits of ~20)."""
    dm = run_inference(spec(ck, f"dm:{device}", 0, n), progress=False)
    aer = run_inference(spec(ck, f"aer:{device}", 0, n), progress=False)
    for key in ("logit_error_mean", "logit_error_max"):
        assert dm[key] == pytest.approx(aer[key], rel=1e-6, abs=1e-6)
    assert dm["logit_error_mean"] > 1e-3  # the noise is there


@pytest.mark.parametrize("dm,reference", [("dm:fake_fez", "aer:fake_fez"), ("dm:iqm_garnet", "braket:local_dm")])
def test_sampled_values_within_shot_noise_of_the_reference(dm, reference):
    """Sampled values (readout error included) within 4 standard errors of the reference
    simulator's exact values on the same ISA circuits."""
    t = template()
    ours = Prepared(t, get_backend(dm, seed=2), ROWS, 8000).run()
    if reference.startswith("braket"):  # braket_dm's exact values include the readout flips
        ref = Prepared(t, get_backend(reference), ROWS, None).run().values
    else:
        ref = Prepared(t, get_backend(reference, seed=3), ROWS, 40_000).run().values
    assert (np.abs(ours.values - ref) < 4 * ours.stderr + 4 / np.sqrt(40_000) + 1e-9).all()


def test_chunked_batches_sample_as_whole_batches():
    from qssm.backends.cluster import chunks, concatenate

    backend = get_backend("dm:fake_fez", seed=4)
    p = Prepared(template(), backend, np.random.default_rng(0).uniform(-3, 3, (150, 4)), 500)
    whole = backend.evaluate(p.batch)
    parts = concatenate([backend.evaluate(c) for c in chunks(p.batch, 3)])
    for a, b in zip(whole.counts, parts.counts):
        np.testing.assert_array_equal(a, b)


def test_an_exact_dm_run_says_its_values_leave_readout_error_out():
    """shots = 0 on dm: gives Tr(rho O) as Aer's estimator does, without the readout flips a sampled
    run (and the plan's infinite-shot limit) has: the run's summary says so; a sampled run's does not."""
    from qssm.commands.run import format_run

    exact = format_run(run_inference(spec(DIGITS, "dm:fake_fez", 0, 2), progress=False)).splitlines()[0]
    sampled = format_run(run_inference(spec(DIGITS, "dm:fake_fez", 64, 2), progress=False)).splitlines()[0]
    assert "readout error left out" in exact and "readout" not in sampled
    aer = format_run(run_inference(spec(DIGITS, "aer:fake_fez", 0, 2), progress=False)).splitlines()[0]
    assert "readout error left out" in aer  # Aer's exact values leave it out as well (they equal dm:'s)
