"""The one preflight step before anything is spent (docs/architecture.md, "Preflight"): the spec
is checked against the backend (shots, widths, options, credentials) and, for a paid job, priced
and held against its budget.

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

from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec


def validate(spec: JobSpec, backend, model=None) -> None:
    """Everything about a spec that the backend can refuse, as one-line errors, before any work."""
    from qssm.pipeline.mitigation import EXTRAPOLATIONS, parse_scales

    caps = backend.capabilities
    shots = spec.backend.shots
    if shots == 0 and not caps.exact:
        raise QssmError(f"backend {backend.name} samples: set [backend] shots > 0 (e.g. shots = 4000)")
    if shots and caps.max_shots and shots > caps.max_shots:
        raise QssmError(f"{shots} shots exceed backend {backend.name}'s limit of {caps.max_shots} shots per circuit; "
                        f"set [backend] shots to at most {caps.max_shots}")
    m = spec.mitigation
    if m.extrapolation not in EXTRAPOLATIONS:
        raise QssmError(f"[mitigation] extrapolation must be one of {', '.join(EXTRAPOLATIONS)}, got {m.extrapolation!r}")
    scales = parse_scales(m.zne_scales)
    if m.readout and not shots:
        raise QssmError("[mitigation] readout needs sampled results: set [backend] shots > 0")
    if m.zne and shots and shots < len(scales):
        raise QssmError(f"ZNE splits {shots} shots over {len(scales)} scales; raise [backend] shots")
    if m.zne and spec.split.cutting == "force":
        raise QssmError('ZNE extrapolates expectation values and cut circuits return raw samples: disable '
                        '[mitigation] zne or set [split] cutting = "auto"')
    from qssm.pipeline.build import runtime_options

    unknown = set(runtime_options(spec)) - caps.runtime_options
    if unknown:
        raise QssmError(f"[mitigation] {', '.join(sorted(unknown))}: IBM runtime options that {backend.name} does not "
                        "take; remove them or use an ibm: backend")
    if model is not None:
        from qssm.jobs.spec import check_spec_against_model

        check_spec_against_model(spec, model.cfg)
        _check_widths(spec, backend, model)
    backend.check_credentials()


def _check_widths(spec: JobSpec, backend, model) -> None:
    from qssm.circuits.templates import model_templates

    from qssm.pipeline.compile import check_width

    if spec.split.cutting == "off":
        widest = max(model_templates(model), key=lambda t: t.circuit.num_qubits)
        check_width(widest.name, widest.circuit, backend)
    caps = backend.capabilities
    if spec.split.cutting == "force" and not caps.mid_circuit_measurement:
        raise QssmError(f"cut circuits measure mid-circuit and {backend.name} does not run them; "
                        'set [split] cutting = "off" or use an aer or ibm backend')


def estimate(spec: JobSpec, backend) -> dict:
    """What the job will send and cost (module docstring)."""
    from qssm.backends.exact import ExactBackend
    from qssm.pipeline.build import build_pipeline
    from qssm.pipeline.inference import run_inference

    planned: list[list] = []
    if spec.split.auto:  # choose the split for the real target first: the exact plan must send what it will
        from qssm.models import checkpoint
        from qssm.pipeline.auto import resolve_split

        model = checkpoint.load(spec.checkpoint)[0]
        if model.cfg.kind == "qlam":
            spec, _ = resolve_split(spec, model, backend)
    exact = ExactBackend(seed=spec.backend.seed_simulator)
    recorder = build_pipeline(_exact_spec(spec), exact)
    recorder.observe(lambda e: planned.append(e.batches) if e.stage == "plan" else None)
    run_inference(_exact_spec(spec), pipeline=recorder, progress=False, backend=exact)
    pipeline = build_pipeline(spec, backend, dispatch=_no_dispatch)
    shots = spec.backend.shots or None
    sent = [b for trip in planned for b in pipeline.transform([p.derive(shots=shots) for p in trip])[0]]
    # the execution mode is priced too (a Session bills its idle gaps): "auto" decides from this job's
    # round trips and QPU time, and the estimate names the mode it priced
    backend.set_mode("batch", round_trips=len(planned))
    qpu = float(backend.estimate_cost(sent).get("qpu_seconds_if_real", 0.0) or 0.0) or None
    backend.set_mode(spec.backend.mode, round_trips=len(planned), qpu_seconds=qpu)
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


def preflight(spec: JobSpec, backend, model=None, *, price: bool = False, yes: bool = False) -> dict | None:
    """validate, then (for a job that may cost money) estimate and check the budget."""
    validate(spec, backend, model)
    if not price:
        return None
    est = estimate(spec, backend)
    check_budget(spec, est, yes)
    return est
