"""Adaptive, decision-aware shots ([backend] shots = "auto", pipeline/adaptive.py): a killed and
resumed job is bit-identical to an uninterrupted one, bad values are one line, and the rounds
spend shots only where decisions are open."""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fake_ibm  # noqa: E402
from test_jobs import HAYSTACK, assert_same_results, driver, results_by_key  # noqa: E402

from qssm.app.durable import create_job  # noqa: E402
from qssm.app.inference import run_inference  # noqa: E402
from qssm.cli import main  # noqa: E402
from qssm.jobs.spec import parse_spec  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402
from qssm.pipeline.adaptive import MIN_PILOT, quantize  # noqa: E402

CHAIN = "checkpoints/qlam-digits-chain.safetensors"


def adaptive_spec(backend="ibm:fake_fez", n=4, ck=HAYSTACK, **backend_keys):
    # a strict target and a small pilot: several rounds even on a few examples
    keys = {"name": backend, "shots": "auto", "pilot_shots": 4, "confidence": 0.999999, "seed_simulator": 1,
            **backend_keys}
    return parse_spec({"model": {"checkpoint": ck}, "data": {"n": n}, "backend": keys}, "test")


def test_adaptive_job_killed_at_random_points_resumes_bit_identical(tmp_path):
    ref_store = JobStore(tmp_path / "ref.sqlite")
    ref_id, _ = create_job(ref_store, adaptive_spec())
    start = time.perf_counter()
    ref = driver(ref_store.path, ref_id, tmp_path / "ref-ibm")
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    span = time.perf_counter() - start
    report = ref_store.job(ref_id)["report"]
    assert report["adaptive_rounds"] >= 2  # the test exercises later rounds, not only the pilot

    store = JobStore(tmp_path / "killed.sqlite")
    job_id, _ = create_job(store, adaptive_spec())
    rng = random.Random(5)
    for _ in range(3):
        p = driver(store.path, job_id, tmp_path / "ibm")
        time.sleep(rng.uniform(0.3 * span, span))
        p.send_signal(signal.SIGKILL)
        p.wait()
    p = driver(store.path, job_id, tmp_path / "ibm")
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert_same_results(results_by_key(store, job_id), results_by_key(ref_store, ref_id))
    resumed = store.job(job_id)["report"]
    for key in ("logit_error_mean", "shots_per_example_mean", "adaptive_rounds"):
        assert resumed[key] == report[key]
    assert resumed["adaptive"]["shots_per_example"] == report["adaptive"]["shots_per_example"]
    assert fake_ibm.submissions(tmp_path / "ibm") == fake_ibm.submissions(tmp_path / "ref-ibm")
    # a round trip's batches of one shot count shared a job: fewer jobs than batches
    assert fake_ibm.submissions(tmp_path / "ref-ibm") < ref_store.totals(ref_id)["batches"]


