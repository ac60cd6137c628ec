"""Device gradients through the pipeline: the parameter-shift rule (docs/architecture.md,
"Gradients"), as a PennyLane or Qiskit user expects from a device.

A stateless call's circuit is run with its weights left free (circuits/templates.py
`trainable_circuit`: a row is (phi(w)..., x...)), so every trainable angle is a circuit parameter.
Each parameter c that enters R_c Pauli rotations (rx, ry, rz: exp(-i a P / 2)) makes a value a
trigonometric polynomial of degree R_c in it, and the equidistant shift rule is exact for it
(Wierichs, Izaac, Wang, Lin 2022, eq. 21):

    df/da = sum_{mu=1..2R} f(a + s_mu) (-1)^(mu-1) / (4 R sin^2(s_mu / 2)),   s_mu = (2 mu - 1) pi / (2 R)

R = 1 is the familiar [f(a + pi/2) - f(a - pi/2)] / 2. The shifted rows are one more batch through
the same pipeline and dispatch (so the job store, the price and the tracker see them), and the
Jacobian's columns for phi(w) reach the raw weights through torch's autograd of phi.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from qiskit import QuantumCircuit

from qssm.errors import QssmError

ROTATIONS = frozenset({"rx", "ry", "rz"})


@lru_cache(maxsize=16)
def shift_rule(occurrences: int) -> tuple[np.ndarray, np.ndarray]:
    """(shifts, coefficients) of the equidistant rule for a parameter in `occurrences` rotations."""
    r = max(occurrences, 1)
    mu = np.arange(1, 2 * r + 1)
    shifts = (2 * mu - 1) * math.pi / (2 * r)
    coefficients = (-1.0) ** (mu - 1) / (4 * r * np.sin(shifts / 2) ** 2)
    return shifts, coefficients


def occurrences(circuit: QuantumCircuit) -> list[int]:
    """How many rotations each circuit parameter (in the circuit's parameter order) enters, each
    with the parameter itself as its angle; anything else has no exact shift rule here."""
    index = {p: i for i, p in enumerate(circuit.parameters)}
    counts = [0] * len(index)
    for inst in circuit.data:
        for angle in inst.operation.params:
            free = getattr(angle, "parameters", ())
            if not free:
                continue
            if inst.operation.name not in ROTATIONS or len(free) != 1 or angle != next(iter(free)):
                raise QssmError(f"circuit {circuit.name}: parameter in {inst.operation.name}({angle}) has no "
                                "parameter-shift rule; gradients need plain rx / ry / rz angles")
            counts[index[next(iter(free))]] += 1
    return counts


def shifted_rows(rows: np.ndarray, counts: list[int]) -> np.ndarray:
    """For every row and every parameter column c: the row with column c shifted by each s_mu of
    its rule, stacked as (rows, sum_c 2 R_c, width) -> flattened to ((rows * shifts), width)."""
    blocks = []
    for c, r in enumerate(counts):
        shifts, _ = shift_rule(r)
        shifted = np.repeat(rows[:, None, :], len(shifts), axis=1)
        shifted[:, :, c] += shifts
        blocks.append(shifted)
    return np.concatenate(blocks, axis=1).reshape(-1, rows.shape[1])


def jacobian(values: np.ndarray, n_rows: int, counts: list[int]) -> np.ndarray:
    """(n_rows, n_outputs, width) from the values of `shifted_rows` ((n_rows * shifts), n_outputs)."""
    per_row = values.reshape(n_rows, -1, values.shape[-1])
    out, k = np.zeros((n_rows, values.shape[-1], len(counts))), 0
    for c, r in enumerate(counts):
        _, coefficients = shift_rule(r)
        out[:, :, c] = np.einsum("m,rmo->ro", coefficients, per_row[:, k:k + len(coefficients)])
        k += len(coefficients)
    return out
