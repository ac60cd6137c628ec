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


def _error_ptm(error) -> np.ndarray:
    from qiskit.quantum_info import Kraus

    return ptm(Kraus(error.to_quantumchannel()).data)


def noise_from_aer(noise_model, num_qubits: int) -> Noise:
    """The channels of a qiskit_aer NoiseModel on qubits 0..num_qubits-1.

    Reads the model's tables of QuantumErrors and ReadoutErrors (Aer keeps them in private
    attributes; tests compare every value against Aer's own simulation)."""
    cache: dict[int, np.ndarray] = {}

    def conv(error):
        if id(error) not in cache:
            cache[id(error)] = _error_ptm(error)
        return cache[id(error)]

    errors = {}
    for name, by_qubits in noise_model._local_quantum_errors.items():
        for qubits, error in by_qubits.items():
            if all(q < num_qubits for q in qubits):
                errors[(name, tuple(qubits))] = conv(error)
    defaults = {name: conv(error) for name, error in noise_model._default_quantum_errors.items()}
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
