"""Every paid circuit through the store: cut subexperiments and readout calibrations are durable,
priced and resumable; cancel stops the worker; every provider submission is counted; a Braket QPU
without credentials is refused before anything is stored."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import fake_ibm  # noqa: E402
from test_jobs import DRIVER, HAYSTACK, assert_same_results, results_by_key, spec  # noqa: E402

from qssm.app.durable import cancel_job, create_job, run_job  # noqa: E402
from qssm.cli import main  # noqa: E402
from qssm.jobs.spec import parse_spec  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402
from qssm.models import checkpoint  # noqa: E402
from qssm.models.config import QMambaConfig  # noqa: E402
from qssm.models.registry import HAYSTACK as TASK  # noqa: E402
from qssm.models.registry import build_model
from qssm.models.tasks import haystack_vocab  # noqa: E402


@pytest.fixture(scope="module")
def tiny_qmamba(tmp_path_factory) -> str:
    """The outside test's repro model: a 2-qubit, 1-layer QMamba (random weights suffice)."""
    torch.manual_seed(0)
    cfg = QMambaConfig(vocab_size=haystack_vocab(TASK), d_model=4, n_layers=1, n_qubits=2, q_budget=10, task=TASK)
    path = tmp_path_factory.mktemp("ck") / "tiny.safetensors"
    checkpoint.save(build_model(cfg), path)
    return str(path)


def cut_spec(ck: str, **extra):
    raw = {"model": {"checkpoint": ck}, "data": {"n": 2, "T": 4},
           "backend": {"name": "aer:fake_fez", "shots": 400, "seed_simulator": 5},
           "split": {"cutting": "force"}, "mitigation": {"readout": True}}
    raw.update(extra)
    return parse_spec(raw, "test")


def driver(store_path, job_id, root) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, DRIVER, str(store_path), job_id, str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cut_job_is_durable_priced_mitigated_and_fast(tmp_path, tiny_qmamba):
    """The outside test's repro (cutting = "force" on aer:fake_fez): every cut batch and readout
    calibration gets a store row; the preflight prices them; SIGKILLs at random points and resumes
    give bit-identical results to an uninterrupted run."""
    s = cut_spec(tiny_qmamba)
    ref_store = JobStore(tmp_path / "ref.sqlite")
    ref_id, estimate = create_job(ref_store, s)
    start = time.perf_counter()
    report = run_job(ref_store, ref_id)
    seconds = time.perf_counter() - start
    rows = ref_store.batches(ref_id)
    cut_rows = [r for r in rows if (ref_store.batch(ref_id, r[0]).result.meta.get("template") or "").endswith(".cut")]
    cal_rows = [r for r in rows if ref_store.batch(ref_id, r[0]).result.meta.get("template") == "readout_cal"]
    assert report["cut_batches"] == len(cut_rows) == 4 and len(cal_rows) >= 1
    assert report["store_batches"] == len(rows) == report["dispatched_batches"]
    # priced: the preflight saw exactly the batches dispatch got (cut subexperiments and calibrations)
    assert estimate["batches"] == report["dispatched_batches"] and estimate["executions"] == report["executions"]
    assert report["calibration_circuits"] > 0
    assert seconds < 60, f"the tiny cut job took {seconds:.0f} s"  # seconds on the compacted path, not minutes

    store = JobStore(tmp_path / "killed.sqlite")
    job_id, _ = create_job(store, s)
    rng = random.Random(3)
    for _ in range(3):
        p = driver(store.path, job_id, tmp_path / "ibm")
        time.sleep(rng.uniform(1.0, 1.0 + seconds))  # interpreter start-up is about a second
        p.send_signal(signal.SIGKILL)
        p.wait()
    p = driver(store.path, job_id, tmp_path / "ibm")
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert_same_results(results_by_key(store, job_id), results_by_key(ref_store, ref_id))
    assert store.job(job_id)["report"]["logit_error_mean"] == ref_store.job(ref_id)["report"]["logit_error_mean"]


