"""Expectation values from samples: qubit-wise-commuting measurement groups, basis changes in
gates every IBM ISA target has (rz, sx), and parity estimates with their standard errors.

Every Pauli term is estimated from the group that measures its basis; a group of a batch is one
circuit per binding, sampled `shots` times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.quantum_info import SparsePauliOp


@dataclass
class Group:
    basis: list[str]  # per qubit (index = qubit): "I", "X", "Y" or "Z"
    members: list[tuple[int, int]] = field(default_factory=list)  # (observable, term) it estimates

    @property
    def support(self) -> list[int]:
        return [q for q, p in enumerate(self.basis) if p != "I"]


def _term_basis(label: str) -> list[str]:
    return list(reversed(label))  # Qiskit labels put qubit 0 rightmost


def measurement_groups(observables: list[SparsePauliOp]) -> list[Group]:
    """Greedy qubit-wise-commuting grouping of every non-identity term (first fit)."""
    groups: list[Group] = []
    for i, obs in enumerate(observables):
        for j, label in enumerate(obs.paulis.to_labels()):
            basis = _term_basis(label)
            if set(basis) == {"I"}:
                continue
            for g in groups:
                if all(a == "I" or b == "I" or a == b for a, b in zip(g.basis, basis)):
                    g.basis = [a if a != "I" else b for a, b in zip(g.basis, basis)]
                    g.members.append((i, j))
                    break
            else:
                groups.append(Group(basis, [(i, j)]))
    return groups


def with_measurement(circuit: QuantumCircuit, group: Group) -> QuantumCircuit:
    """Rotate each support qubit's basis to Z (X: rz sx rz = H; Y: sx rz, mapping Y to Z) and
    measure it into register "meas" (bit k = k-th support qubit)."""
    qc = circuit.copy()
    support = group.support
    creg = ClassicalRegister(len(support), "meas")
    qc.add_register(creg)
    for q in support:
        if group.basis[q] == "X":
            qc.rz(math.pi / 2, q)
            qc.sx(q)
            qc.rz(math.pi / 2, q)
        elif group.basis[q] == "Y":
            qc.sx(q)
            qc.rz(math.pi / 2, q)
    for k, q in enumerate(support):
        qc.measure(q, creg[k])
    return qc


def parity_masks(observables: list[SparsePauliOp], groups: list[Group]) -> list[list[tuple[int, int, int, complex]]]:
    """Per group: (observable, term, bit mask over the group's measured bits, coefficient)."""
    out = []
    for g in groups:
        pos = {q: k for k, q in enumerate(g.support)}
        rows = []
        for i, j in g.members:
            label = observables[i].paulis.to_labels()[j]
            mask = sum(1 << pos[q] for q, p in enumerate(_term_basis(label)) if p != "I")
            rows.append((i, j, mask, complex(observables[i].coeffs[j])))
        out.append(rows)
    return out


def expectations(
    outcomes: list[np.ndarray], observables: list[SparsePauliOp], groups: list[Group], shots: int, mitigate=None
) -> tuple[np.ndarray, np.ndarray]:
    """outcomes[g]: (bindings, shots) integer outcomes of group g (bit k = k-th support qubit).
    Returns (values, stderr), each (bindings, n_observables). `mitigate(g, probs) -> quasi-probs`
    may correct each binding's outcome distribution (readout mitigation)."""
    n_bind = outcomes[0].shape[0] if outcomes else 1
    values = np.zeros((n_bind, len(observables)))
    var = np.zeros((n_bind, len(observables)))
    for i, obs in enumerate(observables):  # identity terms are exact
        for j, label in enumerate(obs.paulis.to_labels()):
            if set(label) == {"I"}:
                values[:, i] += obs.coeffs[j].real
    for g, (group, rows) in enumerate(zip(groups, parity_masks(observables, groups))):
        width = len(group.support)
        counts = np.stack([np.bincount(o, minlength=2**width) for o in outcomes[g]]) / shots
        if mitigate is not None:
            counts = mitigate(group, counts)
        idx = np.arange(2**width)
        for i, _, mask, coef in rows:
            sign = 1.0 - 2.0 * (np.bitwise_count(idx & mask) & 1)  # bitwise_count is uint8
            m = counts @ sign
            values[:, i] += coef.real * m
            var[:, i] += coef.real**2 * np.clip(1 - m**2, 0, None) / shots
    return values, np.sqrt(var)


def bitarray_outcomes(bitarray) -> np.ndarray:
    """A Qiskit BitArray of shape (bindings,) -> (bindings, shots) integers (bit k = clbit k)."""
    packed = bitarray.array.astype(np.int64)  # (..., shots, bytes), big-endian bytes
    ints = (packed << (8 * np.arange(packed.shape[-1])[::-1])).sum(-1)
    return ints.reshape(-1, bitarray.num_shots)
