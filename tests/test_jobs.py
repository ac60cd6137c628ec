"""Durable jobs: kill/resume, concurrent resumes, fault injection, malformed input, credential hygiene."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fake_ibm  # noqa: E402

from qssm.app.durable import create_job, run_job  # noqa: E402
from qssm.backends.aer import AerBackend  # noqa: E402
from qssm.cli import main  # noqa: E402
from qssm.jobs.retry import PermanentError, RetryPolicy, TransientError, call_with_retries  # noqa: E402
from qssm.jobs.spec import parse_spec  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HAYSTACK = str(ROOT / "checkpoints" / "qmamba-haystack.safetensors")
DRIVER = str(Path(__file__).parent / "job_driver.py")
NO_SLEEP = RetryPolicy(attempts=12, sleep=lambda s: None, rng=random.Random(0))


def spec(backend="ibm:fake_fez", shots=1000, n=4, backend_seed=1, **extra):
    raw = {"model": {"checkpoint": HAYSTACK}, "data": {"n": n},
           "backend": {"name": backend, "shots": shots, "seed_simulator": backend_seed}}
    raw.update(extra)
    return parse_spec(raw, "test")


def arrays(result) -> list:
    """A stored result's arrays: values and standard errors, or each circuit's outcome histogram."""
    return ([result.values, result.stderr] if result.values is not None else []) + list(result.counts)


def results_by_key(store: JobStore, job_id: str) -> dict:
    return {row[0]: arrays(store.batch(job_id, row[0]).result) for row in store.batches(job_id)}


def assert_same_results(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key]):
            np.testing.assert_array_equal(x, y)


def two_qubit_template(labels: tuple[str, ...], name: str):
    """ry(x0) ry(x1) then cz: a small template for the IBM backend tests."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    from qssm.types import Template

    x = ParameterVector("x", 2)
    qc = QuantumCircuit(2)
    qc.ry(x[0], 0)
    qc.ry(x[1], 1)
    qc.cz(0, 1)
    return Template("t", qc, labels, name)


def driver(store_path, job_id, root) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, DRIVER, str(store_path), job_id, str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_and_resume(tmp_path, kills: int, seed: int):
    """Uninterrupted reference run, then the same job killed with SIGKILL `kills` times at random
    points within the run's span and resumed each time."""
    ref_store = JobStore(tmp_path / "ref.sqlite")
    ref_id, _ = create_job(ref_store, spec())
    start = time.perf_counter()
    ref = driver(ref_store.path, ref_id, tmp_path / "ref-ibm")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    span = time.perf_counter() - start

    store = JobStore(tmp_path / "killed.sqlite")
    job_id, _ = create_job(store, spec())
    rng = random.Random(seed)
    states = []
    for _ in range(kills):
        p = driver(store.path, job_id, tmp_path / "ibm")
        time.sleep(rng.uniform(0.2 * span, span))  # the first ~20% is interpreter start-up
        p.send_signal(signal.SIGKILL)
        p.wait()
        states.append(store.totals(job_id)["done"])
        job = store.job(job_id)
        assert job["status"] != "running" or store.stalled(job)  # `qssm status` says so, not "running"
    p = driver(store.path, job_id, tmp_path / "ibm")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert store.job(job_id)["status"] == "done"
    ref_results, results = results_by_key(ref_store, ref_id), results_by_key(store, job_id)
    assert_same_results(results, ref_results)
    assert store.job(job_id)["report"]["logit_error_mean"] == ref_store.job(ref_id)["report"]["logit_error_mean"]
    # the provider received exactly one submission per job the reference run recorded: one per round
    # trip's pack, not one per batch
    ref_jobs = set(stored_ids(ref_store, ref_id))
    assert fake_ibm.submissions(tmp_path / "ibm") == len(ref_jobs) == fake_ibm.submissions(tmp_path / "ref-ibm")
    assert set(stored_ids(store, job_id)) == {r["id"] for r in fake_ibm.records(tmp_path / "ibm")}
    assert len(ref_jobs) < len(ref_results)
    return states


def test_killed_job_resumes_without_resubmitting(tmp_path):
    states = kill_and_resume(tmp_path, kills=4, seed=1)
    assert states == sorted(states)  # progress is never lost


@pytest.mark.slow
def test_killed_twenty_times(tmp_path):
    kill_and_resume(tmp_path, kills=20, seed=2)


def test_two_processes_resuming_at_once_do_not_double_submit(tmp_path):
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec())
    a, b = driver(store.path, job_id, tmp_path / "ibm"), driver(store.path, job_id, tmp_path / "ibm")
    codes = sorted([a.wait(timeout=300), b.wait(timeout=300)])
    errs = a.stderr.read() + b.stderr.read()
    assert codes[0] == 0, errs
    assert codes[1] == 0 or "being run by process" in errs, errs
    assert store.job(job_id)["status"] == "done"
    assert store.totals(job_id)["batches"] == 8
    assert fake_ibm.submissions(tmp_path / "ibm") == len(set(stored_ids(store, job_id))) == 2  # a pack per round trip


def test_retrieval_by_id_from_another_process(tmp_path):
    """Batches submitted by one process and recorded as in flight are polled, not resubmitted."""
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec())
    assert driver(store.path, job_id, tmp_path / "ibm").wait(timeout=300) == 0
    before = results_by_key(store, job_id)
    store.db.execute("UPDATE batches SET status = 'submitted' WHERE job_id = ?", (job_id,))
    store.db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (job_id,))
    assert driver(store.path, job_id, tmp_path / "ibm").wait(timeout=300) == 0
    after = results_by_key(store, job_id)
    assert fake_ibm.submissions(tmp_path / "ibm") == len(set(stored_ids(store, job_id))) == 2  # nothing resubmitted
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


class Flaky(AerBackend):
    """aer with transient faults on a fraction of provider calls, and optionally a permanent one."""

    def __init__(self, rate=0.3, permanent_on=None, seed=0):
        super().__init__(None, seed=1)
        self.rng = random.Random(seed)
        self.rate = rate
        self.permanent_on = permanent_on
        self.calls = {"submit": 0, "status": 0, "result": 0}
        self.faults = 0
        self.submits = 0

    def _maybe_fail(self, what):
        self.calls[what] += 1
        if self.rng.random() < self.rate:
            self.faults += 1
            raise random.choice([TransientError("503 Service Unavailable"), TimeoutError("read timed out")])

    def submit(self, batch):
        self._maybe_fail("submit")
        self.submits += 1
        if self.permanent_on is not None and self.submits == self.permanent_on:
            raise PermanentError("ValidationException: circuit uses a gate the device does not support")
        return super().submit(batch)

    def status(self, handle):
        self._maybe_fail("status")
        return super().status(handle)

    def result(self, handle, batch=None):
        self._maybe_fail("result")
        return super().result(handle, batch)