def test_cancel_stops_the_worker_and_keeps_what_finished(tmp_path, capsys):
    """`qssm cancel` during a run: the worker submits nothing more after the next batch boundary,
    and `qssm results` shows what finished as a partial result (the outside test's hole #1)."""
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("ibm:fake_fez", shots=500, n=8))
    root = tmp_path / "ibm"
    p = driver(store.path, job_id, root)
    deadline = time.time() + 300
    while store.totals(job_id)["done"] < 2 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert store.totals(job_id)["done"] >= 2, p.stderr.read() if p.poll() is not None else "too slow"
    cancelled_at = time.time()
    cancel_job(store, job_id)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    jobs = sorted((root / "jobs").glob("*.json"))
    late = [j for j in jobs if json.loads(j.read_text())["created"] > cancelled_at]
    assert len(late) <= 1  # at most the one submission that was under way at the cancel
    job = store.job(job_id)
    totals = store.totals(job_id)
    assert job["status"] == "cancelled" and job["report"]["cancelled"]
    if job["report"]["partial"]:  # else the run finished before it saw the cancel, and keeps its full report
        assert totals["done"] < 8  # a whole run: 4 token-table batches + 4 of layer 2
    assert main(["results", job_id, "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "CANCELLED, partial result" in out or "cancelled after its last batch" in out
    assert main(["results", job_id, "--store", str(store.path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    if payload.get("partial"):
        assert len(payload["results"]) == len(payload["finished_batches"]) == totals["done"]
    # every job the provider got is recorded (a pack's job on each of its members): none orphaned
    recorded = {i for row in store.batches(job_id) if row[6] for i in json.loads(row[6])["job_ids"]}
    assert fake_ibm.submissions(root) == len(recorded) <= totals["submissions"]


def test_every_provider_submission_is_counted(tmp_path):
    """Batches left `submitted` by a killed process whose local jobs died are re-run: each
    re-run is a provider submission and counts as one (the outside test's hole #6)."""
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("aer", shots=200, n=2))
    run_job(store, job_id)
    n = store.totals(job_id)["batches"]
    assert store.totals(job_id)["submissions"] == n
    store.db.execute("UPDATE batches SET status = 'submitted', handle = ? WHERE job_id = ?",
                     ('{"backend": "aer", "job_ids": ["aer-dead"], "meta": {}}', job_id))
    store.db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (job_id,))
    report = run_job(store, job_id)
    assert report["provider_submissions"] == n and store.totals(job_id)["submissions"] == 2 * n


def test_resume_says_why_it_resubmits_in_flight_batches(tmp_path, capsys):
    """After a kill in local testing mode the in-flight jobs died with the process: `qssm resume`
    submits them again, and says so and how many (12 submissions for 8 batches was unexplained)."""
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("aer", shots=200, n=2))
    run_job(store, job_id)
    n = store.totals(job_id)["batches"]
    store.db.execute("UPDATE batches SET status = 'submitted', handle = ? WHERE job_id = ?",
                     ('{"backend": "aer", "job_ids": ["aer-dead"], "meta": {}}', job_id))
    store.db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (job_id,))
    assert main(["resume", job_id, "--store", str(store.path)]) == 0
    out, err = capsys.readouterr()
    assert f"resubmitted     {n} in-flight batches" in out
    assert err.count("died with the process that submitted it") == n
    assert store.job(job_id)["report"]["resubmitted_batches"] == n


def test_submissions_count_what_the_provider_acknowledged(tmp_path, capsys):
    """A claim whose submission never reached the provider (no network) is not a submission: the
    store counts acknowledged submissions, and `qssm status` shows the claims apart."""
    from qssm.backends.aer import AerBackend
    from qssm.jobs.retry import RetryPolicy

    class Offline(AerBackend):
        def submit(self, batch):
            raise ConnectionError("Network is unreachable")

    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("aer", shots=200, n=2))
    with pytest.raises(Exception, match="unreachable"):
        run_job(store, job_id, backend=Offline(None, seed=1),
                policy=RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0)))
    totals = store.totals(job_id)
    assert totals["submissions"] == 0 and totals["claims"] == 1
    assert main(["status", job_id, "--store", str(store.path)]) == 0
    assert "submissions 0 acknowledged by the provider (1 claimed" in capsys.readouterr().out
    store.set_status(job_id, "running")
    run_job(store, job_id)  # back online: every batch acknowledged once, one extra claim
    totals = store.totals(job_id)
    assert totals["submissions"] == totals["batches"] and totals["claims"] == totals["batches"] + 1