@pytest.mark.parametrize("line,needle", [
    ('shots = "many"', 'backend.shots must be int or "auto"'),
    ("shots = -4", "backend.shots must be 0..100000000"),
    ('shots = "auto"\nconfidence = 1.5', "backend.confidence must be 0.5..0.999999"),
    ('shots = "auto"\nconfidence = 0.2', "backend.confidence must be 0.5..0.999999"),
    ('shots = "auto"\nconfidence = nan', "backend.confidence must be a finite number"),
    ('shots = "auto"\nconfidence = "high"', "backend.confidence must be float"),
    ('shots = "auto"\nmax_shots_per_example = -1', "backend.max_shots_per_example must be 0..1000000000000"),
    ('shots = "auto"\nmax_shots_per_example = 2.5', "backend.max_shots_per_example must be int"),
    ('shots = "auto"\npilot_shots = 0', "backend.pilot_shots must be 1..100000000"),
])
def test_bad_adaptive_values_are_one_line_errors(tmp_path, capsys, line, needle):
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[backend]\nname = "dm:fake_fez"\n{line}\n')
    before = sorted(tmp_path.iterdir())
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qssm: error:") and needle in err, err
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("argv,needle", [
    (["run", "{spec}", "--shots", "lots"], "--shots: must be an integer 0..100000000"),
    (["plan", "{spec}", "--confidence", "1.5"], "must be a finite number 0.5..0.999999"),
    (["plan", "{spec}", "--backend", "aer:fake_fez", "--n", "2"], "needs the exact noisy values of a dm: backend"),
])
def test_bad_cli_values_are_one_line_errors(tmp_path, capsys, argv, needle):
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[backend]\nname = "dm:fake_fez"\nshots = 100\n')
    assert main([a.format(spec=f) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_adaptive_split_is_refused_in_one_line(tmp_path, capsys):
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{CHAIN}"\n[backend]\nname = "dm:fake_fez"\nshots = "auto"\n[split]\nsegment = 4\n')
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "segment = 0" in err, err


def test_quantize_rounds_up_to_pilot_powers_of_two():
    np.testing.assert_array_equal(quantize(np.array([1, 16, 17, 32, 33, 1000]), 16), [16, 16, 32, 32, 64, 1024])


def test_adaptive_spends_less_where_decisions_are_clear():
    """QLAM on fake_fez: every example starts at the pilot; those still open get more, and the
    shots per example add up to what was dispatched (calibrations aside)."""
    r = run_inference(adaptive_spec("dm:fake_fez", 24, CHAIN, pilot_shots=16, confidence=0.99), progress=False)
    s = np.asarray(r["adaptive"]["shots_per_example"])
    # 8 prefixes x 3 measured groups, each at 8..16 pilot shots as the noiseless sensitivity asks
    assert MIN_PILOT * 24 <= s.min() < 16 * 24
    assert s.max() > s.min() and r["adaptive_rounds"] >= 2
    assert s.sum() == pytest.approx(r["total_shots"])  # no readout calibration here
    assert r["agreement"] >= 0.9
    json.dumps(r)  # the report stays plain data


def test_plan_cli_json_and_report(tmp_path, capsys):
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{Path(CHAIN).resolve()}"\n[backend]\nname = "dm:fake_fez"\nshots = "auto"\n')
    assert main(["plan", str(f), "--n", "6", "--json", "--out", str(tmp_path / "out")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["examples"] == 6 and out["confidence"] == 0.99
    assert {"curve", "recommended_shots_per_circuit", "floor_shots_per_example"} <= set(out)
    assert "Shot plan" in (tmp_path / "out" / "report.html").read_text()


def test_a_draw_through_the_model_that_flips_a_decision_vetoes_its_stop(monkeypatch):
    """The stop needs the model's word as well as the delta method's: where a draw through the
    recurrence at the current shots changes an example's argmax, the example stays open and every
    row it reads gets GROWTH x its shots in the next round (its margins already look clear)."""
    import qssm.pipeline.adaptive as adaptive

    real = adaptive.curvature_bias

    def flipping_first_round(model, inputs, records, pool, sens, shots, pairs, seed):
        shift, flipped = real(model, inputs, records, pool, sens, shots, pairs=pairs, seed=seed)
        if seed == 0:  # round 0: every draw "flipped"
            return shift, np.ones_like(flipped)
        return shift, flipped

    spec = adaptive_spec("dm:fake_fez", 12, CHAIN, pilot_shots=16, confidence=0.99)
    plain = run_inference(spec, progress=False)["adaptive"]
    monkeypatch.setattr(adaptive, "curvature_bias", flipping_first_round)
    vetoed = run_inference(spec, progress=False)["adaptive"]
    r0, plain_r0 = vetoed["rounds"][0], plain["rounds"][0]
    assert plain_r0["decided"] > 0  # without the veto some examples stop at the pilot
    assert r0["decided"] == 0 and r0["vetoed"] == plain_r0["decided"]
    assert vetoed["rounds"][1]["examples"] == 12 - r0["capped"]
    # the vetoed examples' rows grew: the run spends more than the one that stopped them
    assert sum(vetoed["shots_per_example"]) > sum(plain["shots_per_example"])
