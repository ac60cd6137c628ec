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

from qssm.app.expected import expected_cost
from qssm.app.inference import run
from qssm.app.job import Job, prepare
from qssm.app.pricing import on_device, per_example
from qssm.app.validate import validate
from qssm.backends.exact import ExactBackend
from qssm.backends.registry import paid_device, pricing_backend
from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec
from qssm.pipeline.build import build_pipeline


def estimate(job: Job, workload=None, expected: bool = True) -> dict:
    """What the job will send and cost (module docstring), in total and per example, with the
    price's source. The job's split is already resolved for its target, so the exact plan sends
    what the real run will. `workload(pipeline) -> examples` replaces the job's inference for
    commands that run something else on a backend (`qssm eval`, `generate`) on the exact recorder.
    `expected`: an adaptive job's expected cost too (a dry run of its rounds on the noise twin)."""
    spec, backend = job.spec, job.backend
    planned: list[list] = []
    exact = ExactBackend(seed=spec.backend.seed_simulator)
    recorder = build_pipeline(exact_plan_spec(spec), exact)
    recorder.observe(lambda e: planned.append(e.batches) if e.stage == "plan" else None)
    if workload is None:
        examples = run(job.on(exact, exact_plan_spec(spec)), pipeline=recorder, progress=False).report["n_examples"]
    else:
        examples = workload(recorder)
    pipeline = build_pipeline(spec, backend, dispatch=_no_dispatch, model=job.model)
    shots = spec.backend.circuit_shots or None
    if spec.backend.adaptive:  # priced at its cap: every circuit at the shots that spend it all
        pilot = sum(b.executions * shots for trip in planned
                    for b in pipeline.transform([p.derive(shots=shots) for p in trip])[0] if b.calibration is None)
        cap = spec.backend.max_shots_per_example
        shots = shots * spec.backend.CAP_PILOTS if not cap else max(shots, int(shots * cap * spec.data.n / max(pilot, 1)))
    trips = [pipeline.transform([p.derive(shots=shots) for p in trip])[0] for trip in planned]
    sent = [b for trip in trips for b in trip]
    # the execution mode is priced too (a Session bills its idle gaps): "auto" decides from this job's
    # round trips and QPU time, and the estimate names the mode it priced
    backend.set_mode("batch", round_trips=len(planned))
    qpu = float(backend.estimate_cost(trips).get("qpu_seconds_if_real", 0.0) or 0.0) or None
    backend.set_mode(spec.backend.mode, round_trips=len(planned), qpu_seconds=qpu)
    est = dict(backend.estimate_cost(trips))
    for k in ("usd", "qpu_seconds", "tasks"):
        est[k] = float(est.get(k, 0.0))
    est.update(batches=len(sent), executions=int(sum(b.executions for b in sent)),
               shots=int(sum(b.executions * (b.shots or 0) for b in sent)), shots_per_circuit=shots or 0,
               adaptive=spec.backend.adaptive, round_trips=len(planned),
               transpile_calls=int(pipeline.tracker.totals["transpile_calls"]))
    price = backend.price()
    est.update(per_example(est, examples), backend=backend.name, price=price,
               price_source=price and price["source"], price_date=price and price["date"])
    device = paid_device(backend.name)
    if device and device != backend.name:  # a simulator: what the device whose noise it runs would charge
        est["on_device"] = on_device(device, trips, examples)
    if spec.backend.adaptive and workload is None and expected:  # the cap is what the budget holds; this is what to expect
        exp = expected_cost(job, backend)
        backend.set_mode(est.get("mode") or spec.backend.mode, round_trips=len(planned), qpu_seconds=qpu)
        est["expected"] = exp
        if exp["available"]:  # top level: this backend's own price (a simulator's is 0; `expected` has the device's)
            own = 1.0 if price else 0.0
            est.update({f"expected_{k}": exp[k] * own for k in ("usd", "usd_stderr", "usd_per_example", "qpu_seconds",
                                                               "qpu_seconds_per_example")},
                       expected_shots_per_example=exp["shots_per_example"],
                       expected_shots_per_example_stderr=exp["shots_per_example_stderr"])
    return est


def exact_plan_spec(spec: JobSpec) -> JobSpec:
    """The same job on the exact backend, exact values, no mitigation: only its plan is wanted."""
    return dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name="exact", shots=0, layout="default"),
                               mitigation=type(spec.mitigation)(), split=dataclasses.replace(spec.split, cutting="off"))


def _no_dispatch(batches):
    raise AssertionError("the preflight prices batches; it never dispatches them")


def price_spec(spec: JobSpec, expected: bool = True) -> dict:
    """`qssm estimate`: the preflight's checks (all but credentials) and its estimate, with the spec's
    budget and whether the estimate fits it. Builds no paid session and records nothing."""
    with prepare(spec, pricing_backend(spec.backend.name, seed=spec.backend.seed_simulator), credentials=False) as job:
        est = estimate(job, expected=expected)
    budget = {"max_cost_usd": spec.budget.max_cost_usd, "max_qpu_seconds": spec.budget.max_qpu_seconds}
    try:
        check_budget(spec, est)
        within = True
    except QssmError:  # over budget, which is what this reports
        within = False
    return {"checkpoint": spec.checkpoint, **est, "budget": budget, "within_budget": within}


def check_budget(spec: JobSpec, est: dict, yes: bool = False) -> None:
    b = spec.budget
    over = []
    # an adaptive job: its cap, or its expected cost where the rounds' tasks/jobs make that larger
    usd, qpu = max(est["usd"], est.get("expected_usd", 0.0)), max(est["qpu_seconds"], est.get("expected_qpu_seconds", 0.0))
    for limit, value, what in ((b.max_cost_usd, usd, "estimated ${:.2f} exceeds budget.max_cost_usd = {:g}"),
                               (b.max_qpu_seconds, qpu, "estimated {:.0f} QPU s exceeds budget.max_qpu_seconds = {:g}")):
        if not math.isfinite(limit) or limit < 0:
            raise QssmError(f"budget limits must be finite and >= 0, got {limit}; fix [budget]")
        if limit and value > limit:
            over.append(what.format(value, limit))
    if over and not yes:
        raise QssmError("; ".join(over) + "; raise the budget, reduce [data] n or shots, or pass --yes")


def paid_run(spec: JobSpec, backend, model, workload, yes: bool, what: str,
             fewer: str = "--n to run fewer examples") -> dict | None:
    """`qssm eval` / `generate` on a backend that may cost money: the submit preflight (checks with
    credentials, then the price of `workload` through `estimate`), and any spend only with --yes
    (these commands have no spec, so no budget to hold the price against). None on a simulator."""
    validate(spec, backend, model)
    if backend.capabilities.simulator:
        return None
    est = estimate(Job(spec, model, None, backend), workload)  # the workload runs the model as the command will
    if (est["usd"] or est["qpu_seconds"]) and not yes:
        raise QssmError(f"{what} on {backend.name} would cost about ${est['usd']:,.2f} ({est['qpu_seconds']:,.0f} QPU s, "
                        f"{est['tasks']:.0f} tasks/jobs, {est['examples']} examples, ${est['usd_per_example']:,.2f} per "
                        f"example); pass --yes to spend it, or {fewer}")
    return est


def preflight(job: Job, *, yes: bool = False) -> dict:
    """The price of a job that may cost money, held against its budget."""
    est = estimate(job)
    check_budget(job.spec, est, yes)
    return est
