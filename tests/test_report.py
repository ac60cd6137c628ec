"""qssm report: a stored job is rendered from what the store holds, with nothing run again; sweeps
only on request and on the job's device noise; provenance, standard errors, transpile time apart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qssm.app.durable import create_job, run_job
from qssm.backends.base import Backend
from qssm.cli import main
from qssm.jobs.spec import parse_spec
from qssm.jobs.store import JobStore
from qssm.models import checkpoint

ROOT = Path(__file__).resolve().parents[1]
HAYSTACK = str(ROOT / "checkpoints" / "qmamba-haystack.safetensors")


@pytest.fixture(scope="module")
def ibm_job(tmp_path_factory):
    """A finished ibm:fake_fez job whose spec sets an IBM runtime option (twirling), as
    examples/ibm-kingston.toml does."""
    path = tmp_path_factory.mktemp("store") / "s.sqlite"
    spec = parse_spec({"model": {"checkpoint": HAYSTACK}, "data": {"n": 4},
                       "backend": {"name": "ibm:fake_fez", "shots": 200, "seed_simulator": 1},
                       "mitigation": {"twirling": True}}, "test")
    store = JobStore(path)
    job_id, _ = create_job(store, spec, yes=True)
    run_job(store, job_id)
    assert store.job(job_id)["status"] == "done"
    store.close()
    return path, job_id


def test_report_of_a_stored_job_runs_nothing(ibm_job, tmp_path, monkeypatch):
    import qssm.commands.report as report_command

    def refuse(*args, **kwargs):
        raise AssertionError("qssm report ran the job again")

    built = []
    init = Backend.__init__
    monkeypatch.setattr(report_command, "run_job_on", refuse)
    monkeypatch.setattr(Backend, "__init__", lambda self: built.append(type(self).__name__) or init(self))
    path, job_id = ibm_job
    start = time.perf_counter()
    assert main(["report", job_id, "--store", str(path), "--out", str(tmp_path / "rep")]) == 0
    assert time.perf_counter() - start < 10
    assert built == []  # no backend constructed: no simulator, no runtime session
    r = json.loads((tmp_path / "rep" / "report.json").read_text())
    p = r["provenance"]
    assert p["versions"]["qiskit"] and p["versions"]["torch"] and p["versions"]["qssm"]
    assert p["spec"]["mitigation"]["twirling"] is True and p["spec"]["backend"]["name"] == "ibm:fake_fez"
    assert p["checkpoint_sha256"] == checkpoint.read_metadata(HAYSTACK)["sha256"] and p["timestamp"]
    assert "cluster" in p
    # the transpilation it ran, as recorded by the run: one row per template on the job's device
    assert {row["target"] for row in r["compile"]} == {"ibm:fake_fez"} and len(r["compile"]) == 8
    assert all(len(row["layout"]) == 4 for row in r["compile"])
    n = r["n_examples"]
    assert r["accuracy_stderr"] == pytest.approx((r["accuracy"] * (1 - r["accuracy"]) / n) ** 0.5)
    assert "shots_sweep" not in r and "noisy_targets" not in r


def test_sweep_runs_on_the_jobs_device_noise(ibm_job, tmp_path):
    """--sweep simulates on dm:fake_fez (the job's device noise) and exact, without the IBM-only
    runtime options that made it fail before."""
    path, job_id = ibm_job
    assert main(["report", job_id, "--store", str(path), "--out", str(tmp_path / "rep"), "--sweep",
                 "--shots", "100,400"]) == 0
    r = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {s["backend"] for s in r["shots_sweep"]} == {"exact", "dm:fake_fez"}
    for s in r["shots_sweep"]:
        p, n = s["accuracy"], r["n_examples"]
        assert s["accuracy_stderr"] == pytest.approx((p * (1 - p) / n) ** 0.5)


def test_shots_plot_names_each_line_once():
    from qssm.report import EXACT_LINE, shots_series

    r = {"exact_accuracy": 1.0, "shots_sweep": [{"backend": b, "shots": s, "accuracy": 1.0}
                                                for b in ("exact", "dm:fake_fez") for s in (100, 400)]}
    labels = [label for label, _ in shots_series(r)] + [EXACT_LINE]
    assert len(labels) == len(set(labels)) == 3
    assert sum("exact" == label.split()[0] for label in labels) == 2  # both say what they are


def test_transpile_time_is_not_booked_under_split(monkeypatch):
    """The split stage's cut decision transpiles; that time is "transpile", not "split"."""
    import qssm.pipeline.compile as compile_mod
    from qssm.app.inference import run_inference

    slow = compile_mod.compile_circuit

    def slower(*args, **kwargs):
        time.sleep(0.2)
        return slow(*args, **kwargs)

    monkeypatch.setattr(compile_mod, "compile_circuit", slower)
    spec = parse_spec({"model": {"checkpoint": HAYSTACK}, "data": {"n": 2},
                       "backend": {"name": "dm:fake_fez", "shots": 100}}, "test")
    r = run_inference(spec, progress=False)
    seconds = r["seconds"]
    assert r["transpile_calls"] == 8 and seconds["transpile"] >= 8 * 0.2
    assert seconds["split"] < 0.5 and seconds.get("compile", 0) < 0.5


def test_depth_quartiles_are_explained():
    import torch

    from qssm.models import checkpoint

    model = checkpoint.load("checkpoints/qmamba-haystack.safetensors")[0]
    logits = torch.nn.functional.one_hot(torch.tensor([1, 0, 1, 1, 1]), 2).double()
    rows = model.report_extras(logits, torch.ones(5, dtype=torch.long),
                               {"depth": [0.05, 0.1, 0.3, 0.6, 0.99]})["accuracy_by_depth"]
    assert [r["quartile"] for r in rows] == ["q1", "q2", "q3", "q4"]
    assert "furthest from the query" in rows[0]["needle_position"] and "nearest" in rows[3]["needle_position"]
    assert rows[0]["n"] == 2 and rows[0]["accuracy"] == 0.5 and rows[0]["accuracy_stderr"] == pytest.approx(0.5 ** 1.5)


def test_mitigation_table_shows_every_stages_columns():
    """The mitigation table's columns are the union of its rows' keys: the readout row's method
    (mthree) and calibrated qubits show even when the ZNE row comes first."""
    from qssm.report import render_html

    zne = {"setting": "zne", "circuits": 8, "shots": 800, "circuit_multiplier": 2.0, "shot_multiplier": 1.0}
    readout = {"setting": "readout", "circuits": 2, "shots": 200, "circuit_multiplier": 1.25,
               "shot_multiplier": 1.25, "calibrated_qubits": 4, "calibration_sets": 1, "method": "mthree"}
    page = render_html({"mitigation": [zne, readout]})
    table = page.split("<h2>Mitigation and its overhead</h2>")[1].split("</table>")[0]
    assert "mthree" in table and table.count("<tr>") == 3
