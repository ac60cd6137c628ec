"""The price of a prepared job before anything is spent (docs/architecture.md, "Preflight"); the
checks ran when the job was prepared (qssm/app/validate.py).

Pricing: the circuits a job sends are known only by running its recurrence, so the preflight runs
the model on the exact backend (free, seconds), records every batch each round trip plans, and
passes those round trips through the job's own pipeline stages without dispatching them
(`Pipeline.transform`): the priced batches are exactly what dispatch would receive, cut
subexperiments, ZNE copies and readout calibrations included. Bindings of later layers depend on
measured values but their number does not: one per distinct (sequence, position).
"""

from __future__ import annotations

import dataclasses
import math

from qssm.app.inference import run
from qssm.app.job import Job
from qssm.backends.exact import ExactBackend
from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec
from qssm.pipeline.build import build_pipeline


def estimate(job: Job) -> dict:
    """What the job will send and cost (module docstring). The job's split is already resolved
    for its target, so the exact plan sends what the real run will."""
    spec, backend = job.spec, job.backend
    planned: list[list] = []
    exact = ExactBackend(seed=spec.backend.seed_simulator)
    recorder = build_pipeline(_exact_spec(spec), exact)
    recorder.observe(lambda e: planned.append(e.batches) if e.stage == "plan" else None)
    run(job.on(exact, _exact_spec(spec)), pipeline=recorder, progress=False)
    pipeline = build_pipeline(spec, backend, dispatch=_no_dispatch, model=job.model)
    shots = spec.backend.shots or None
    sent = [b for trip in planned for b in pipeline.transform([p.derive(shots=shots) for p in trip])[0]]
    est = dict(backend.estimate_cost(sent))
    for k in ("usd", "qpu_seconds", "tasks"):
        est[k] = float(est.get(k, 0.0))
    est.update(batches=len(sent), executions=int(sum(b.executions for b in sent)),
               shots=int(sum(b.executions * (b.shots or 0) for b in sent)), shots_per_circuit=spec.backend.shots,
               round_trips=len(planned), transpile_calls=int(pipeline.tracker.totals["transpile_calls"]))
    return est


def _exact_spec(spec: JobSpec) -> JobSpec:
    """The same job on the exact backend, exact values, no mitigation: only its plan is wanted."""
    return dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name="exact", shots=0, layout="default"),
                               mitigation=type(spec.mitigation)(), split=dataclasses.replace(spec.split, cutting="off"))


def _no_dispatch(batches):
    raise AssertionError("the preflight prices batches; it never dispatches them")


def check_budget(spec: JobSpec, est: dict, yes: bool = False) -> None:
    b = spec.budget
    over = []
    for limit, value, what in ((b.max_cost_usd, est["usd"], "estimated ${:.2f} exceeds budget.max_cost_usd = {:g}"),
                               (b.max_qpu_seconds, est["qpu_seconds"], "estimated {:.0f} QPU s exceeds "
                                                                       "budget.max_qpu_seconds = {:g}")):
        if not math.isfinite(limit) or limit < 0:
            raise QssmError(f"budget limits must be finite and >= 0, got {limit}; fix [budget]")
        if limit and value > limit:
            over.append(what.format(value, limit))
    if over and not yes:
        raise QssmError("; ".join(over) + "; raise the budget, reduce [data] n or shots, or pass --yes")


def preflight(job: Job, *, yes: bool = False) -> dict:
    """The price of a job that may cost money, held against its budget."""
    est = estimate(job)
    check_budget(job.spec, est, yes)
    return est
