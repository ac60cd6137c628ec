"""Exact, differentiable, batched statevector simulation in torch.

Amplitude ordering follows Qiskit (little-endian: bit q of the index is qubit q), so a state here
and a `qiskit.quantum_info.Statevector` compare element by element.

Two paths over the same gate lists (models/ansatz.py):
- `run_ops`: the reference, one gate at a time; small enough to read in one sitting.
- `compile_ops` + `run_program`: the fast path used by the models. Every run of gates that does not
  depend on the per-token input is fused into one 2^n x 2^n unitary (built differentiably from the
  weights), so a forward costs one batched matmul per ansatz block plus n per-row 2x2 rotations per
  encoding layer. Tested against the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from qssm.models.ansatz import Op


class one_thread:
    """The simulators' products are small and cache-sized: extra intra-op threads only add
    synchronization (3x slower on a loaded 2-core machine). Scale out with a cluster instead."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


def default_device() -> torch.device:
    """Where the simulators run: CUDA when it is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def complex_dtype(real: torch.dtype) -> torch.dtype:
    return torch.complex128 if real == torch.float64 else torch.complex64


def phi(w: torch.Tensor) -> torch.Tensor:
    """Weight re-mapping: trained angles pass through pi * tanh(w) before use."""
    return math.pi * torch.tanh(w)


def rotation_matrix(gate: str, theta: torch.Tensor) -> torch.Tensor:
    """(..., 2, 2) complex matrices of RX/RY/RZ(theta), with Qiskit's conventions."""
    cdt = complex_dtype(theta.dtype)
    c = torch.cos(theta / 2).to(cdt)
    s = torch.sin(theta / 2).to(cdt)
    zero = torch.zeros_like(c)
    if gate == "rx":
        rows = [[c, -1j * s], [-1j * s, c]]
    elif gate == "ry":
        rows = [[c, -s], [s, c]]
    elif gate == "rz":
        rows = [[c - 1j * s, zero], [zero, c + 1j * s]]
    else:
        raise ValueError(f"not a rotation: {gate}")
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def apply_1q(state: torch.Tensor, mat: torch.Tensor, q: int, n: int) -> torch.Tensor:
    """Apply a 2x2 gate on qubit q; `mat` is (2, 2) shared or (B, 2, 2) one per row."""
    b = state.shape[0]
    s = state.reshape(b, 2 ** (n - 1 - q), 2, 2**q)
    if mat.dim() == 2:
        out = torch.einsum("ij,bljr->blir", mat, s)
    else:
        out = torch.einsum("bij,bljr->blir", mat, s)
    return out.reshape(b, 2**n)


