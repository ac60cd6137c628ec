"""plan: a model's quantum calls -> CircuitBatches (template + deduplicated parameter rows).

QMamba: every sub-circuit call of a layer is one batch of B*T bindings; identical bindings (the
same token in the same context) are run once. QLAM: a memory call becomes one round trip per
segment of k tokens, each a set of prefix circuits (1..k steps) from the re-prepared state.
"""

from __future__ import annotations

import numpy as np
from qiskit.quantum_info import SparsePauliOp

from qssm.circuits.templates import memory_template, subcircuit_template, trainable_template
from qssm.models.evaluator import QuantumCall
from qssm.models.statevector import phi
from qssm.pipeline.handoff import shadow_rows
from qssm.pipeline.shadows import zstrings
from qssm.types import CircuitBatch, Template


def dedupe(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique parameter rows and the inverse index restoring the caller's order."""
    uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def make_batch(template: Template, rows: np.ndarray, shots: int | None) -> CircuitBatch:
    uniq, inverse = dedupe(np.ascontiguousarray(rows, dtype=np.float64))
    return CircuitBatch((template.circuit,), uniq, tuple(SparsePauliOp(o) for o in template.observables), shots,
                        meta={"template": template.name, "template_hash": template.hash}, template=template,
                        inverse=inverse)


def plan_call(call: QuantumCall, shots: int | None) -> CircuitBatch:
    """A stateless sub-circuit call (..., n_in) -> one CircuitBatch."""
    rows = call.inputs.detach().reshape(-1, call.inputs.shape[-1]).double().numpy()
    return make_batch(subcircuit_template(call), rows, shots)


def plan_trainable(call: QuantumCall, shots: int | None) -> CircuitBatch:
    """A stateless call with its weights left free (pipeline/gradients.py): rows (phi(w)..., x...)."""
    template = trainable_template(call)
    x = call.inputs.detach().reshape(-1, call.inputs.shape[-1]).double().numpy()
    w = phi(call.weights.detach().double()).numpy()
    return make_batch(template, np.hstack([np.broadcast_to(w, (len(x), len(w))), x]), shots)


def plan_segment(
    call: QuantumCall,
    start: int,
    length: int,
    prep: np.ndarray | None,
    shots: int | None,
    extra_final: tuple[str, ...] = (),
    prep_kind: str = "mottonen",
    rep: int = 1,
    shadow: np.ndarray | None = None,
) -> list[CircuitBatch]:
    """QLAM tokens [start, start+length): prefix circuits of 1..length steps, each binding
    (prep angles, inputs of the steps so far) per sequence. The last prefix also measures
    `extra_final` (tomography observables for the state hand-off to the next segment); with
    `shadow` ((M, 2n) basis angles) one more batch measures the segment's final state in each of
    the M bases (pipeline/shadows.py). `rep` > 1: `prep` holds rep rows per sequence (a mixture,
    pipeline/handoff.py) and every sequence's inputs are repeated to match."""
    inputs = np.repeat(call.inputs.detach().double().numpy(), rep, axis=0)
    b = inputs.shape[0]
    batches = []
    for j in range(1, length + 1):
        obs = tuple(call.observables) + (extra_final if j == length else ())
        template = memory_template(call, j, prepared=prep_kind if prep is not None else False, observables=obs)
        steps = inputs[:, start : start + j].reshape(b, -1)
        rows = steps if prep is None else np.concatenate([prep, steps], axis=1)
        batches.append(make_batch(template, rows, shots))
    if shadow is not None:
        template = memory_template(call, length, prepared=prep_kind if prep is not None else False,
                                   observables=zstrings(call.n_qubits), basis=True)
        batches.append(make_batch(template, shadow_rows(rows, 0 if prep is None else prep.shape[1], shadow), shots))
    return batches
