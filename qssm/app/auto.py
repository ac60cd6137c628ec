"""[split] segment = "auto" / obp_steps = "auto": the QLAM split that maximises expected accuracy on
a target within the shot budget (docs/architecture.md, "QLAM segments").

For every candidate (one circuit; segments of 1, 2, 4 tokens with the spec's hand-off; OBP of 1 or
2 steps) the deepest circuit of a round trip is transpiled for the target and its estimated success
probability S taken (pipeline/metrics.py: the product of (1 - error) over gates and readout). The
measured frontier (bench/generate/qlam_split.py, shipped as qssm/app/qlam_frontier.json) gives accuracy:
- measured on this target with this split: the measurement itself;
- else measured with this split on other targets: a monotone (isotonic) fit of accuracy against S
  over those, anchored at (0, chance) and (1, exact). Per split, because S of the deepest circuit
  does not see how hand-off errors add up: segments of 1 on Sherbrooke (S = 0.31, 7 hand-offs)
  measured 0.51 where segments of 2 on Fez (S = 0.38, 3 hand-offs) measured 0.94;
- else the same fit over every split.
The choice is the cheapest candidate (shots per image) whose predicted accuracy is within one
standard error of the best, among those within [split] max_shots_per_image.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from qiskit.quantum_info import SparsePauliOp
from sklearn.isotonic import IsotonicRegression

from qssm.circuits.templates import memory_template
from qssm.errors import QssmError
from qssm.models import checkpoint
from qssm.models.tasks import first_test_examples
from qssm.pipeline.build import split_levers
from qssm.pipeline.compile import CompileCache, CompileOptions
from qssm.pipeline.measure import measurement_groups
from qssm.pipeline.obp import OBP, plan_backpropagated
from qssm.pipeline.tomography import tomography_paulis

FRONTIER = Path(__file__).with_name("qlam_frontier.json")
SEGMENTS = (0, 1, 2, 4)
OBP_STEPS = (1, 2)


def candidates(split, t: int) -> list[dict]:
    """Concrete (segment, obp_steps) settings to compare, from what the spec leaves to "auto"."""
    segs = [k for k in SEGMENTS if k < t] if split.segment == "auto" else [split.segment]
    out = [{"segment": k, "obp_steps": 0} for k in segs]
    if split.obp_steps == "auto":
        out += [{"segment": 0, "obp_steps": s} for s in OBP_STEPS if s < t]
    elif split.obp_steps:
        out = [{"segment": 0, "obp_steps": split.obp_steps}]
    return out


def _deepest_templates(call, split, choice: dict, t: int):
    """The deepest circuit of each kind of round trip the choice sends."""
    k, s = choice["segment"], choice["obp_steps"]
    if s:
        return [memory_template(call, t - s)]
    if not k or k >= t:
        return [memory_template(call, t)]
    handoff, _ = split_levers(split)
    return [memory_template(call, k), memory_template(call, k, prepared=handoff.prep_kind)]


def transpile_estimate(call, split, choice: dict, t: int, backend, options, cache) -> tuple[float, int]:
    """(estimated success probability, two-qubit gates) of the deepest circuit the choice sends."""
    if backend.target is None:
        return 1.0, 0
    metrics = [cache.get(tpl, backend, options).metrics for tpl in _deepest_templates(call, split, choice, t)]
    return min(m["success_probability"] for m in metrics), max(m["two_qubit"] for m in metrics)


def _groups(observables) -> int:
    return len(measurement_groups([SparsePauliOp(o) for o in observables]))


def cost_per_image(call, split, choice: dict, t: int, shots: int, zne_scales: int = 1) -> dict:
    """Circuits and shots per image the choice sends (measured circuits: one per qubit-wise
    commuting group; hand-offs: 3^n Pauli bases or the spec's random bases)."""
    k, s = choice["segment"], choice["obp_steps"]
    readout = _groups(call.observables)
    if s:
        obp = OBP(s, split.obp_max_weight, split.obp_tol)
        batches, _ = plan_backpropagated(call, obp, None)
        circuits = sum(_groups(tuple(o.paulis.to_labels()[0] for o in b.observables)) for b in batches)
    else:
        handoffs = math.ceil(t / (k or t)) - 1
        per = 3 ** call.n_qubits if split.tomography == "pauli" else split.shadow_bases
        circuits = t * readout + handoffs * per
        if split.tomography == "pauli" and handoffs:  # the last prefix's readouts join the tomography groups
            circuits = t * readout + handoffs * (_groups(tuple(call.observables) + tomography_paulis(call.n_qubits))
                                                 - readout)
    circuits *= zne_scales
    return {"circuits_per_image": int(circuits), "shots_per_image": int(circuits * (shots or 0) / max(zne_scales, 1))}


@lru_cache(maxsize=4)
def _frontier(path: str) -> tuple[dict, ...]:
    p = Path(path)
    return tuple(json.loads(p.read_text())) if p.exists() else ()


def split_kind(split) -> tuple:
    """What distinguishes one measured split from another: segment size and OBP depth, and for
    segments the hand-off (re-preparation, estimate, purification). `split` is a SplitSpec or a
    frontier row's split dict (only the keys that differ from the defaults)."""
    get = split.get if isinstance(split, dict) else (lambda k, d: getattr(split, k, d))
    segment, obp = get("segment", 0) or 0, get("obp_steps", 0) or 0
    if not segment or obp:
        return (0, obp)
    return (segment, 0, get("prep", "mottonen"), get("tomography", "pauli"), bool(get("purify", True)))


def predict(points: list[tuple[float, float]], s: float, chance: float, exact: float) -> float:
    """Accuracy at estimated success s: isotonic fit through the measured (S, accuracy) points."""
    xs = [0.0, 1.0] + [p[0] for p in points]
    ys = [chance, exact] + [p[1] for p in points]
    fit = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(xs, ys)
    return float(fit.predict([s])[0])


def choose(rows: list[dict], tolerance: float, budget: int) -> dict:
    """The cheapest row within `tolerance` of the best predicted accuracy, within the budget."""
    ok = [r for r in rows if not budget or r["shots_per_image"] <= budget]
    if not ok:
        cheapest = min(r["shots_per_image"] for r in rows)
        raise QssmError(f"[split] max_shots_per_image = {budget} is below every candidate split's cost "
                        f"(the cheapest needs {cheapest} shots per image); raise it or set segment / obp_steps")
    best = max(r["predicted_accuracy"] for r in ok)
    near = [r for r in ok if r["predicted_accuracy"] >= best - tolerance]
    return min(near, key=lambda r: (r["shots_per_image"], -r["predicted_accuracy"]))


def split_choice(spec, model, backend, frontier: list[dict] | None = None, options=None,
                 sha256: str | None = None) -> dict:
    """Every candidate with its transpilation estimate, cost and predicted accuracy, and the choice.
    The measured frontier is the checkpoint's own: matched by its content hash (`sha256`, read from
    the checkpoint's header when not given), so a renamed file keeps its measurements."""
    if not model.splits:
        raise QssmError(f"[split] segment / obp_steps = \"auto\" apply to QLAM models, not to {model.cfg.kind}")
    data = first_test_examples(model.cfg.task, min(spec.data.n, 16), spec.data.seed, spec.data.T or None,
                               spec.data.path or None)
    with torch.no_grad():
        call = model.double().memory_call(data.inputs)
    t = data.inputs.shape[1]
    options = options or CompileOptions(spec.backend.optimization_level, spec.backend.seed_transpiler)
    cache = CompileCache()
    name = Path(spec.checkpoint).stem
    sha256 = sha256 or checkpoint.read_metadata(spec.checkpoint).get("sha256", "")
    measured = [r for r in (frontier if frontier is not None else _frontier(str(FRONTIER)))
                if r.get("sha256") == sha256 and r.get("success_estimate") is not None and not r.get("mitigation")]
    points = [(r["success_estimate"], r["accuracy"]) for r in measured]
    n = max(spec.data.n, 1)
    chance = 1.0 / model.cfg.n_classes
    exact = max([p[1] for p in points] + [0.95])  # the best measured, or a nominal ceiling
    zne = len(spec.mitigation.zne_scales.split(",")) if spec.mitigation.zne else 1
    rows = []
    for c in candidates(spec.split, t):
        split = dataclasses.replace(spec.split, **c)
        s, two_qubit = transpile_estimate(call, split, c, t, backend, options, cache)
        row = {**c, "success_estimate": s, "max_two_qubit": two_qubit,
               **cost_per_image(call, split, c, t, spec.backend.circuit_shots, zne)}
        kind = split_kind(split)
        same = [r for r in measured if split_kind(r["split"]) == kind]
        here = [r["accuracy"] for r in same if r["target"] == backend.name]
        if here:
            row["predicted_accuracy"], row["basis"] = float(np.mean(here)), "measured here"
        elif same:
            row["predicted_accuracy"] = predict([(r["success_estimate"], r["accuracy"]) for r in same], s, chance, exact)
            row["basis"] = f"this split on {len(same)} other target(s)"
        elif points:
            row["predicted_accuracy"], row["basis"] = predict(points, s, chance, exact), "every split"
        else:
            row["predicted_accuracy"], row["basis"] = s, "estimated success"
        rows.append(row)
    tolerance = math.sqrt(0.25 / n) if points else 0.0  # one standard error of an accuracy near 0.5, at worst
    chosen = choose(rows, tolerance, spec.split.max_shots_per_image)
    why = (f"highest predicted accuracy ({chosen['predicted_accuracy']:.3f}, {chosen['basis']}; estimated "
           f"success {chosen['success_estimate']:.3f}; measured frontier of {len(points)} points) "
           f"within {tolerance:.3f} of the best at the fewest shots per image ({chosen['shots_per_image']:,})"
           if points else f"no measured frontier for {name}: highest estimated success {chosen['success_estimate']:.3f}")
    return {"target": backend.name, "candidates": rows, "chosen": {"segment": chosen["segment"],
            "obp_steps": chosen["obp_steps"]}, "why": why}


def resolve_split(spec, model, backend, sha256: str | None = None):
    """The spec with segment / obp_steps chosen for `backend`, and the choice (for reports)."""
    choice = split_choice(spec, model, backend, sha256=sha256)
    return dataclasses.replace(spec, split=dataclasses.replace(spec.split, **choice["chosen"])), choice
