"""Jobs end to end: create (with cost preflight), run or resume from the store, cancel.

`run_job` is what `qssm submit --wait`, the background worker of `qssm submit` and `qssm resume`
all call: it takes the job's lease (one live runner per job), runs inference with the store as the
dispatch step, and records the report. Killed at any point, calling it again finishes the job
without resubmitting a finished or in-flight batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qssm.backends.base import Backend
from qssm.backends.registry import get_backend
from qssm.errors import QssmError
from qssm.jobs.cost import check_budget, preflight
from qssm.jobs.dispatch import JobFailed, StoreDispatcher
from qssm.jobs.retry import PermanentError, RetryPolicy
from qssm.jobs.spec import JobSpec
from qssm.jobs.store import JobStore


def backend_for(spec: JobSpec) -> Backend:
    return get_backend(spec.backend.name, seed=spec.backend.seed_simulator)  # build_runner applies options


def create_job(store: JobStore, spec: JobSpec, yes: bool = False, backend: Backend | None = None) -> tuple[str, dict]:
    from qssm.pipeline.inference import build_runner

    backend = backend or backend_for(spec)
    build_runner(spec, backend=backend)  # the run's own checks (shots vs device limits, ...) before anything is stored
    estimate = preflight(spec, backend)
    check_budget(spec, estimate, yes)
    job_id = store.create_job(raw_spec(spec), backend.name, spec.source, estimate)
    return job_id, estimate


def raw_spec(spec: JobSpec) -> dict:
    """The spec in its TOML layout (parse_spec reads it back), checkpoint as an absolute path."""
    raw = spec.to_dict()
    raw["model"] = {"checkpoint": str(Path(raw.pop("checkpoint")).resolve())}
    return raw


def run_job(store: JobStore, job_id: str, backend: Backend | None = None, progress: bool = False,
            policy: RetryPolicy | None = None, log=None, force: bool = False) -> dict:
    from qssm.pipeline.inference import build_runner, run_inference

    job = store.job(job_id)
    if job["status"] == "done":
        return job["report"]
    if job["status"] == "cancelled":
        raise QssmError(f"job {job_id} was cancelled; submit the spec again to rerun it")
    if not store.acquire(job_id, force=force):
        raise QssmError(f"job {job_id} is being run by process {store.owner(job_id)}; "
                        f"wait for it (qssm status {job_id}) instead of resuming it twice")
    try:
        spec = store.job_spec(job_id)
        backend = backend or backend_for(spec)
        dispatch = StoreDispatcher(store, job_id, backend, policy=policy, log=log)
        try:
            report = run_inference(spec, runner=build_runner(spec, dispatch, backend=backend), progress=progress)
        except (JobFailed, PermanentError) as e:
            store.set_status(job_id, "failed", error=str(e))
            raise QssmError(f"job {job_id} failed: {e}") from None
        report.update(job_id=job_id, reused_batches=dispatch.reused, submitted_batches=dispatch.submitted,
                      retries=dispatch.retries, estimate=job["estimate"], **{f"store_{k}": v for k, v in
                                                                              store.totals(job_id).items()})
        if store.job(job_id)["status"] == "cancelled":
            return report
        store.set_status(job_id, "done", report=report)
        return report
    finally:
        store.release(job_id)
        close = getattr(backend, "close", None)
        if close is not None:
            close()


def spawn_worker(store: JobStore, job_id: str) -> int:
    """Run the job in a detached process (survives the terminal); its log sits beside the store."""
    log = Path(store.path).with_name(f"{job_id}.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "qssm.cli", "resume", job_id, "--store", str(store.path),
                                 "--quiet"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=os.environ.copy())
    return proc.pid


def cancel_job(store: JobStore, job_id: str) -> int:
    """Cancel provider jobs still in flight and mark the job cancelled; returns how many were cancelled."""
    job = store.job(job_id)
    if job["status"] in ("done", "failed", "cancelled"):
        raise QssmError(f"job {job_id} is already {job['status']}")
    spec = store.job_spec(job_id)
    n = 0
    in_flight = [r for r in store.batches(job_id) if r[3] == "submitted" and r[6]]
    if in_flight:
        import json

        from qssm.backends.base import Handle

        backend = backend_for(spec)
        for row in in_flight:
            backend.cancel(Handle(**json.loads(row[6])))
            n += 1
    store.set_status(job_id, "cancelled", error="cancelled by user")
    return n
