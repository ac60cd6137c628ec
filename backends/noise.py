"""Device noise as local channels in the Pauli basis, for the density-matrix engine (backends/dmsim.py).

A k-qubit channel E is held as its Pauli transfer matrix (PTM), the real 4^k x 4^k matrix
R[i, j] = 2^-k Tr(P_i E(P_j)). A state rho = 2^-n sum_P v_P P is the real vector v_P = Tr(rho P),
and E acts as v -> R v. Pauli index: sum_q p_q 4^q with p_q in (I, X, Y, Z) = (0, 1, 2, 3) for
local qubit q, so qubit 0 is the least significant digit, as in Qiskit's little-endian matrices.

`Noise` is a device's noise on a circuit's qubits: one PTM per (instruction name, qubits) and a
readout confusion matrix per qubit. It is read from the objects Aer itself simulates
(`noise_from_aer`: a qiskit_aer NoiseModel, its QuantumErrors and ReadoutErrors), and follows
Aer's rules (checked against Aer in tests/test_dmsim.py):
  * a quantum error follows its instruction, except on `measure`, where it comes before;
  * an error for specific qubits replaces the all-qubit error of the same instruction;
  * a readout error flips the recorded bit only: the post-measurement state is the true outcome's;
  * delays are ideal unless the model has an error for "delay" or a custom noise pass (Aer runs
    those passes, e.g. thermal relaxation on delays, on circuits that contain delays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
from qiskit.quantum_info import Operator

_SIGMA = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=complex)


@lru_cache(maxsize=None)
def paulis(k: int) -> np.ndarray:
    """(4^k, 2^k, 2^k) Pauli matrices; index sum_q p_q 4^q, matrix bit q = qubit q."""
    out = np.ones((1, 1, 1), dtype=complex)
    for _ in range(k):  # each new qubit is more significant: it goes on the left of the kron
        out = np.einsum("pab,rcd->rpcadb", out, _SIGMA)  # kron(sigma_r, P_p)
        out = out.reshape(out.shape[0] * out.shape[1], out.shape[2] * out.shape[3], -1)
    return out


def ptm(kraus) -> np.ndarray:
    """The PTM of a channel given by Kraus matrices (a unitary is one Kraus matrix)."""
    ks = np.asarray(kraus, dtype=complex)
    if ks.ndim == 2:
        ks = ks[None]
    k = int(np.log2(ks.shape[-1]))
    p = paulis(k)
    # R[i, j] = 2^-k sum_a Tr(P_i K_a P_j K_a^dagger)
    images = np.einsum("aux,jxy,avy->juv", ks, p, ks.conj())  # E(P_j)
    return np.einsum("ivu,juv->ij", p, images).real / 2**k


RESET = np.outer([1.0, 0, 0, 1], [1.0, 0, 0, 0])  # rho -> |0><0| Tr(rho)


def apply_ptm(states: np.ndarray, r: np.ndarray, positions, n: int) -> np.ndarray:
    """Rows of `states` (N, 4^n) with the PTM r applied on qubits `positions` (r's qubit i is
    positions[i])."""
    m = len(positions)
    t = states.reshape((len(states),) + (4,) * n)  # axis 1 + (n-1-q) holds qubit q
    axes = [1 + n - 1 - positions[i] for i in reversed(range(m))]
    out = np.tensordot(t, r.reshape((4,) * (2 * m)), axes=(axes, list(range(m, 2 * m))))
    return np.moveaxis(out, list(range(out.ndim - m, out.ndim)), axes).reshape(len(states), -1)


def compose(ops, n: int) -> np.ndarray:
    """The PTM on n qubits of (PTM, qubit positions) pairs applied in order."""
    images = np.eye(4**n)  # rows: images of the basis vectors, i.e. the transpose of the PTM
    for r, positions in ops:
        images = apply_ptm(images, r, positions, n)
    return images.T


def _instruction_ptm(op) -> np.ndarray:
    if op.name == "reset":
        return RESET
    if op.name == "kraus":
        return ptm(op.params)
    return ptm(Operator(op).data)


_ERRORS: dict[int, tuple] = {}  # id(QuantumError) -> (error, PTM); the error is kept so its id stays unique


def error_ptm(error) -> np.ndarray:
    """The PTM of an Aer QuantumError: its circuits' PTMs weighted by their probabilities
    (30x faster than error.to_quantumchannel(); tests compare the two)."""
    hit = _ERRORS.get(id(error))
    if hit is not None and hit[0] is error:
        return hit[1]
    n = error.num_qubits
    total = np.zeros((4**n, 4**n))
    for circuit, p in zip(error.circuits, error.probabilities):
        total += p * compose([(_instruction_ptm(i.operation), [circuit.find_bit(q).index for q in i.qubits])
                              for i in circuit.data], n)
    if len(_ERRORS) > 10_000:
        _ERRORS.clear()
    _ERRORS[id(error)] = (error, total)
    return total


def confusion_matrix(probabilities) -> np.ndarray:
    """Aer's ReadoutError probabilities: row = true outcome, column = recorded outcome."""
    m = np.asarray(probabilities, dtype=float)
    if m.shape != (2, 2):
        raise NotImplementedError(f"only single-qubit readout errors are supported, got a {m.shape} matrix")
    return m


@dataclass(frozen=True)
class Noise:
    """Local channels (PTMs) per (instruction, qubits) on the circuit's qubits, and readout."""

    num_qubits: int
    errors: dict[tuple[str, tuple[int, ...]], np.ndarray] = field(default_factory=dict)
    default_errors: dict[str, np.ndarray] = field(default_factory=dict)  # all-qubit errors
    readout: dict[int, np.ndarray] = field(default_factory=dict)  # qubit -> P[true, recorded]
    default_readout: np.ndarray | None = None
    passes: Callable | None = None  # circuit -> circuit (Aer's custom noise passes), for delays

    def channel(self, name: str, qubits: tuple[int, ...]) -> np.ndarray | None:
        """The PTM applied with `name` on `qubits` (after it; before it for measure), or None."""
        local = self.errors.get((name, tuple(qubits)))
        if local is not None:
            return local
        default = self.default_errors.get(name)
        if default is not None and default.shape[0] == 4 ** len(qubits):
            return default
        return None

    def confusion(self, qubit: int) -> np.ndarray | None:
        """P[true, recorded] for a measurement of `qubit`, or None (ideal readout)."""
        return self.readout.get(qubit, self.default_readout)


def noise_from_aer(noise_model, num_qubits: int) -> Noise:
    """The channels of a qiskit_aer NoiseModel on qubits 0..num_qubits-1.

    Reads the model's tables of QuantumErrors and ReadoutErrors (Aer keeps them in private
    attributes; tests compare every value against Aer's own simulation)."""
    errors = {}
    for name, by_qubits in noise_model._local_quantum_errors.items():
        for qubits, error in by_qubits.items():
            if all(q < num_qubits for q in qubits):
                errors[(name, tuple(qubits))] = error_ptm(error)
    defaults = {name: error_ptm(error) for name, error in noise_model._default_quantum_errors.items()}
    readout = {}
    for qubits, error in noise_model._local_readout_errors.items():
        if len(qubits) != 1:
            raise NotImplementedError(f"correlated readout error on qubits {qubits} is not supported")
        if qubits[0] < num_qubits:
            readout[qubits[0]] = confusion_matrix(error.probabilities)
    default_ro = noise_model._default_readout_error
    default_ro = confusion_matrix(default_ro.probabilities) if default_ro is not None else None
    manager = noise_model._pass_manager()
    return Noise(num_qubits, errors, defaults, readout, default_ro, manager.run if manager is not None else None)