def test_status_shows_the_planned_batches_progress_and_estimate(tmp_path, capsys):
    """Before planning, the list shows the preflight's batch count (it showed 0/0); the job view
    shows elapsed time, the estimate beside what was spent, and QPU seconds."""
    store = JobStore(tmp_path / "s.sqlite")
    job_id, estimate = create_job(store, spec("ibm:fake_fez", shots=500, n=2))
    assert estimate["batches"] > 0
    assert main(["status", "--store", str(store.path)]) == 0
    assert f" 0/{estimate['batches']} batches" in capsys.readouterr().out
    assert main(["status", "--store", str(store.path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["planned_batches"] == estimate["batches"] and row["elapsed_seconds"] >= 0
    assert main(["status", job_id, "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert f"batches 0/{estimate['batches']} done ({estimate['batches']} planned by the preflight), elapsed" in out
    assert f"$0.00 spent of ${estimate['usd']:.2f} estimated; QPU seconds 0 used of" in out


def test_eta_from_the_pace_of_finished_batches():
    from qssm.commands.jobs import progress

    now = time.time()
    job = {"status": "running", "created": now - 100, "updated": now, "estimate": {"batches": 8}}
    p = progress(job, {"batches": 4, "done": 2, "first_claimed": now - 60})
    assert p["planned_batches"] == 8 and abs(p["eta_seconds"] - 180) < 2 and abs(p["elapsed_seconds"] - 100) < 2
    done = progress(dict(job, status="done", updated=now - 40), {"batches": 8, "done": 8, "first_claimed": now - 90})
    assert done["eta_seconds"] is None and abs(done["elapsed_seconds"] - 60) < 1


def test_a_cancelled_job_continues_without_paying_again_for_finished_batches(tmp_path, capsys):
    """`qssm resume` of a cancelled job: finished batches come from the store (never submitted
    again), the ones cancelled in flight are submitted afresh, and the results are those of an
    uninterrupted run (submitting the spec again used to pay for everything twice)."""
    from qssm.backends.aer import AerBackend

    s = spec("aer", shots=300, n=4)
    ref = JobStore(tmp_path / "ref.sqlite")
    ref_id, _ = create_job(ref, s)
    run_job(ref, ref_id)
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, s)

    class CancelledMidway(AerBackend):
        results = 0

        def result(self, handle, batch):
            self.results += 1
            if self.results == 3:  # the user cancels while the worker collects
                cancel_job(store, job_id)
            return super().result(handle, batch)

    partial = run_job(store, job_id, backend=CancelledMidway(None, seed=1))
    assert partial["partial"] and store.job(job_id)["status"] == "cancelled"
    finished = {b["key"] for b in partial["finished_batches"]}
    assert 0 < len(finished) < ref.totals(ref_id)["batches"]
    acked = {r[0]: store.db.execute("SELECT acknowledged FROM batches WHERE job_id = ? AND key = ?",
                                    (job_id, r[0])).fetchone()[0] for r in store.batches(job_id)}
    assert main(["resume", job_id, "--store", str(store.path)]) == 0
    out, err = capsys.readouterr()
    assert f"continuing cancelled job {job_id}: {len(finished)} finished batches reused" in err
    assert store.job(job_id)["status"] == "done"
    assert_same_results(results_by_key(store, job_id), results_by_key(ref, ref_id))
    for key in finished:  # never paid again
        assert store.db.execute("SELECT acknowledged FROM batches WHERE job_id = ? AND key = ?",
                                (job_id, key)).fetchone()[0] == acked[key] == 1


def test_braket_qpu_without_credentials_is_refused_before_anything_is_stored(tmp_path, monkeypatch, capsys):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[data]\nn = 2\n[backend]\nname = "braket:iqm_garnet"\n'
                 "shots = 100\n[budget]\nmax_cost_usd = 100.0\n")
    store = tmp_path / "s.sqlite"
    JobStore(store).close()
    before = store.read_bytes()
    assert main(["submit", str(f), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "AWS_ACCESS_KEY_ID" in err
    assert store.read_bytes() == before and JobStore(store).jobs() == []
    assert not list(tmp_path.glob("*.log"))  # no worker was spawned


def test_connectivity_faults_are_retried_and_shown_in_the_status(tmp_path, capsys):
    """A dropped connection (botocore's EndpointConnectionError) is transient: retried with backoff,
    and `qssm status` says so beside the batch while it is under way (the outside test's hole #7)."""
    from botocore.exceptions import EndpointConnectionError

    from qssm.backends.aer import AerBackend
    from qssm.jobs.retry import RetryPolicy

    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("aer", shots=200, n=2))
    seen = []

    class Unreachable(AerBackend):
        faults = 0

        def status(self, handle):
            if self.faults < 2:
                self.faults += 1
                raise EndpointConnectionError(endpoint_url="https://braket.eu-north-1.amazonaws.com")
            return super().status(handle)

        def result(self, handle, batch):
            if not seen:  # while the first batch is still under way: what does the status say?
                main(["status", job_id, "--store", str(store.path)])
                seen.append(capsys.readouterr().out)
            return super().result(handle, batch)

    report = run_job(store, job_id, backend=Unreachable(None, seed=1),
                     policy=RetryPolicy(attempts=5, sleep=lambda s: None, rng=random.Random(0)))
    assert report["retries"] == 2 and store.job(job_id)["status"] == "done"
    assert "transient fault (EndpointConnectionError" in seen[0] and "retry 2 with backoff" in seen[0]
    main(["status", job_id, "--store", str(store.path)])
    assert "transient fault" not in capsys.readouterr().out  # a finished batch carries no note
