"""Raw samples -> outcome histograms, the one form every backend returns for measured circuits:
(bindings, 2**num_clbits) counts with clbit k = bit k of the outcome integer."""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit


def histograms(outcomes: np.ndarray, num_clbits: int) -> np.ndarray:
    """(bindings, shots) outcome integers -> (bindings, 2**num_clbits) int64 counts."""
    outcomes = np.asarray(outcomes, dtype=np.int64)
    n, size = outcomes.shape[0], 2**num_clbits
    flat = (np.arange(n)[:, None] * size + outcomes).reshape(-1)
    return np.bincount(flat, minlength=n * size).reshape(n, size)


def bitarray_outcomes(bitarray) -> np.ndarray:
    """A Qiskit BitArray of shape (bindings,) or () -> (bindings, shots) integers (bit k = clbit k
    of its register)."""
    packed = bitarray.array.astype(np.int64)  # (..., shots, bytes), big-endian bytes
    ints = (packed << (8 * np.arange(packed.shape[-1])[::-1])).sum(-1)
    return ints.reshape(-1, bitarray.num_shots)


def register_outcomes(circuit: QuantumCircuit, data) -> np.ndarray:
    """A SamplerV2 pub's DataBin (one BitArray per classical register) -> (bindings, shots)
    integers over the circuit's clbits in circuit order."""
    total = None
    for creg in circuit.cregs:
        ints = bitarray_outcomes(getattr(data, creg.name))
        positions = [circuit.find_bit(b).index for b in creg]
        if positions == list(range(positions[0], positions[0] + len(positions))):
            part = ints << positions[0]
        else:
            part = np.zeros_like(ints)
            for k, p in enumerate(positions):
                part |= ((ints >> k) & 1) << p
        total = part if total is None else total | part
    return total


def broadcast(counts: np.ndarray, rows: int) -> np.ndarray:
    """Counts of a parameter-free circuit (sampled once) for every row of its batch."""
    return np.repeat(counts.reshape(1, -1), rows, axis=0) if counts.shape[0] == 1 and rows != 1 else counts


def sample_counts(probs, shots: int, seed, first_row: int = 0) -> np.ndarray:
    """(B, outcomes) int64 histograms of `shots` draws from each row's distribution.

    Reproducible by row: row i draws from numpy's PCG64 seeded with SeedSequence((*seed, first_row
    + i)), whatever else is in the batch, so a batch split into chunks (each passing its first row
    index, e.g. on a cluster) gives exactly the counts of the whole batch."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    p /= p.sum(axis=1, keepdims=True)
    base = tuple(np.atleast_1d(seed if seed is not None else 0).tolist())
    out = np.zeros(p.shape, dtype=np.int64)
    for i, row in enumerate(p):
        out[i] = np.random.Generator(np.random.PCG64(np.random.SeedSequence((*base, first_row + i)))).multinomial(shots, row)
    return out
