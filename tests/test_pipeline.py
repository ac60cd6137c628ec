"""End to end through plan -> compile -> dispatch -> recur on real backends."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qssm.app.inference import run_inference, shot_band
from qssm.jobs.spec import parse_spec

HAYSTACK = "checkpoints/qmamba-haystack.safetensors"
DIGITS = "checkpoints/qlam-digits.safetensors"


def spec(checkpoint, backend="exact", shots=0, n=8, **sections):
    raw = {"model": {"checkpoint": checkpoint}, "data": {"n": n}, "backend": {"name": backend, "shots": shots}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return parse_spec(raw)


@pytest.mark.parametrize("backend", ["exact", "aer", "braket:local"])
@pytest.mark.parametrize("checkpoint", [HAYSTACK, DIGITS])
def test_ideal_backends_equal_torch_forward(backend, checkpoint):
    r = run_inference(spec(checkpoint, backend, n=6), progress=False)
    assert r["logit_error_max"] < 1e-5, r
    assert r["accuracy"] == r["exact_accuracy"] and r["agreement"] == 1.0


def test_transpile_calls_do_not_depend_on_length_or_batch():
    counts = set()
    for n, T in [(2, 8), (8, 16), (4, 40)]:
        s = spec(HAYSTACK, "aer:fake_fez", shots=200, n=n, data={"T": T})
        r = run_inference(s, progress=False)
        counts.add(r["transpile_calls"])
        assert r["round_trips"] == 1 and r["table_round_trips"] == 1
    assert counts == {8}  # 4 sub-circuits x 2 layers, each transpiled once


def test_shots_keep_accuracy_within_the_shot_noise_band():
    s = spec(HAYSTACK, "aer", shots=4000, n=48)
    r = run_inference(s, progress=False)
    assert abs(r["accuracy"] - r["exact_accuracy"]) <= shot_band(r["exact_accuracy"], r["n_examples"])
    assert 0 < r["logit_error_mean"] < 1.0


@pytest.mark.parametrize("segment,shots", [(0, 0), (4, 0)])
def test_qlam_segments_exact(segment, shots):
    r = run_inference(spec(DIGITS, "exact", shots, n=6, split={"segment": segment}), progress=False)
    assert r["logit_error_max"] < 1e-5
    assert r["round_trips"] == (1 if segment == 0 else 2)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "qssm.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("body,needle", [
    ('[model]\ncheckpoint = "checkpoints/qmamba-haystack.safetensors"\n[backend]\nname = "nosuch"', "unknown backend"),
    ('[model]\ncheckpoint = "checkpoints/missing.safetensors"', "does not exist"),
    ('[model]\ncheckpoint = "checkpoints/qmamba-haystack.safetensors"\n[backend]\nname = "aer:fake_fez"\nshots = 100000000', "shots"),
    ('[model]\ncheckpoint = "checkpoints/qmamba-haystack.safetensors"\n[backend]\nname = "ibm:ibm_kingston"\nshots = 100', "qssm submit"),
])
def test_bad_input_is_one_line_error(tmp_path, body, needle):
    f = tmp_path / "spec.toml"
    f.write_text(body)
    p = cli("run", str(f))
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_run_json_prints_one_object(tmp_path):
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[data]\nn = 4\n[backend]\nname = "exact"\n')
    p = cli("run", str(f), "--json", "--out", str(tmp_path / "rep"))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    # the exact backend reproduces the exact forward: every decision agrees
    assert r["accuracy"] == r["exact_accuracy"] and r["agreement"] == 1.0 and r["logit_error_max"] < 1e-9
    assert r["round_trips"] == 1
    assert (tmp_path / "rep" / "report.html").stat().st_size > 1000


@pytest.mark.parametrize("segment", [2, 4])
def test_qlam_segmented_accuracy_against_shots(segment):
    """Segments of k tokens with the state estimated by Pauli tomography between them: the logit
    error shrinks with shots (shot noise ~ 1/sqrt(shots)) and predictions agree with exact."""
    errors = {}
    for shots in (500, 20000):
        r = run_inference(spec(DIGITS, "exact", shots, n=24, split={"segment": segment}), progress=False)
        assert r["round_trips"] == 8 // segment
        errors[shots] = r["logit_error_mean"]
        assert r["agreement"] >= (0.85 if shots == 500 else 0.95)
    assert errors[20000] < 0.5 * errors[500]


def test_too_wide_without_cutting_is_one_line_error(tmp_path):
    f = tmp_path / "wide.toml"
    f.write_text(f'[model]\ncheckpoint = "{DIGITS}"\n[data]\nn = 2\n[backend]\nname = "aer:fake_manila"\nshots = 100\n'
                 '[split]\ncutting = "off"\n')
    p = cli("run", str(f))
    assert p.returncode == 2 and "needs 6 qubits" in p.stderr and "cutting" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
