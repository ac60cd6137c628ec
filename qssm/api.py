"""The Python API (README "Python API"): the same operations as the command line, returning
objects instead of printing. `import qssm` exposes these names; importing them loads torch and
Qiskit, so the package itself stays light for the command line.

    import qssm
    job = qssm.prepare("examples/demo.toml", n=8)     # a spec file, a dict in the TOML layout, or a JobSpec
    out = qssm.run(job)                                # logits, their standard errors, exact logits, targets, report
    price = qssm.estimate(job)                         # what `qssm submit` would charge
    job.close()
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qssm.app.durable import create_job, run_job, spawn_worker
from qssm.app.inference import Inference, evaluator_for
from qssm.app.inference import run as _run
from qssm.app.job import Job
from qssm.app.job import prepare as _prepare
from qssm.app.preflight import estimate as _estimate
from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec, load_spec, parse_spec
from qssm.jobs.store import JobStore
from qssm.models import checkpoint
from qssm.models.registry import last_logits
from qssm.pipeline.delta import Recorder, stderr

__all__ = ["Inference", "Job", "JobSpec", "QssmError", "estimate", "job", "load", "logits", "prepare", "run",
           "spec", "submit"]


def load(path: str | Path) -> nn.Module:
    """A checkpoint's model (eval mode); never unpickled."""
    return checkpoint.load(path)[0]


def spec(source: str | Path | dict | JobSpec, **overrides: Any) -> JobSpec:
    """A job spec from a TOML file, a dict in the TOML layout, or a JobSpec, with [data] and
    [backend] fields replaced by keyword: n=, seed=, T=, backend= (the name), shots=, cluster=, ..."""
    if isinstance(source, JobSpec):
        s = source
    elif isinstance(source, dict):
        s = parse_spec(source, "spec")
    else:
        s = load_spec(source)
    data = {k: overrides.pop(k) for k in [k for k in overrides if k in {f.name for f in dataclasses.fields(s.data)}]}
    if "backend" in overrides:
        overrides["name"] = overrides.pop("backend")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(s.backend)}
    if unknown:
        raise QssmError(f"unknown spec overrides {sorted(unknown)}; use [data] or [backend] field names")
    return dataclasses.replace(s, data=dataclasses.replace(s.data, **data),
                               backend=dataclasses.replace(s.backend, **overrides))


def prepare(source: str | Path | dict | JobSpec, **overrides: Any) -> Job:
    """Load, check and resolve a job once (qssm/app/job.py). Close it with `job.close()` (IBM
    sessions, cluster clients), or use it as a context manager."""
    return _prepare(spec(source, **overrides))


def run(job: Job | str | Path | dict | JobSpec, progress: bool = False, **overrides: Any) -> Inference:
    """The job on its backend (a dry run on a simulator): logits, exact logits, targets, report."""
    if isinstance(job, Job):
        return _run(job, progress=progress)
    with prepare(job, **overrides) as prepared:
        return _run(prepared, progress=progress)


def estimate(job: Job | str | Path | dict | JobSpec, **overrides: Any) -> dict:
    """The price `qssm submit` would hold against the budget: usd, qpu_seconds, tasks, shots, ..."""
    if isinstance(job, Job):
        return _estimate(job)
    with prepare(job, **overrides) as prepared:
        return _estimate(prepared)


def submit(job: Job | str | Path | dict | JobSpec, *, store: str | Path | None = None, yes: bool = False,
           wait: bool = False, **overrides: Any) -> str:
    """A durable job in the store (priced, budget held); run here with wait=True, else by a
    detached worker. Returns the job id."""
    prepared = job if isinstance(job, Job) else prepare(job, **overrides)
    jobs = JobStore(store, create=True)
    try:
        job_id, _ = create_job(jobs, prepared, yes=yes)
        if wait:
            run_job(jobs, job_id, prepared=prepared)
        else:
            prepared.close()
            spawn_worker(jobs, job_id)
        return job_id
    except BaseException:
        prepared.close()
        raise


def job(job_id: str, *, store: str | Path | None = None) -> dict:
    """A stored job: id, status, backend, estimate, report (when finished), error."""
    return JobStore(store, create=False).job(job_id)


@torch.no_grad()
def logits(model: nn.Module, inputs: torch.Tensor, backend: str = "exact", shots: int | None = None,
           seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A model's scored logits (the last position) for `inputs` on any backend, through the
    pipeline's default stages, and their standard errors: exact values (errors zero), or `shots`
    per circuit (each measured value's shot noise carried through the model: the delta method)."""
    if backend == "exact" and not shots:
        out = last_logits(model, inputs)
        return out, torch.zeros_like(out)
    model = model.double()
    ev = evaluator_for(backend, shots=shots, seed=seed)
    try:
        x = inputs.double() if inputs.is_floating_point() else inputs
        recorder = Recorder(ev)
        out = last_logits(model, x, recorder)
        return out, stderr(model, x, recorder, out)
    finally:
        ev.execute.backend.close()
