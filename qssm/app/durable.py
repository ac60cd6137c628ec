"""Jobs end to end: create (with cost preflight), run or resume from the store, cancel.

`run_job` is what `qssm submit --wait`, the background worker of `qssm submit` and `qssm resume`
all call: it takes the job's lease (one live runner per job), runs inference with the store as the
dispatch step, and records the report. Killed at any point, calling it again finishes the job
without resubmitting a finished or in-flight batch.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from qssm.app.inference import run
from qssm.app.job import Job, backend_for, prepare
from qssm.app.preflight import preflight
from qssm.backends.base import Backend
from qssm.errors import QssmError
from qssm.jobs.dispatch import JobCancelled, JobFailed, StoreDispatcher
from qssm.jobs.retry import PermanentError, RetryPolicy
from qssm.jobs.spec import JobSpec
from qssm.jobs.store import JobStore
from qssm.pipeline.tracker import Tracker


def create_job(store: JobStore, job: Job | JobSpec, yes: bool = False, backend: Backend | None = None
               ) -> tuple[str, dict]:
    """The price and budget of a prepared job (a spec is prepared here, on `backend` if given) and
    then, only if they pass, its record: the spec as it was resolved (the split that was priced is
    the split that runs, whatever changes later) in the execution mode it was priced in."""
    if isinstance(job, JobSpec):
        job = prepare(job, backend)
    estimate = preflight(job, yes=yes)
    spec = job.spec
    if estimate.get("mode"):  # the job runs in the execution mode it was priced in
        spec = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, mode=estimate["mode"]))
    job_id = store.create_job(raw_spec(spec), job.backend.name, spec.source, estimate)
    return job_id, estimate


def raw_spec(spec: JobSpec) -> dict:
    """The spec in its TOML layout (parse_spec reads it back), checkpoint as an absolute path."""
    raw = spec.to_dict()
    raw["model"] = {"checkpoint": str(Path(raw.pop("checkpoint")).resolve())}
    return raw


def run_job(store: JobStore, job_id: str, backend: Backend | None = None, progress: bool = False,
            policy: RetryPolicy | None = None, log=None, force: bool = False, prepared: Job | None = None) -> dict:
    """Run or continue a job. A cancelled job continues: its finished batches are replayed from the
    store (never paid again) and the ones it had in flight are submitted afresh. Everything that can
    refuse the job (its stored spec, the backend, the checks against the model) runs before the
    lease is taken, so a refused resume leaves the store as it was. `prepared`: the job as
    `create_job` priced it, in this process (`qssm submit --wait`), so its checkpoint is not read again."""
    job = store.job(job_id)
    if job["status"] == "done":
        if prepared is not None:
            prepared.close()
        if store.totals(job_id)["usage_pending"]:  # paid results are in; what they cost was not yet
            return settle_job_usage(store, job_id, backend, policy, log)
        return job["report"]
    try:
        prepared = prepared or prepare(store.job_spec(job_id), backend)  # closes the backend if it refuses
    except BaseException:
        if backend is not None:
            backend.close()
        raise
    try:
        if not store.acquire(job_id, force=force):
            raise QssmError(f"job {job_id} is being run by process {store.owner(job_id)}; wait for it (qssm status "
                            f"{job_id}), or take it over with `qssm resume {job_id} --force` if that process is gone")
    except BaseException:
        prepared.close()
        raise
    try:
        if job["status"] == "cancelled":
            reopened = store.reopen(job_id)
            (log or (lambda m: None))(f"continuing cancelled job {job_id}: {store.totals(job_id)['done']} finished "
                                      f"batches reused from the store, {reopened} cancelled in flight submitted again")
        tracker = Tracker()
        dispatch = StoreDispatcher(store, job_id, prepared.backend, policy=policy, log=log, tracker=tracker)
        try:
            report = run(prepared, dispatch=dispatch, progress=progress, tracker=tracker).report
        except (JobFailed, PermanentError) as e:
            store.set_status(job_id, "failed", error=str(e))
            raise QssmError(f"job {job_id} failed: {e}") from None
        except JobCancelled:
            # stopped at a batch boundary: what finished stays readable as a partial result
            report = partial_report(store, job_id, tracker)
            store.set_status(job_id, "cancelled", report=report)
            return report
        dispatch.settle_usage()
        mode_usage = prepared.backend.mode_usage()
        if mode_usage:  # a Session bills its wall time, idle gaps included: reconciles the estimate
            report["mode_usage"] = mode_usage
        report.update(job_id=job_id, estimate=job["estimate"], **{f"store_{k}": v for k, v in
                                                                   store.totals(job_id).items()})
        if store.job(job_id)["status"] == "cancelled":  # cancelled after the last batch: keep the paid result
            report.update(cancelled=True, partial=False)
            store.set_status(job_id, "cancelled", report=report)
            return report
        store.set_status(job_id, "done", report=report)
        return report
    finally:
        store.release(job_id)
        prepared.close()


def settle_job_usage(store: JobStore, job_id: str, backend: Backend | None = None, policy: RetryPolicy | None = None,
                     log=None) -> dict:
    """A finished job whose provider had not settled every batch's usage: read it now and update the
    report's totals (the results are untouched)."""
    job = store.job(job_id)
    with backend or backend_for(store.job_spec(job_id)) as backend:
        StoreDispatcher(store, job_id, backend, policy=policy, log=log).settle_usage()
    report = dict(job["report"] or {}, **{f"store_{k}": v for k, v in store.totals(job_id).items()})
    store.set_status(job_id, "done", report=report)
    return report


def partial_report(store: JobStore, job_id: str, tracker: Tracker) -> dict:
    """What a cancelled job finished: its batches (template, status, shape) and its run statistics."""
    finished = []
    for key, wave, pos, status, *_ in store.batches(job_id):
        if status == "done":
            rec = store.batch(job_id, key)
            shape = list(rec.result.values.shape) if rec.result.values is not None else [len(rec.result.counts)]
            finished.append({"key": key, "round_trip": wave, "position": pos,
                             "template": rec.result.meta.get("template"), "shape": shape})
    job = store.job(job_id)
    return {"job_id": job_id, "backend": job["backend"], "cancelled": True, "partial": True,
            "finished_batches": finished, **tracker.summary(),
            **{f"store_{k}": v for k, v in store.totals(job_id).items()}}


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
    # marked first: the worker checks it at every batch boundary and submits nothing more
    store.set_status(job_id, "cancelled", error="cancelled by user")
    in_flight = [store.parse_handle(job_id, r[0], r[6]) for r in store.batches(job_id) if r[3] == "submitted" and r[6]]
    if in_flight:
        backend = backend_for(spec)
        for handle in in_flight:
            backend.cancel(handle)
    return len(in_flight)
