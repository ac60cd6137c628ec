"""The expected cost of an adaptive job (`[backend] shots = "auto"`), beside the cap the preflight
prices and budgets (qssm/app/preflight.py).

What an adaptive job spends depends on how open its decisions are on the device's noise, which only
a run can tell, so the expected cost comes from a dry run: the adaptive rounds
(pipeline/adaptive.py, the same public code the job runs) on a seeded sample of min(n, SAMPLE) of
the job's examples on its noise twin (backends/registry.py `noise_twin`: the dm: simulator of the
device's snapshot). The batches those rounds dispatched are priced on the job's device with their
bindings scaled by n / sample (every round's task and job count as the rounds sent it, shots and
executions per example as the sample spent them), and the standard error is that of the sample's
mean shots per example, propagated through the same pricing. Readout calibrations are priced as
sent (a job calibrates its qubits once, whatever n). Rows shared between examples (QMamba's tokens)
are shared by fewer examples in a sample than in the whole job, so scaling over-states rather
than under-states. IBM runtime options (twirling, dynamical decoupling) are not simulated.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from qssm.app.job import Job
from qssm.app.pricing import per_example
from qssm.backends.registry import get_backend, noise_twin, paid_device, pricing_backend
from qssm.errors import QssmError
from qssm.pipeline.adaptive import run_adaptive
from qssm.pipeline.build import build_pipeline

SAMPLE = 16  # examples simulated on the twin (all of them when the job has fewer)


def sample_indices(n: int, seed: int, k: int = SAMPLE) -> np.ndarray:
    """A seeded sample of min(n, k) of the job's n examples, in order."""
    return np.sort(np.random.default_rng(seed).choice(n, min(n, k), replace=False))


def twin_spec(spec, twin: str):
    """The job on its noise twin: the same stages (readout, ZNE), no runtime pass-throughs (the
    dm: engine takes none), no cluster."""
    m = dataclasses.replace(spec.mitigation, resilience_level=-1, twirling=False, dynamical_decoupling=False)
    return dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name=twin, cluster=""), mitigation=m)


def scaled(batches, factor: float) -> list:
    """The batches with their bindings scaled by `factor` (calibration batches as they are)."""
    out = []
    for b in batches:
        if b.calibration is not None or factor == 1:
            out.append(b)
            continue
        rows = max(1, round(len(b.parameters) * factor))
        out.append(b.derive(parameters=np.resize(b.parameters, (rows, *b.parameters.shape[1:]))))
    return out


@torch.no_grad()
def expected_cost(job: Job, pricer=None) -> dict:
    """The expected cost of the adaptive job (module docstring), priced on `pricer` (the job's own
    paid backend as the preflight configured it) or, for a dry-run backend, on the device whose noise
    it runs. {"available": False, "why": ...} where there is no twin to simulate."""
    spec = job.spec
    device = paid_device(spec.backend.name)
    try:
        twin = noise_twin(spec.backend.name)
    except QssmError as e:
        return {"available": False, "why": str(e)}
    if twin == "exact":
        return {"available": False, "why": f"{spec.backend.name} has no device noise to simulate the rounds on"}
    n = len(job.data.targets)
    seed = spec.backend.seed_simulator
    idx = sample_indices(n, seed)
    k = len(idx)
    trips: list[list] = []  # the batches of each dispatched round trip (a Session bills the gaps between them)
    backend = get_backend(twin, seed=seed)
    try:
        pipeline = build_pipeline(twin_spec(spec, twin), backend, model=job.model)
        pipeline.observe(lambda e: trips.append(list(e.batches)) if e.stage == "dispatch" else None)
        _, info = run_adaptive(job.model, job.data.inputs[torch.as_tensor(idx)], pipeline, spec.backend)
    finally:
        backend.close()
    shots = np.asarray(info["shots_per_example"], dtype=float)
    mean = float(shots.mean())
    se = float(shots.std(ddof=1) / math.sqrt(k)) if k > 1 else 0.0
    if pricer is None or pricer.price() is None:
        pricer = pricing_backend(device, seed=seed) if device else None

    def price(factor: float) -> dict:
        if pricer is None:
            return {"usd": 0.0, "qpu_seconds": 0.0, "tasks": 0.0}
        return pricer.estimate_cost([scaled(trip, factor) for trip in trips])

    at = price(n / k)
    if at.get("mode"):  # the mode the preflight chose, with the round trips the rounds take
        pricer.set_mode(at["mode"], round_trips=len(trips))
        at = price(n / k)
    rel = se / mean if mean > 0 else 0.0
    hi = price(n / k * (1 + rel))
    totals = {"usd": float(at.get("usd", 0.0)), "qpu_seconds": float(at.get("qpu_seconds", 0.0)),
              "tasks": float(at.get("tasks", 0.0)), "shots": mean * n,
              "executions": float(sum(b.executions for trip in trips for b in scaled(trip, n / k)))}
    out = {"available": True, **totals, **per_example(totals, n),
           "usd_stderr": abs(float(hi.get("usd", 0.0)) - totals["usd"]),
           "qpu_seconds_stderr": abs(float(hi.get("qpu_seconds", 0.0)) - totals["qpu_seconds"]),
           "shots_per_example_stderr": se, "rounds": len(info["rounds"]), "decided": info["decided"], "capped": info["capped"],
           "sample": k, "sample_examples": idx.tolist(), "seed": seed, "twin": twin, "device": device,
           "derivation": f"adaptive rounds simulated on {twin} for {k} of the {n} examples (seed {seed}); the batches "
                         f"they sent priced on {device or spec.backend.name} with bindings scaled by n/{k}; ± one "
                         "standard error of the sample's mean shots per example"}
    return out