def test_transient_faults_are_all_recovered(tmp_path):
    clean_store, flaky_store = JobStore(tmp_path / "a.sqlite"), JobStore(tmp_path / "b.sqlite")
    s = spec("aer", shots=500)
    clean_id, _ = create_job(clean_store, s)
    run_job(clean_store, clean_id, backend=Flaky(rate=0.0))
    flaky_id, _ = create_job(flaky_store, s)
    backend = Flaky(rate=0.3)
    report = run_job(flaky_store, flaky_id, backend=backend, policy=NO_SLEEP)
    assert backend.faults > 3 and report["retries"] == backend.faults
    assert flaky_store.job(flaky_id)["status"] == "done"
    assert_same_results(results_by_key(clean_store, clean_id), results_by_key(flaky_store, flaky_id))


def test_permanent_fault_fails_the_job_and_keeps_finished_batches(tmp_path, capsys):
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("aer", shots=500))
    with pytest.raises(Exception, match="device does not support"):
        run_job(store, job_id, backend=Flaky(rate=0.3, permanent_on=6), policy=NO_SLEEP)
    job = store.job(job_id)
    assert job["status"] == "failed" and "device does not support" in job["error"]
    done = store.totals(job_id)["done"]
    assert done == 5  # the five batches before the fault are kept
    # the user sees it as one line and a non-zero exit
    assert main(["results", job_id, "--store", str(store.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "device does not support" in err
    # resuming after the fault is fixed submits only what was not finished
    store.set_status(job_id, "running")
    healthy = Flaky(rate=0.0)
    run_job(store, job_id, backend=healthy, policy=NO_SLEEP)
    assert store.job(job_id)["status"] == "done" and healthy.submits == store.totals(job_id)["batches"] - done


def test_retry_policy_gives_up_on_permanent_faults_at_once():
    calls = []

    def fn():
        calls.append(1)
        raise ValueError("InvalidParameter: shots must be <= 1000")

    with pytest.raises(ValueError):
        call_with_retries(fn, NO_SLEEP)
    assert len(calls) == 1
    delays = [RetryPolicy(rng=random.Random(3)).delay(k) for k in range(10)]
    assert all(0 <= d <= 30 for d in delays) and max(delays[5:]) > max(delays[:2])


def test_deterministic_backend_reuses_identical_batches(tmp_path):
    store = JobStore(tmp_path / "s.sqlite")
    first, _ = create_job(store, spec("exact", shots=0))
    run_job(store, first)
    second, _ = create_job(store, spec("exact", shots=0))
    report = run_job(store, second)
    assert report["submitted_batches"] == 0 and report["reused_batches"] == store.totals(second)["batches"] > 0


def test_sampled_results_never_depend_on_what_else_the_store_ran(tmp_path):
    """Sampled results depend on the job's seed: a seed-2 job after a seed-1 job in the same store
    gets exactly what it gets in a fresh store, not the seed-1 samples (the outside test's hole)."""
    shared = JobStore(tmp_path / "shared.sqlite")
    for backend in ("exact", "aer"):
        one = spec(backend, shots=300, n=2, backend_seed=1)
        first, _ = create_job(shared, one)
        run_job(shared, first)
        second, _ = create_job(shared, spec(backend, shots=300, n=2, backend_seed=2))
        report = run_job(shared, second)
        assert report["reused_batches"] == 0
        fresh = JobStore(tmp_path / f"fresh-{backend}.sqlite")
        alone, _ = create_job(fresh, spec(backend, shots=300, n=2, backend_seed=2))
        run_job(fresh, alone)
        assert_same_results(results_by_key(shared, second), results_by_key(fresh, alone))
        assert fresh.job(alone)["report"]["logit_error_max"] == shared.job(second)["report"]["logit_error_max"]
        a, b = results_by_key(shared, first), results_by_key(shared, second)
        assert any(not np.array_equal(x, y) for k in a for x, y in zip(a[k], b.get(k, a[k])) ) or a.keys() != b.keys()


def test_budget_preflight_refuses_unless_yes(tmp_path, capsys):
    store = JobStore(tmp_path / "s.sqlite")
    s = spec("ibm:fake_fez", budget={"max_qpu_seconds": 1.0})
    from qssm.app.job import prepare
    from qssm.app.preflight import check_budget
    from qssm.app.preflight import estimate as price
    from qssm.errors import QssmError

    with prepare(s) as job:
        estimate = price(job)
    assert estimate["executions"] > 0 and estimate["batches"] >= 8 and estimate["round_trips"] == 2
    assert estimate["tasks"] == 2  # a job per round trip: its batches share their shots (one pack)
    real = dict(estimate, qpu_seconds=estimate["qpu_seconds_if_real"])  # as a real device would price it
    with pytest.raises(QssmError, match="budget.max_qpu_seconds"):
        check_budget(s, real)
    check_budget(s, real, yes=True)
    assert store.jobs() == []


# --- malformed specs and inputs: one line, exit 2, store unchanged ---------------------------------
MALFORMED = [
    ("", "missing [model]"),
    ("[model]\n", "missing [model]"),
    ('[model]\ncheckpoint = 3\n', "missing [model]"),
    ('[model]\ncheckpoint = "nope.safetensors"\n', "does not exist"),
    ('[model]\ncheckpoint = "{ck}"\nextra = 1\n', "unknown key"),
    ('[model]\ncheckpoint = "{ck}"\n[bogus]\n', "unknown section"),
    ('[model]\ncheckpoint = "{ck}"\n[data]\nn = 0\n', "data.n"),
    ('[model]\ncheckpoint = "{ck}"\n[data]\nn = -3\n', "data.n"),
    ('[model]\ncheckpoint = "{ck}"\n[data]\nn = "ten"\n', "data.n must be int"),
    ('[model]\ncheckpoint = "{ck}"\n[data]\nfoo = 1\n', "unknown key data.foo"),
    ('[model]\ncheckpoint = "{ck}"\ndata = 5\n', "unknown key"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = "nowhere"\n', "unknown backend"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = "aer:bogus"\n', "unknown backend"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = "aer:fake_nowhere"\n', "unknown IBM device snapshot"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = "ibm:fake_nowhere"\nshots = 100\n', "unknown IBM device snapshot"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = 7\n', "backend.name must be str"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nshots = -1\n', "backend.shots must be 0..100000000"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nshots = 1.5\n', "backend.shots must be int"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = "aer:fake_fez"\nshots = 10000000\n', "exceed"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = "ibm:fake_fez"\n', "shots > 0"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\noptimization_level = 7\n', "optimization_level"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\noptimization_level = "high"\n', "optimization_level must be int"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\ncutting = "sometimes"\n', "split.cutting must be one of"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\ntomography = "guess"\n', "split.tomography must be one of"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\ntomography = "tomograph"\n', "split.tomography must be one of pauli, shadows, fit"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\nsegment = "sometimes"\n', "split.segment must be int"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\nsegment = 2\nobp_steps = 1\n', "set one of them"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\nprep = "exactish"\n', "split.prep must be one of mottonen, shallow"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\nshadow_bases = 0\n', "split.shadow_bases must be 1..729"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\nsegment = -2\n', "split.segment must be 0..4096"),
    ('[model]\ncheckpoint = "{ck}"\n[split]\nmax_overhead = "lots"\n', "split.max_overhead must be float"),
    ('[model]\ncheckpoint = "{ck}"\n[mitigation]\nreadout = "yes"\n', "mitigation.readout must be bool"),
    ('[model]\ncheckpoint = "{ck}"\n[budget]\nmax_cost_usd = -5\n', "budget.max_cost_usd must be >= 0"),
    ('[model]\ncheckpoint = "{ck}"\n[budget]\nmax_cost_usd = "cheap"\n', "budget.max_cost_usd must be float"),
    ('[model]\ncheckpoint = "{ck}"\n[budget\n', "not valid TOML"),
    ('[model]\ncheckpoint = "{ck}"\n[data]\nn = 1\nn = 2\n', "not valid TOML"),
    ("\x00\x01binary", "not valid TOML"),
    ('[model]\ncheckpoint = "{bad_ck}"\n', "checkpoint"),
    ('[model]\ncheckpoint = "{ck}"\n[backend]\nname = "ibm:fake_fez"\nshots = 100\n[budget]\nmax_qpu_seconds = 0.001\n'
     '[data]\nn = 2\n', None),  # free in local mode: accepted (control case, below)
]


@pytest.mark.parametrize("body,needle", MALFORMED[:-1])
def test_malformed_specs_are_one_line_errors(tmp_path, capsys, body, needle):
    bad_ck = tmp_path / "bad.safetensors"
    bad_ck.write_bytes(b"\x00" * 64)
    f = tmp_path / "spec.toml"
    f.write_text(body.format(ck=HAYSTACK, bad_ck=bad_ck))
    store = tmp_path / "jobs.sqlite"
    JobStore(store).close()
    before = store.read_bytes()
    code = main(["submit", str(f), "--store", str(store), "--wait"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("qssm: error:"), err
    assert needle.lower() in err.lower(), err
    assert store.read_bytes() == before and JobStore(store).jobs() == []


@pytest.mark.parametrize("argv,needle", [
    (["results", "no-such-job"], "no job"),
    (["status", "no-such-job"], "no job"),
    (["cancel", "no-such-job"], "no job"),
    (["resume", "no-such-job"], "no job"),
    (["submit", "missing.toml"], "does not exist"),
])
def test_bad_job_ids_and_paths(tmp_path, capsys, argv, needle):
    assert main(argv + ["--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_missing_ibm_credentials_is_one_line(tmp_path, monkeypatch, capsys):
    for var in ("QISKIT_IBM_TOKEN", "IBM_QUANTUM_TOKEN", "QISKIT_IBM_INSTANCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved account
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[backend]\nname = "ibm:ibm_kingston"\nshots = 100\n')
    assert main(["submit", str(f), "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "QISKIT_IBM_TOKEN" in err


def test_cli_submit_wait_status_results_cancel(tmp_path, capsys):
    f = tmp_path / "spec.toml"
    f.write_text(MALFORMED[-1][0].format(ck=HAYSTACK))
    store = str(tmp_path / "s.sqlite")
    assert main(["submit", str(f), "--store", store, "--wait", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    job_id = report["job_id"]
    assert report["accuracy"] >= 0.5 and report["submitted_batches"] == 8
    assert main(["status", job_id, "--store", store, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "done" and status["done"] == status["batches"] == 8
    assert main(["results", job_id, "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["logit_error_mean"] == report["logit_error_mean"]
    assert main(["cancel", job_id, "--store", store]) == 2  # already done
    assert "already done" in capsys.readouterr().err


def test_submit_takes_n_as_run_and_estimate_do(tmp_path, capsys):
    """`qssm submit SPEC --n N` stores and runs the first N examples (the spec says 200), priced at N."""
    store = str(tmp_path / "s.sqlite")
    assert main(["submit", str(ROOT / "examples" / "exact.toml"), "--n", "3", "--store", store, "--wait", "--json"]) == 0, \
        capsys.readouterr().err
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    job = JobStore(store).job(report["job_id"])
    assert job["spec"]["data"]["n"] == 3 and job["estimate"]["examples"] == 3 and report["examples"] == 3


def test_submit_returns_at_once_and_a_background_worker_finishes(tmp_path):
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[data]\nn = 2\n[backend]\nname = "aer"\nshots = 200\n')
    store = tmp_path / "s.sqlite"
    p = subprocess.run([sys.executable, "-m", "qssm.cli", "submit", str(f), "--store", str(store)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    job_id = p.stdout.split()[0]
    s = JobStore(store)
    deadline = time.time() + 120
    while s.job(job_id)["status"] not in ("done", "failed") and time.time() < deadline:
        time.sleep(0.5)
    assert s.job(job_id)["status"] == "done", Path(store).with_name(f"{job_id}.log").read_text()


def test_planted_token_never_reaches_store_logs_or_reports(tmp_path, monkeypatch):
    token = "PLANTEDtoken-7f3a9c2e41b8d6f0a5c3e9b1"
    aws = "PLANTEDawsSecret/9f8e7d6c5b4a3f2e1d0c9b8a7"
    monkeypatch.setenv("QISKIT_IBM_TOKEN", token)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws)
    env = dict(os.environ, QISKIT_IBM_TOKEN=token, AWS_SECRET_ACCESS_KEY=aws)
    f = tmp_path / "spec.toml"
    f.write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[data]\nn = 2\n[backend]\nname = "aer"\nshots = 200\n')
    store = tmp_path / "s.sqlite"
    p = subprocess.run([sys.executable, "-m", "qssm.cli", "submit", str(f), "--store", str(store), "--wait"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    job_id = p.stdout.split()[1]
    r = subprocess.run([sys.executable, "-m", "qssm.cli", "report", job_id, "--store", str(store), "--out",
                        str(tmp_path / "rep")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    # a provider message carrying the token (as some SDK errors echo headers) is redacted too
    s = JobStore(store)
    s.set_status(job_id, "failed", error=f"401 Unauthorized: token {token} rejected")
    s.close()
    written = [p.stdout, p.stderr, r.stdout, r.stderr]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            written.append(path.read_bytes().decode("latin-1"))
    for text in written:
        assert token not in text and aws not in text
    assert (tmp_path / "rep" / "report.html").exists()


def test_braket_qpu_job_retrieved_by_task_arn_from_another_process(tmp_path):
    """The Braket QPU path (AwsDevice, AwsQuantumTask, program sets) behind a fake task transport:
    a second process resumes the job and collects every task by its ARN, submitting nothing."""
    from fake_aws import FakeAwsSession

    from qssm.backends.braket import BraketBackend

    root = tmp_path / "aws"
    root.mkdir()
    s = parse_spec({"model": {"checkpoint": str(ROOT / "checkpoints" / "qlam-digits.safetensors")},
                    "data": {"n": 1}, "backend": {"name": "braket:iqm_garnet", "shots": 200}}, "test")
    store = JobStore(tmp_path / "s.sqlite")
    job_id, estimate = create_job(store, s, backend=BraketBackend("braket:iqm_garnet", aws_session=FakeAwsSession(root, "eu-north-1")))
    assert estimate["usd"] > 0 and estimate["tasks"] >= 1
    p = subprocess.run([sys.executable, DRIVER, str(store.path), job_id, str(root), "braket:iqm_garnet"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    tasks = len(list(root.glob("*.meta.json")))
    first = results_by_key(store, job_id)
    assert tasks >= len(first) > 0
    handles = [json.loads(row[6]) for row in store.batches(job_id)]
    assert all(h["job_ids"][0].startswith("arn:aws:braket:") for h in handles)
    store.db.execute("UPDATE batches SET status = 'submitted' WHERE job_id = ?", (job_id,))
    store.db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (job_id,))
    p = subprocess.run([sys.executable, DRIVER, str(store.path), job_id, str(root), "braket:iqm_garnet"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert len(list(root.glob("*.meta.json"))) == tasks  # nothing resubmitted
    again = results_by_key(store, job_id)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])


# --- chaos: providers that throttle, drop responses and lose the process mid-loop -----------------
def stored_ids(store: JobStore, job_id: str) -> list[str]:
    """The provider ids the store recorded, each once (a pack's jobs are on each of its members)."""
    return list(dict.fromkeys(i for row in store.batches(job_id) if row[6] for i in json.loads(row[6])["job_ids"]))


def chaos(tmp_path, spec_, backend, faults: list[dict], provider_ids, driver_args=(), env=None):
    """An undisturbed run, then the same job through `faults`: the first run in a driver process that
    the fake provider SIGKILLs mid-loop (faults from the environment), the others in this process, a
    clean run last. The provider must hold exactly one job/task per distinct identity, every one
    recorded in the store (no orphans), and the results must be bit-identical.
    backend(root, faults) builds the backend over the fake."""
    ref_store = JobStore(tmp_path / "ref.sqlite")
    ref_id, _ = create_job(ref_store, spec_, backend=backend(tmp_path / "ref", {}))
    run_job(ref_store, ref_id, backend=backend(tmp_path / "ref", {}), policy=NO_SLEEP)
    store = JobStore(tmp_path / "chaos.sqlite")
    job_id, _ = create_job(store, spec_, backend=backend(tmp_path / "chaos", {}))
    killed = subprocess.run([sys.executable, DRIVER, str(store.path), job_id, str(tmp_path / "chaos"), *driver_args],
                            capture_output=True, text=True, timeout=300, env={**os.environ, **env(faults[0])})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert 0 < len(provider_ids(tmp_path / "chaos")) and store.totals(job_id)["done"] < ref_store.totals(ref_id)["done"]
    for f in faults[1:] + [{}]:
        run_job(store, job_id, backend=backend(tmp_path / "chaos", f), policy=NO_SLEEP)
    assert store.job(job_id)["status"] == "done"
    assert_same_results(results_by_key(store, job_id), results_by_key(ref_store, ref_id))
    created, recorded = provider_ids(tmp_path / "chaos"), stored_ids(store, job_id)
    assert len(created) == len(recorded) == len(stored_ids(ref_store, ref_id))  # none twice
    assert set(created) == set(recorded)  # no orphans
    return created


def test_chaos_ibm_nothing_billed_twice(tmp_path, monkeypatch):
    """IBM: a 429 on a create, a create whose response is lost (the job exists, the client got a read
    timeout), a SIGKILL between a create and the store's write, mid-batch (chunks of 2 bindings)."""
    import qssm.backends.ibm as ibm

    monkeypatch.setattr(ibm, "MAX_EXECUTIONS_PER_JOB", 2 * 1000)  # several jobs per batch
    monkeypatch.setattr(fake_ibm.FakeRuntimeService, "script", {})

    def backend(root, faults):
        fake_ibm.install(root)
        fake_ibm.FakeRuntimeService.script, fake_ibm.FakeRuntimeService.creates = faults, 0
        return ibm.IBMBackend("fake_fez", seed=1)

    faults = [{"throttle": [2], "drop": [4], "kill": [7]}, {"drop": [1], "throttle": [3]}]
    env = lambda f: {"QSSM_FAKE_IBM": json.dumps(f), "QSSM_TEST_MAX_EXEC": str(2 * 1000)}  # noqa: E731
    created = chaos(tmp_path, spec(n=1), backend, faults, lambda root: [r["id"] for r in fake_ibm.records(root)],
                    env=env)
    identities = [r["tags"][-1] for r in fake_ibm.records(tmp_path / "chaos")]  # batch, job, identity
    assert len(set(identities)) == len(identities) == len(created) > 8


def test_chaos_braket_nothing_billed_twice(tmp_path):
    """Braket: a ThrottlingException and a 500 on creates, a create whose response is lost, a SIGKILL
    mid-loop, with program sets cut at 3 executables (several tasks per batch)."""
    from fake_aws import FakeAwsSession, tasks

    from qssm.backends.braket import BraketBackend

    def backend(root, faults):
        root.mkdir(exist_ok=True)
        return BraketBackend("braket:iqm_garnet", seed=1,
                             aws_session=FakeAwsSession(root, "eu-north-1", faults={"max_executables": 3, **faults}))

    s = spec("braket:iqm_garnet", shots=200, n=1)
    faults = [{"throttle": [2], "drop": [3], "kill": [7]}, {"fail": [1], "drop": [2]}]
    env = lambda f: {"QSSM_FAKE_AWS": json.dumps({"max_executables": 3, **f})}  # noqa: E731
    created = chaos(tmp_path, s, backend, faults, lambda root: [t["quantumTaskArn"] for t in tasks(root)],
                    driver_args=("braket:iqm_garnet",), env=env)
    tokens = [t["clientToken"] for t in tasks(tmp_path / "chaos")]
    assert len(set(tokens)) == len(tokens) == len(created) > 8


def test_ibm_jobs_split_at_the_execution_limit(monkeypatch):
    """A batch over IBM's 10M executions per Sampler job is split over several jobs and stitched back."""
    from prepared import Prepared

    import qssm.backends.ibm as ibm

    t = two_qubit_template(("IZ", "ZI", "XX"), "split-test")
    rows = np.random.default_rng(0).uniform(-2, 2, (7, 2))
    backend = ibm.IBMBackend("fake_fez", seed=3)
    p = Prepared(t, backend, rows, 400)
    whole = p.run()
    monkeypatch.setattr(ibm, "MAX_EXECUTIONS_PER_JOB", 3 * 400)  # 3 bindings per job
    jobs = backend.pubs(p.batch)
    assert len(jobs) > 1 and all(sum(len(pub[1]) for pub in job) <= 3 for job in jobs)
    handle = backend.submit(p.batch)
    assert len(handle.job_ids) == len(jobs)
    split = p.values(backend.result(handle, p.batch))
    assert split.values.shape == whole.values.shape == (7, 3)
    assert (np.abs(split.values - whole.values) < 5 * np.hypot(split.stderr, whole.stderr) + 1e-9).all()


def test_ibm_resilience_level_uses_the_runtime_estimator():
    """[mitigation] resilience_level routes batches through the runtime Estimator (server-side
    mitigation on a QPU; local testing mode runs it unmitigated): it must agree with the Sampler
    path within their standard errors, and the spec option reaches the backend."""
    from prepared import Prepared

    import qssm.backends.ibm as ibm
    from qssm.app.job import backend_for
    from qssm.pipeline.build import build_pipeline

    t = two_qubit_template(("IZ", "ZI", "XX"), "est-test")
    rows = np.random.default_rng(0).uniform(-2, 2, (5, 2))
    s = spec(mitigation={"resilience_level": 1})
    backend = build_pipeline(s, backend_for(s)).backend
    assert isinstance(backend, ibm.IBMBackend) and backend.resilience_level == 1
    assert backend.capabilities.native_estimator
    p = Prepared(t, backend, rows, 4000)
    assert not p.batch.sampled  # the measure stage left the observables to the runtime Estimator
    handle = backend.submit(p.batch)
    assert handle.meta["primitive"] == "estimator"
    est = backend.result(handle, p.batch)
    assert est.meta["primitive"] == "estimator" and est.stderr.max() > 0
    backend.runtime_options["resilience_level"] = -1
    samp = Prepared(t, backend, rows, 4000).run()
    assert (np.abs(est.values - samp.values) < 5 * np.hypot(est.stderr, samp.stderr) + 1e-9).all()


def test_ibm_qpu_path_opens_a_session_for_recurrences_and_a_batch_otherwise():
    """The non-local code path (service.backend -> Session/Batch -> SamplerV2 -> job ids), with a
    service whose backend is a device snapshot: the runtime runs it in local mode, nothing else faked."""
    from prepared import Prepared
    from qiskit_ibm_runtime import Batch, Session

    from qssm.backends.fake_devices import fake_backend
    from qssm.backends.ibm import IBMBackend

    class Service:
        def backend(self, name):
            assert name == "ibm_manila"
            return fake_backend("fake_manila")  # 5 qubits: the full-device noise model stays small

    t = two_qubit_template(("IZ", "ZI"), "mode-test")
    rows = np.array([[0.3, -1.2], [2.0, 0.5]])
    for shape, mode in (("session", Session), ("batch", Batch)):
        backend = IBMBackend("ibm_manila", seed=1, service=Service())
        assert not backend.local and backend.name == "ibm:ibm_manila" and shape in backend.capabilities.modes
        backend.set_mode(shape)
        p = Prepared(t, backend, rows, 2000)
        result = p.run()
        assert isinstance(backend._mode, mode)
        ideal = np.array([[np.cos(r[0]), np.cos(r[1])] for r in p.planned.parameters])
        assert result.values.shape == (2, 2) and np.abs(result.values - ideal).max() < 0.25  # noisy device
        assert len(result.job_ids) == 1
        backend.close()


# --- IBM failure paths on a fake service that fails as IBM's does ---------------------------------
@pytest.fixture
def ibm_qpu(tmp_path, monkeypatch):
    """(make_backend(script), store, job_id): an `ibm:ibm_manila` QPU backend whose service is the
    fake (jobs persisted under tmp_path, states and usage as scripted), and a job in a store."""
    from qssm.backends.ibm import IBMBackend

    service = fake_ibm.install(tmp_path / "ibm")
    monkeypatch.setattr(service, "script", {})
    monkeypatch.setattr(service, "creates", 0)

    def make(script=None):
        service.script = script or {}
        return IBMBackend("ibm_manila", seed=1, service=service())

    store = JobStore(tmp_path / "s.sqlite")
    return make, store, store.create_job({}, "ibm:ibm_manila")


def _manila_batch(backend, shots=2000, n=3):
    from prepared import Prepared

    rows = np.random.default_rng(4).uniform(-2, 2, (n, 2))
    return Prepared(two_qubit_template(("IZ", "ZI"), f"fail-test-{shots}-{n}"), backend, rows, shots)


def test_ibm_usage_failure_and_pending_keep_the_result_and_fill_the_cost_later(ibm_qpu):
    """usage is a network call after payment: a failing call, then a pending usage (job.usage() says
    0 then), leave the result stored with its usage pending; the cost is filled in once IBM has it."""
    from qssm.backends.ibm import USD_PER_QPU_SECOND
    from qssm.jobs.dispatch import StoreDispatcher

    make, store, job_id = ibm_qpu
    backend = make({"usage": {"fail": 12, "pending": 2, "seconds": 3.5}})  # NO_SLEEP tries 12 times
    p = _manila_batch(backend)
    dispatch = StoreDispatcher(store, job_id, backend, policy=NO_SLEEP, poll_seconds=0.01)
    [result] = dispatch([p.batch])
    rec = store.batch(job_id, p.batch.key)
    assert rec.status == "done" and rec.result.meta["usage"] == "pending" and store.totals(job_id)["usage_pending"] == 1
    np.testing.assert_array_equal(rec.result.counts[0], result.counts[0])
    assert store.totals(job_id)["cost_usd"] == 0.0  # not a final 0: pending
    # the 12 failures were spent right after the result, the first pending answer at the round trip's end
    assert dispatch.settle_usage() == 1 and store.totals(job_id)["usage_pending"] == 1  # still pending
    store.set_status(job_id, "done", report={"logit_error_mean": 0.1})
    report = run_job(store, job_id, backend=backend, policy=NO_SLEEP)  # `qssm resume` of a finished job
    assert report["store_usage_pending"] == 0 and report["logit_error_mean"] == 0.1  # settled: 3.5 QPU s
    rec = store.batch(job_id, p.batch.key)
    assert rec.result.meta["usage"] == "final" and rec.result.meta["qpu_seconds"] == 3.5
    assert store.totals(job_id) == dict(store.totals(job_id), usage_pending=0,
                                        cost_usd=pytest.approx(3.5 * USD_PER_QPU_SECOND))


def test_ibm_round_trip_runs_as_one_job_and_its_usage_is_counted_once(ibm_qpu):
    """A round trip's sampled batches with the same shots go to IBM as one Sampler job (one pack),
    another shot count as another: each batch gets its own histograms, every member records its
    pack's job, and a job's QPU time is split over its members by executions x shots, so the totals
    count it once."""
    from qssm.backends.ibm import USD_PER_QPU_SECOND
    from qssm.jobs.dispatch import StoreDispatcher

    make, store, job_id = ibm_qpu
    backend = make({"usage": {"seconds": 4.0}})
    a, b, c = (_manila_batch(backend, shots=s, n=n) for s, n in ((2000, 3), (2000, 2), (500, 2)))
    reads = []
    usage = backend.usage
    backend.usage = lambda handle: reads.append(tuple(handle.job_ids)) or usage(handle)
    dispatch = StoreDispatcher(store, job_id, backend, policy=NO_SLEEP, poll_seconds=0.01)
    results = dispatch([a.batch, c.batch, b.batch])
    assert fake_ibm.submissions(fake_ibm.FakeRuntimeService.root) == 2
    assert len(reads) == len(set(reads)) == 2  # a job's usage is read once, not once per batch in it
    for p, r in zip((a, c, b), results):
        assert len(r.counts) == len(p.batch.circuits) and all(h.shape[0] == len(p.batch.parameters) for h in r.counts)
        assert all((h.sum(axis=1) == p.batch.shots).all() for h in r.counts)
    recs = [store.batch(job_id, p.batch.key) for p in (a, b)]
    assert recs[0].handle.job_ids == recs[1].handle.job_ids and len(recs[0].handle.job_ids) == 1
    seconds = [rec.result.meta["qpu_seconds"] for rec in recs]
    weight = [p.batch.executions * p.batch.shots for p in (a, b)]
    assert sum(seconds) == pytest.approx(4.0) and seconds[0] / seconds[1] == pytest.approx(weight[0] / weight[1])
    assert store.batch(job_id, c.batch.key).result.meta["qpu_seconds"] == 4.0  # alone in its job
    assert store.totals(job_id)["cost_usd"] == pytest.approx(2 * 4.0 * USD_PER_QPU_SECOND)
    dispatch([a.batch, c.batch, b.batch])
    assert fake_ibm.submissions(fake_ibm.FakeRuntimeService.root) == 2  # stored: not again


def test_ibm_scripted_job_states(ibm_qpu):
    """queued -> running -> done is polled to the result; ERROR and CANCELLED fail the batch with the
    provider's message; a state outside the map is shown by `qssm status` and times out."""
    from qssm.jobs.dispatch import JobFailed, StoreDispatcher

    make, store, job_id = ibm_qpu
    backend = make({"states": ["QUEUED", "QUEUED", "RUNNING", "DONE"]})
    p = _manila_batch(backend, n=2)
    dispatch = StoreDispatcher(store, job_id, backend, policy=NO_SLEEP, poll_seconds=0.001)
    [r] = dispatch([p.batch])
    assert r.counts[0].sum(axis=1).tolist() == [2000, 2000]
    for states, needle in ((["RUNNING", "ERROR"], "Error code 1517"), (["CANCELLED"], "cancelled"),
                           (["QUEUED", "PAUSED"], "'PAUSED', unknown to qssm")):
        backend = make({"states": states})
        p = _manila_batch(backend, n=2, shots=1000 + len(states))  # a new batch each time
        dispatch = StoreDispatcher(store, job_id, backend, policy=NO_SLEEP, poll_seconds=0.001,
                                   unrecognized_seconds=0.05)
        with pytest.raises(JobFailed, match=needle):
            dispatch([p.batch])
        assert store.batch(job_id, p.batch.key).status == "failed"


def test_ibm_unrecognized_state_is_shown_in_status(ibm_qpu, capsys):
    """A state outside the map is not polled forever as "running": `qssm status` shows it while it
    lasts, then the batch fails with it."""
    import threading

    from qssm.jobs.dispatch import JobFailed, StoreDispatcher

    make, store, job_id = ibm_qpu
    backend = make({"states": ["PAUSED"]})
    p = _manila_batch(backend, n=1)
    raised = []

    def work():  # its own store connection: SQLite connections stay in their thread
        try:
            StoreDispatcher(JobStore(store.path), job_id, backend, policy=NO_SLEEP, poll_seconds=0.01,
                            unrecognized_seconds=5)([p.batch])
        except JobFailed as e:
            raised.append(e)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline and not getattr(store.batch(job_id, p.batch.key), "error", None):
        time.sleep(0.05)
    assert main(["status", job_id, "--store", str(store.path)]) == 0
    assert "provider state 'PAUSED' (unknown to qssm)" in capsys.readouterr().out
    worker.join(timeout=60)
    assert raised and "unknown to qssm" in store.batch(job_id, p.batch.key).error


def test_ibm_find_units_per_chunk_skips_failed_jobs(ibm_qpu, monkeypatch):
    """A crash after 2 of 3 chunk jobs, one of which then failed: resuming creates the missing chunk
    and the failed one, and adopts the live one; a job of another qssm job is never adopted."""
    import qssm.backends.ibm as ibm
    from qssm.jobs.dispatch import StoreDispatcher

    make, store, job_id = ibm_qpu
    monkeypatch.setattr(ibm, "MAX_EXECUTIONS_PER_JOB", 2 * 1000)
    backend = make()
    p = _manila_batch(backend, shots=1000, n=6)
    assert backend.units(p.batch) == 3
    store.claim(job_id, p.batch.key, 1, 0)  # the crashed process had claimed it
    first = backend.submit_unit(p.batch, 0, job_id)
    failed = backend.submit_unit(p.batch, 1, job_id)
    backend.submit_unit(p.batch, 2, "another-job")
    path = fake_ibm.FakeRuntimeService.root / "jobs" / f"{failed}.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), states=["ERROR"])))
    assert backend.find_units(p.batch, job_id) == {0: first}
    before = fake_ibm.submissions(fake_ibm.FakeRuntimeService.root)
    dispatch = StoreDispatcher(store, job_id, make(), policy=NO_SLEEP, poll_seconds=0.01)
    [r] = dispatch([p.batch])
    ids = list(store.batch(job_id, p.batch.key).result.job_ids)
    assert ids[0] == first and failed not in ids and len(set(ids)) == 3
    assert fake_ibm.submissions(fake_ibm.FakeRuntimeService.root) == before + 2
    assert dispatch.tracker.totals["provider_submissions"] == 2


def test_twirling_asks_for_exactly_the_shots(ibm_qpu):
    """The server's "auto" randomizations run 1000 shots as 16 x 64 = 1024 (the fake rounds as the
    server does): qssm sets randomizations x shots per randomization = shots, so 1000 come back."""
    from qssm.backends.ibm import twirl_split

    assert twirl_split(1000) == (20, 50) and twirl_split(4096) == (32, 128)  # "auto" would be 16 and 32
    for shots in (1, 7, 97, 1000, 1024, 5000, 99991):
        n, per = twirl_split(shots)
        assert n * per == shots
    make, store, job_id = ibm_qpu
    backend = make()
    backend.configure(twirling=True)
    p = _manila_batch(backend, shots=1000, n=2)
    r = backend.result(backend.submit(p.batch), p.batch)
    assert r.shots == 1000 and (r.counts[0].sum(axis=1) == 1000).all()


def test_values_are_normalised_by_the_shots_counted():
    """A provider that returned 1024 shots for 1000 asked: values and standard errors use 1024."""
    from qiskit.quantum_info import SparsePauliOp

    from qssm.pipeline.measure import expectations, measurement_groups

    obs = [SparsePauliOp("IZ"), SparsePauliOp("ZZ")]
    groups = measurement_groups(obs)
    counts = [np.array([[512, 256, 128, 128], [1024, 0, 0, 0]])]  # 1024 counted per row
    values, stderr = expectations(counts, obs, groups, shots=1000)
    p = counts[0] / 1024
    iz = p[:, 0] - p[:, 1] + p[:, 2] - p[:, 3]
    zz = p[:, 0] - p[:, 1] - p[:, 2] + p[:, 3]
    np.testing.assert_allclose(values, np.stack([iz, zz], axis=1), atol=1e-12)
    np.testing.assert_allclose(stderr, np.sqrt((1 - np.stack([iz, zz], axis=1) ** 2) / 1024), atol=1e-12)


def test_auto_mode_by_plan_and_idle_billing(ibm_qpu):
    """mode = "auto": a Batch on the Open plan (no Sessions there) or where a Session's idle billing
    would outweigh the QPU time; a Session for a recurrence otherwise. The estimate names the mode and
    prices the idle time."""
    from qssm.backends.ibm import SESSION_GAP_S

    make, _, _ = ibm_qpu
    open_plan = make({"plan": "open"})
    open_plan.set_mode("auto", round_trips=3, qpu_seconds=1000.0)
    assert open_plan.mode == "batch"
    premium = make({"plan": "premium"})
    premium.set_mode("auto", round_trips=3, qpu_seconds=1000.0)
    assert premium.mode == "session"
    premium.set_mode("auto", round_trips=3, qpu_seconds=10.0)  # 20 s idle for 10 s of QPU time
    assert premium.mode == "batch"
    premium.set_mode("auto", round_trips=1)
    assert premium.mode == "batch"
    batch = _manila_batch(premium, n=2).batch
    premium.set_mode("session", round_trips=3)
    session = premium.estimate_cost([[batch]])
    premium.set_mode("batch", round_trips=3)
    plain = premium.estimate_cost([[batch]])
    assert session["mode"] == "session" and plain["mode"] == "batch"
    assert session["session_idle_seconds"] == 2 * SESSION_GAP_S and session["usd"] > plain["usd"]


# --- leases: a heartbeat with expiry, stalled jobs, --force ---------------------------------------
def _leased_elsewhere(store, job_id, owner, age=0.0):
    """The job as a crashed or live runner left it: running, owned by `owner`, heartbeat `age` s old."""
    store.db.execute("UPDATE jobs SET status = 'running', owner = ?, heartbeat = ? WHERE id = ?",
                     (owner, time.time() - age, job_id))


def test_a_reused_pid_does_not_hold_a_job_forever(tmp_path, capsys):
    """PID 1 is alive on this host, as a dead runner's PID is once another process reuses it: its
    lease holds while the heartbeat is fresh, and is free once the heartbeat has expired."""
    import socket

    from qssm.jobs.store import LEASE_SECONDS

    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("exact", shots=0, n=2))
    path = str(store.path)
    _leased_elsewhere(store, job_id, f"{socket.gethostname()}:1")
    assert main(["resume", job_id, "--store", path, "--quiet"]) == 2
    assert "being run by process" in capsys.readouterr().err
    _leased_elsewhere(store, job_id, f"{socket.gethostname()}:1", age=LEASE_SECONDS + 1)
    assert main(["status", job_id, "--store", path]) == 0
    out = capsys.readouterr().out
    assert "stalled" in out and f"qssm resume {job_id}" in out
    assert main(["status", "--store", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["stalled"] is True
    assert main(["resume", job_id, "--store", path, "--quiet"]) == 0
    assert store.job(job_id)["status"] == "done" and not store.stalled(store.job(job_id))


def test_resume_force_takes_over_a_live_looking_lease(tmp_path, capsys):
    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("exact", shots=0, n=2))
    _leased_elsewhere(store, job_id, "another-host:4242")
    assert main(["resume", job_id, "--store", str(store.path), "--quiet"]) == 2
    capsys.readouterr()
    assert main(["resume", job_id, "--store", str(store.path), "--quiet", "--force"]) == 0
    assert store.job(job_id)["status"] == "done"


def test_a_runner_that_was_taken_over_stops():
    import tempfile

    from qssm.errors import QssmError

    with tempfile.TemporaryDirectory() as d:
        store = JobStore(Path(d) / "s.sqlite")
        job_id = store.create_job({}, "exact")
        assert store.acquire(job_id)
        store.heartbeat(job_id)
        assert JobStore(store.path).acquire(job_id, owner="another-host:1", force=True)
        with pytest.raises(QssmError, match="taken over by another-host:1"):
            store.heartbeat(job_id)
        store.release(job_id)  # not ours any more: a no-op
        assert store.job(job_id)["owner"] == "another-host:1"
        store.close()


def test_a_long_batch_keeps_its_lease(tmp_path, monkeypatch):
    """A batch longer than the lease: the daemon heartbeat keeps the job from being taken over."""
    import threading

    import qssm.jobs.store as store_module
    from qssm.backends.exact import ExactBackend

    monkeypatch.setattr(store_module, "LEASE_SECONDS", 1.0)
    started = threading.Event()

    class Slow(ExactBackend):
        def result(self, handle, batch=None):
            if not started.is_set():
                started.set()
                time.sleep(3.0)
            return super().result(handle, batch)

    store = JobStore(tmp_path / "s.sqlite")
    job_id, _ = create_job(store, spec("exact", shots=0, n=2))
    errors = []
    runner = threading.Thread(target=lambda: errors.append(run_job(JobStore(store.path), job_id, backend=Slow(seed=1))))
    runner.start()
    assert started.wait(60)
    time.sleep(2.0)  # twice the lease, inside one batch
    assert time.time() - store.job(job_id)["heartbeat"] < store_module.LEASE_SECONDS
    assert not JobStore(store.path).acquire(job_id, owner="another-host:1")
    runner.join(60)
    assert store.job(job_id)["status"] == "done" and store.job(job_id)["owner"] is None


def test_heartbeat_thread_renews_and_stops(tmp_path, monkeypatch):
    import qssm.jobs.store as store_module

    monkeypatch.setattr(store_module, "LEASE_SECONDS", 0.6)
    store = JobStore(tmp_path / "s.sqlite")
    job_id = store.create_job({}, "exact")
    assert store.acquire(job_id)
    first = store.job(job_id)["heartbeat"]
    time.sleep(0.5)
    assert store.job(job_id)["heartbeat"] > first and store.owner(job_id) is not None
    store.release(job_id)
    last = store.job(job_id)["heartbeat"]
    time.sleep(0.4)
    assert store.job(job_id)["heartbeat"] == last and store.owner(job_id) is None


# --- the store marks itself; a store from before the mark is adopted only on request -------------
def test_new_stores_are_marked_and_old_ones_adopted_by_command(tmp_path, capsys):
    import sqlite3

    from qssm.jobs.store import APPLICATION_ID, SCHEMA, SCHEMA_VERSION

    store = JobStore(tmp_path / "new.sqlite")
    assert store.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)  # as qssm wrote stores before the marker (and the acknowledged column)
    old.executescript(SCHEMA.replace("acknowledged INTEGER DEFAULT 0,", ""))
    old.execute("INSERT INTO jobs (id, created, updated, status, backend, spec) VALUES ('j1', 1.0, 1.0, 'done', "
                "'exact', '{}')")
    old.execute("INSERT INTO batches (job_id, key, wave, position, status, handle, attempts) VALUES "
                "('j1', 'k', 1, 0, 'done', '{\"backend\": \"exact\", \"job_ids\": [\"x\"], \"meta\": {}}', 2)")
    old.commit()
    old.close()
    before = path.read_bytes()
    # a read refuses it, naming the command, and writes nothing (it used to mark it, then refuse)
    assert main(["status", "--store", str(path)]) == 2
    assert "qssm store adopt" in capsys.readouterr().err and path.read_bytes() == before
    assert main(["store", "adopt", str(path)]) == 0 and "adopted" in capsys.readouterr().out
    adopted = JobStore(path, create=False)
    assert adopted.job("j1")["status"] == "done"
    assert adopted.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert adopted.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert adopted.totals("j1")["submissions"] == 1 and adopted.totals("j1")["claims"] == 2
    assert main(["store", "adopt", str(path)]) == 0 and "already a qssm store" in capsys.readouterr().out


def test_a_version_1_store_is_read_without_writing_and_upgraded_by_the_first_write(tmp_path, capsys):
    import sqlite3

    from qssm.jobs.store import SCHEMA_VERSION

    path = tmp_path / "v1.sqlite"
    store = JobStore(path)
    job_id, _ = create_job(store, spec("exact", shots=0, n=2))
    run_job(store, job_id)
    store.close()
    db = sqlite3.connect(path)  # back to version 1: no acknowledged column
    db.execute("ALTER TABLE batches DROP COLUMN acknowledged")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    before = path.read_bytes()
    assert main(["status", job_id, "--store", str(path)]) == 0
    assert "acknowledged by the provider" in capsys.readouterr().out and path.read_bytes() == before
    store = JobStore(path)
    batches = store.totals(job_id)["batches"]
    assert store.totals(job_id)["submissions"] == batches  # a version-1 row counts its provider ids once
    create_job(store, spec("exact", shots=0, n=2))  # the first write upgrades the schema
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.totals(job_id)["submissions"] == batches


# --- transient network faults, with the SDKs' own exception classes ------------------------------
def _network_faults():
    import http.client
    import socket

    import botocore.exceptions as boto
    import requests.exceptions as req
    import urllib3.exceptions as u3

    url = "https://braket.us-east-1.amazonaws.com"
    wrapped = RuntimeError("IBM Cloud API request failed")
    wrapped.__cause__ = req.ConnectionError("Max retries exceeded with url: /jobs")
    return [boto.EndpointConnectionError(endpoint_url=url), boto.ConnectTimeoutError(endpoint_url=url),
            boto.ReadTimeoutError(endpoint_url=url), boto.ConnectionClosedError(endpoint_url=url),
            req.ConnectionError("Connection refused"), req.ReadTimeout("read"), req.ChunkedEncodingError("eof"),
            u3.NewConnectionError(None, "Failed to establish a new connection"),
            u3.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
            u3.MaxRetryError(None, "/jobs"), socket.gaierror(-3, "Temporary failure in name resolution"),
            http.client.RemoteDisconnected("closed"), http.client.IncompleteRead(b""), wrapped]


@pytest.mark.parametrize("fault", _network_faults(), ids=lambda e: type(e).__name__)
def test_network_faults_are_transient(fault):
    from qssm.jobs.retry import is_transient

    assert is_transient(fault)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise fault
        return "ok"

    assert call_with_retries(flaky, NO_SLEEP) == "ok" and len(calls) == 3


def test_certificate_errors_are_not_retried():
    import ssl

    import requests.exceptions as req

    from qssm.jobs.retry import is_transient

    fault = req.SSLError("certificate verify failed")
    fault.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    assert not is_transient(fault)
