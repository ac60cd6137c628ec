"""Operator back-propagation of QLAM's readout through its last memory steps (docs/architecture.md,
"QLAM segments"): depth reduction without a hand-off.

The readout of prefix k is <psi_k|O|psi_k> = <psi_{k-s}| U^dag O U |psi_{k-s}> with U the steps
k-s+1..k of that sequence. So the device runs prefixes of at most T - s steps, and prefix j measures
its own readouts and, for k = j + s, the back-propagated O' = U^dag O U expanded in Paulis. U
depends on the sequence's inputs, so O' is computed per sequence; the device measures the union of
the kept Pauli terms over the batch (one measured circuit per qubit-wise-commuting group) and the
classical side applies each sequence's coefficients.

At n = 6 the Heisenberg picture is exact with 64 x 64 matrices (no need for the approximate
slice-by-slice propagation of large-n tools); what costs is measuring the terms, so O' is truncated:
terms of Pauli weight > max_weight or |coefficient| <= tol are dropped. The dropped part is the
truncation error (bounded by the sum of the dropped |coefficients|, recorded per readout).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from qiskit.quantum_info import Pauli

from qssm.circuits.templates import memory_template
from qssm.models.evaluator import QuantumCall, fused_program
from qssm.models.statevector import pauli_masks, run_program
from qssm.pipeline.plan import make_batch
from qssm.pipeline.tomography import tomography_paulis


@dataclass(frozen=True)
class OBP:
    steps: int = 0  # memory steps back-propagated; the device runs at most T - steps
    max_weight: int = 2  # keep Pauli terms of weight <= max_weight (0: any weight)
    tol: float = 1e-3  # and |coefficient| > tol


@lru_cache(maxsize=4)
def _tables(n: int):
    """Per tomography Pauli: X mask, Z-or-Y mask, i^(number of Y), weight; the sign matrix S[z, j]."""
    labels = tomography_paulis(n)
    masks = np.array([pauli_masks(label) for label in labels], dtype=np.int64)
    x, zy, ny = (np.ascontiguousarray(c) for c in masks.T)
    d = 2**n
    j = np.arange(d)
    sign = 1.0 - 2.0 * (np.bitwise_count(j[:, None] & j[None, :]) & 1)  # symmetric
    weight = np.array([sum(c != "I" for c in lab) for lab in labels])
    return x, zy, (1j) ** ny, weight, sign


def pauli_coefficients(a) -> np.ndarray:
    """(..., d, d) Hermitian matrices -> (..., 4^n - 1) real coefficients c_P = Tr(P A) / d over
    the tomography Paulis (the identity's coefficient is dropped). Fast Pauli transform: for each X
    mask x, g_x[j] = A[j, j ^ x]; a sign (Walsh-Hadamard) transform over j gives every Z part."""
    a = torch.as_tensor(a)
    d = a.shape[-1]
    n = d.bit_length() - 1
    x, zy, phase, _, sign = _tables(n)
    j = torch.arange(d)
    flat = a.reshape(*a.shape[:-2], d * d)
    g = flat[..., (j[None, :] * d + (j[None, :] ^ j[:, None])).reshape(-1)].reshape(*a.shape[:-2], d, d)  # (.., x, j)
    h = g @ torch.as_tensor(sign, dtype=a.dtype)  # (..., x, z)
    out = h[..., torch.as_tensor(x), torch.as_tensor(zy)] * torch.as_tensor(phase, dtype=a.dtype)
    return (out.real / d).numpy()


@torch.no_grad()
def step_unitaries(call: QuantumCall, first: int, steps: int) -> np.ndarray:
    """(B, d, d) unitary of memory steps [first, first + steps) for every sequence."""
    prog = fused_program(call)
    b = call.inputs.shape[0]
    d = 2**call.n_qubits
    state = torch.eye(d, dtype=torch.complex128).repeat(b, 1)  # row (seq, j) = |j>
    for t in range(first, first + steps):
        state = run_program(prog, call.inputs[:, t].double().repeat_interleave(d, 0), state)
    return state.reshape(b, d, d).transpose(1, 2)  # column j = U|j>


def pauli_matrix(label: str) -> np.ndarray:
    return Pauli(label).to_matrix()


@torch.no_grad()
def backpropagate(call: QuantumCall, first: int, steps: int) -> np.ndarray:
    """(B, n_obs, 4^n - 1) Pauli coefficients of U^dag O U for every readout O, U = steps
    [first, first + steps) of each sequence."""
    u = step_unitaries(call, first, steps)
    obs = torch.as_tensor(np.stack([pauli_matrix(o) for o in call.observables]))  # (K, d, d)
    out = []
    for lo in range(0, len(u), 16):
        uc = u[lo:lo + 16, None]
        out.append(pauli_coefficients(uc.mH @ obs[None] @ uc))
    return np.concatenate(out)


def truncate(coef: np.ndarray, n: int, obp: OBP) -> tuple[np.ndarray, np.ndarray]:
    """Zero the dropped terms; returns (kept coefficients, sum of dropped |coefficients| per row)."""
    weight = _tables(n)[3]
    keep = np.abs(coef) > obp.tol
    if obp.max_weight:
        keep &= (weight <= obp.max_weight)
    kept = np.where(keep, coef, 0.0)
    return kept, np.abs(coef - kept).sum(-1)


def plan_backpropagated(call: QuantumCall, obp: OBP, shots: int | None, tracker=None):
    """One round trip: prefixes 1..T-s, prefix j measuring its readouts and the union of the kept
    terms of the readouts of prefix j + s. Returns (batches, combine(results) -> values, errors)."""
    b, t, _ = call.inputs.shape
    s = min(obp.steps, t - 1)
    n, n_obs = call.n_qubits, len(call.observables)
    labels = tomography_paulis(n)
    inputs = call.inputs.detach().double().numpy()
    batches, plans = [], []
    dropped = []
    for j in range(1, t - s + 1):
        extra, coef = (), None
        if j + s <= t and s:
            coef, lost = truncate(backpropagate(call, j, s), n, obp)
            dropped.append(lost)
            used = np.flatnonzero(np.abs(coef).max(axis=(0, 1)) > 0)
            extra = tuple(labels[u] for u in used)
            coef = coef[:, :, used]
        template = memory_template(call, j, observables=tuple(call.observables) + extra)
        batches.append(make_batch(template, inputs[:, :j].reshape(b, -1), shots))
        plans.append((j, coef))
    if tracker is not None and dropped:
        tracker.add(obp_terms=sum(len(bt.observables) - n_obs for bt in batches))
        tracker.obp_truncation += [float(np.max(np.concatenate(dropped)))]

    def combine(results):
        values = np.zeros((b, t, n_obs))
        errors = np.zeros((b, t, n_obs))
        for (j, coef), batch, res in zip(plans, batches, results):
            v, e = res.values[batch.inverse], res.stderr[batch.inverse]
            values[:, j - 1], errors[:, j - 1] = v[:, :n_obs], e[:, :n_obs]
            if coef is not None:
                values[:, j - 1 + s] = np.einsum("bkp,bp->bk", coef, v[:, n_obs:])
                errors[:, j - 1 + s] = np.sqrt(np.einsum("bkp,bp->bk", coef**2, e[:, n_obs:] ** 2))
        return values, errors

    return batches, combine