@lru_cache(maxsize=None)
def _bits(n: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(2^n, n), column q = bit of qubit q; one copy per device, so the hot path never moves it."""
    idx = torch.arange(2**n, device=device)
    return (idx[:, None] >> torch.arange(n, device=device)[None, :]) & 1


def apply_2q(state: torch.Tensor, gate: str, qubits: tuple[int, int], n: int) -> torch.Tensor:
    a, b = qubits
    bits = _bits(n, state.device)
    if gate == "cz":
        sign = 1 - 2 * (bits[:, a] & bits[:, b])
        return state * sign.to(state.dtype)
    if gate == "cx":  # control a, target b
        perm = torch.arange(2**n, device=state.device) ^ (bits[:, a] << b)
        return state[:, perm]
    raise ValueError(f"unknown two-qubit gate {gate}")


def zero_state(batch: int, n: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    state = torch.zeros(batch, 2**n, dtype=complex_dtype(dtype), device=device)
    state[:, 0] = 1
    return state


def _angle(op: Op, inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return inputs[:, op.index] if op.src == "in" else weights[op.index]


def run_ops(
    ops: list[Op], n: int, inputs: torch.Tensor, weights: torch.Tensor, state: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference simulator: apply `ops` gate by gate. inputs (B, n_in) are angles; weights are
    already re-mapped angles. Returns the (B, 2^n) final state."""
    if state is None:
        state = zero_state(inputs.shape[0], n, inputs.dtype, inputs.device)
    for op in ops:
        if len(op.qubits) == 2:
            state = apply_2q(state, op.gate, op.qubits, n)
        else:
            state = apply_1q(state, rotation_matrix(op.gate, _angle(op, inputs, weights)), op.qubits[0], n)
    return state


@dataclass
class Program:
    """A gate list prepared for fast execution: fused weight-only unitaries and input rotations."""

    n: int
    steps: list  # ("U", (2^n, 2^n) tensor) | ("in", gate, qubit, input_index)


def compile_ops(ops: list[Op], n: int, weights: torch.Tensor) -> Program:
    """Fuse every maximal run of input-independent gates into one unitary (differentiable in
    `weights`). Cost: one simulation of the run on the 2^n basis states."""
    steps: list = []
    run: list[Op] = []

    def flush() -> None:
        if run:
            eye = torch.eye(2**n, dtype=complex_dtype(weights.dtype), device=weights.device)
            # rows of run_ops(eye) are U|j>; U itself is its transpose
            u = run_ops(run, n, torch.zeros(2**n, 0, dtype=weights.dtype, device=weights.device), weights, eye).T
            steps.append(("U", u))
            run.clear()

    for op in ops:
        if op.src == "in":
            flush()
            steps.append(("in", op.gate, op.qubits[0], op.index))
        else:
            run.append(op)
    flush()
    return Program(n, steps)


def run_program(prog: Program, inputs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
    """Fast path: inputs (B, n_in) angles -> (B, 2^n) states."""
    n = prog.n
    steps = prog.steps
    if state is None:
        # input rotations on distinct qubits straight from |0..0> make a product state: build it
        # as a Kronecker product of first columns instead of n gate applications
        k = 0
        seen: set[int] = set()
        while k < len(steps) and steps[k][0] == "in" and steps[k][2] not in seen:
            seen.add(steps[k][2])
            k += 1
        state = _product_state(steps[:k], inputs, n) if k > 1 else zero_state(inputs.shape[0], n, inputs.dtype,
                                                                                          inputs.device)
        steps = steps[k:] if k > 1 else steps
    i = 0
    while i < len(steps):
        if steps[i][0] == "U":
            state = state @ steps[i][1].T
            i += 1
            continue
        j = i
        while j < len(steps) and steps[j][0] == "in":
            j += 1
        state = _input_layer(state, steps[i:j], inputs, n)
        i = j
    return state


def _input_layer(state: torch.Tensor, layer: list, inputs: torch.Tensor, n: int) -> torch.Tensor:
    """A run of input rotations: gates on different qubits commute, so each qubit's rotations are
    multiplied into one (B, 2, 2) matrix first (built for all qubits with the same gate sequence at
    once) and the state sees one 2x2 application per qubit instead of one per gate."""
    per_qubit: dict[int, list[tuple[str, int]]] = {}
    for _, gate, q, idx in layer:
        per_qubit.setdefault(q, []).append((gate, idx))
    by_sequence: dict[tuple[str, ...], list[int]] = {}
    for q, gates in per_qubit.items():
        by_sequence.setdefault(tuple(g for g, _ in gates), []).append(q)
    for sequence, qubits in by_sequence.items():
        mats = None
        for k, gate in enumerate(sequence):
            cols = [per_qubit[q][k][1] for q in qubits]
            if cols == list(range(cols[0], cols[0] + len(cols))):
                theta = inputs[:, cols[0] : cols[0] + len(cols)]
            else:
                theta = inputs[:, cols]
            r = rotation_matrix(gate, theta)  # (B, len(qubits), 2, 2)
            mats = r if mats is None else r @ mats
        for col, q in enumerate(qubits):
            state = apply_1q(state, mats[:, col], q, n)
    return state


def _rotated_zero(gate: str, theta: torch.Tensor) -> torch.Tensor:
    """R(theta)|0>, the first column of rotation_matrix, without building the 2x2 matrices."""
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    if gate == "rx":
        return torch.complex(torch.stack([c, torch.zeros_like(s)], -1), torch.stack([torch.zeros_like(c), -s], -1))
    if gate == "ry":
        return torch.complex(torch.stack([c, s], -1), torch.zeros(*theta.shape, 2, dtype=theta.dtype,
                                                                  device=theta.device))
    if gate == "rz":
        zero = torch.zeros_like(c)
        return torch.complex(torch.stack([c, zero], -1), torch.stack([-s, zero], -1))
    raise ValueError(f"not a rotation: {gate}")


def _product_state(encoding: list, inputs: torch.Tensor, n: int) -> torch.Tensor:
    """(B, 2^n) state of single-qubit input rotations (on distinct qubits) applied to |0..0>."""
    by_qubit = {step[2]: step for step in encoding}
    state = None
    for q in range(n):  # qubit q is bit q of the basis index: later qubits are more significant
        if q in by_qubit:
            _, gate, _, idx = by_qubit[q]
            amp = _rotated_zero(gate, inputs[:, idx])  # R|0>, (B, 2)
        else:
            amp = torch.zeros(inputs.shape[0], 2, dtype=complex_dtype(inputs.dtype), device=inputs.device)
            amp[:, 0] = 1
        state = amp if state is None else (amp[:, :, None] * state[:, None, :]).reshape(inputs.shape[0], -1)
    return state


def z_expectations(state: torch.Tensor, n: int) -> torch.Tensor:
    """(B, 2^n) states -> (B, n) values <Z_q>."""
    probs = state.real**2 + state.imag**2
    zsign = (1 - 2 * _bits(n, probs.device)).to(probs.dtype)
    return probs @ zsign


def pauli_masks(label: str) -> tuple[int, int, int]:
    """A Qiskit Pauli label (qubit 0 rightmost) as (X-or-Y mask, Y-or-Z mask, number of Ys):
    P|j> = i^n_y (-1)^popcount(j & zymask) |j ^ xmask>."""
    xmask = zymask = n_y = 0
    for q, p in enumerate(reversed(label)):
        if p in "XY":
            xmask |= 1 << q
        if p in "YZ":
            zymask |= 1 << q
        n_y += p == "Y"
    return xmask, zymask, n_y


def _pauli_action(label: str) -> tuple[int, torch.Tensor]:
    """A Qiskit Pauli label (qubit 0 rightmost) as P|j> = coef[j] |j ^ xmask>: (xmask, coef
    (2^n,) complex128)."""
    n = len(label)
    xmask, zymask, n_y = pauli_masks(label)
    parity = torch.tensor([bin(j & zymask).count("1") & 1 for j in range(2**n)])
    return xmask, (1j**n_y) * (1 - 2 * parity).to(torch.complex128)


@lru_cache(maxsize=None)
def _pauli_tables(labels: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """P|j> = coef[k, j] |perm[k, j]> for each label (tomography's linear inversion scatters with these)."""
    idx = torch.arange(2 ** len(labels[0]))
    actions = [_pauli_action(label) for label in labels]
    return torch.stack([idx ^ m for m, _ in actions]), torch.stack([c for _, c in actions])


@lru_cache(maxsize=None)
def _pauli_groups(labels: tuple[str, ...], device: torch.device = torch.device("cpu")
                  ) -> tuple[tuple[int, tuple[int, ...], torch.Tensor], ...]:
    """Qiskit Pauli labels grouped by their X part: every Pauli of one group reads the same product
    conj(psi[j ^ xmask]) psi[j]. Returns (xmask, positions of the group's labels, coefficients
    (2^n, k) complex128 on `device`) per group."""
    groups: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for k, label in enumerate(labels):
        xmask, coef = _pauli_action(label)
        groups.setdefault(xmask, []).append((k, coef))
    return tuple((m, tuple(k for k, _ in g), torch.stack([c for _, c in g], 1).to(device)) for m, g in groups.items())


def _flip_bits(state: torch.Tensor, xmask: int, n: int) -> torch.Tensor:
    """(B, 2^n) -> the amplitudes at j ^ xmask: a flip of the axes of the qubits in xmask."""
    b = state.shape[0]
    dims = [1 + (n - 1 - q) for q in range(n) if xmask >> q & 1]  # axis 1 is qubit n-1
    return torch.flip(state.reshape(b, *([2] * n)), dims).reshape(b, 2**n)


def pauli_expectations(state: torch.Tensor, labels: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(B, 2^n) states -> (B, K) real values <psi|P_k|psi>.

    <psi|P|psi> = sum_j conj(psi[j ^ xmask]) coef[j] psi[j]: one axis flip and one product per
    distinct X part (X_i and Y_i share one), then a matmul with the groups' coefficients; diagonal
    Paulis read the probabilities."""
    labels = tuple(labels)
    n = len(labels[0])
    cols, order = [], []
    for xmask, pos, coef in _pauli_groups(labels, state.device):
        if xmask == 0:
            probs = state.real**2 + state.imag**2
            cols.append(probs @ coef.real.to(probs.dtype))
        else:
            w = _flip_bits(state, xmask, n).conj() * state
            cols.append((w @ coef.to(w.dtype)).real)
        order += pos
    out = torch.cat(cols, dim=1)
    if order != sorted(order):
        out = out[:, sorted(range(len(order)), key=order.__getitem__)]  # a list index: no tensor to move
    return out
