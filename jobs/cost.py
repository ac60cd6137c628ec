"""Cost preflight: what a job will cost before anything is submitted.

The circuits a job sends are known only by running its recurrence, so the preflight runs the model
through the pipeline on the exact backend (free, seconds), records every batch it would dispatch
(template, distinct bindings, shots), compiles each template once for the target, and asks the
target backend to price the resulting batches (Braket: per task + per shot; IBM: QPU seconds).
Bindings of later layers depend on measured values, but their number does not: one per distinct
(sequence, position), so the count is exact. Mitigation overheads are priced by the Mitigation's
own report when the spec enables one.
"""

from __future__ import annotations

import dataclasses

from qssm.backends.base import Backend
from qssm.backends.exact import ExactBackend
from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec
from qssm.pipeline.compile import CompileCache, CompileOptions
from qssm.pipeline.types import CircuitBatch, CompiledBatch


def preflight(spec: JobSpec, backend: Backend) -> dict:
    from qssm.pipeline.inference import run_inference
    from qssm.pipeline.runner import Runner

    seen: list[CircuitBatch] = []
    exact = ExactBackend(seed=spec.backend.seed_simulator)

    class Recording(Runner):
        def __call__(self, batches):
            seen.extend(batches)
            return super().__call__(batches)

    runner = Recording(exact, cutting="off")
    exact_spec = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name="exact"),
                                     mitigation=type(spec.mitigation)())
    run_inference(exact_spec, runner=runner, progress=False)
    options = CompileOptions(spec.backend.optimization_level, spec.backend.seed_transpiler)
    cache = CompileCache()
    priced: list[CompiledBatch] = []
    for b in seen:
        if backend.target is not None and b.template.circuit.num_qubits > backend.target.num_qubits:
            continue  # cut templates are priced by the cutting report, not here
        c = cache.get(b.template, backend, options)
        priced.append(CompiledBatch("", c.circuit, b.parameters, list(c.observables), b.shots,
                                    {"metrics": dict(c.metrics)}))
    estimate = dict(backend.estimate_cost(priced))
    multiplier = mitigation_multiplier(spec)
    for k in ("usd", "qpu_seconds", "tasks"):
        estimate[k] = float(estimate.get(k, 0.0)) * multiplier
    estimate.update(batches=len(priced), bindings=int(sum(len(b.parameters) for b in priced)),
                    shots_per_circuit=spec.backend.shots, mitigation_multiplier=multiplier)
    return estimate


def mitigation_multiplier(spec: JobSpec) -> float:
    """Circuits multiply under ZNE (one copy per noise scale); readout calibration is small."""
    from qssm.pipeline.mitigation import parse_scales

    return float(len(parse_scales(spec.mitigation.zne_scales))) if spec.mitigation.zne else 1.0


def check_budget(spec: JobSpec, estimate: dict, yes: bool = False) -> None:
    b = spec.budget
    over = []
    if b.max_cost_usd and estimate["usd"] > b.max_cost_usd:
        over.append(f"estimated ${estimate['usd']:.2f} exceeds budget.max_cost_usd = {b.max_cost_usd:g}")
    if b.max_qpu_seconds and estimate["qpu_seconds"] > b.max_qpu_seconds:
        over.append(f"estimated {estimate['qpu_seconds']:.0f} QPU s exceeds budget.max_qpu_seconds = {b.max_qpu_seconds:g}")
    if over and not yes:
        raise QssmError("; ".join(over) + "; raise the budget, reduce [data] n or shots, or pass --yes")
