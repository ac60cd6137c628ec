"""Parameterized preparation of an arbitrary n-qubit pure state (Mottonen et al., 2004).

The circuit has a fixed structure (uniformly controlled RY for the magnitudes, uniformly controlled
RZ for the phases, each decomposed into single rotations and CNOTs), with every rotation angle a
parameter p[i]. So one transpiled template serves every QLAM segment hand-off: `prep_angles` turns
estimated states into parameter rows, computed by the same recursion that lays out the gates.
"""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit


def n_prep_params(n: int) -> int:
    return 2 * (2**n - 1)


def _ucr(alpha: np.ndarray, controls: list[int], target: int, mirror: bool = False) -> list:
    """Uniformly controlled rotation R(alpha[c]) on `target` for control value c (bit i of c is
    controls[i]) as a list of ("r", target, angles(B,)) and ("cx", control, target):
        UCR_k(alpha) = UCR_{k-1}((a0 + a1) / 2) . CX(c, t) . UCR_{k-1}((a0 - a1) / 2) . CX(c, t)
    since X R(b) X = R(-b) for RY and RZ. The second half is mirrored so that neighbouring CNOTs on
    the same control meet and cancel (the Gray-code count of 2^k CNOTs)."""
    if not controls:
        return [("r", target, alpha[:, 0])]
    half = alpha.shape[1] // 2
    a0, a1 = alpha[:, :half], alpha[:, half:]
    c = controls[-1]
    first = _ucr((a0 + a1) / 2, controls[:-1], target)
    second = _ucr((a0 - a1) / 2, controls[:-1], target)[::-1]
    seq = first + [("cx", c, target)] + second + [("cx", c, target)]
    return seq[::-1] if mirror else seq


def _cancel_cx(seq: list) -> list:
    out: list = []
    for item in seq:
        if item[0] == "cx" and out and out[-1][0] == "cx" and out[-1][1:] == item[1:]:
            out.pop()
        else:
            out.append(item)
    return out


def _program(psi: np.ndarray) -> list:
    """(B, 2^n) states -> gate sequence with per-row angles: ("ry"|"rz", qubit, angles) / ("cx", c, t)."""
    b, d = psi.shape
    n = d.bit_length() - 1
    mags = np.abs(psi) ** 2
    phases = np.angle(psi)
    seq: list = []
    # magnitudes: qubit n-1 first, each next lower qubit controlled by the ones above it
    for t in reversed(range(n)):
        p = mags.reshape(b, -1, 2, 2**t).sum(axis=3)  # (B, 2^(n-1-t), 2): control value, bit t
        beta = 2 * np.arctan2(np.sqrt(p[:, :, 1]), np.sqrt(p[:, :, 0]))
        part = _ucr(beta, list(range(t + 1, n)), t, mirror=(n - 1 - t) % 2 == 1)
        seq += [("ry",) + g[1:] if g[0] == "r" else g for g in part]
    # phases: a diagonal, peeled off qubit 0 upwards; what is left at the end is a global phase
    w = phases
    for t in range(n):
        pairs = w.reshape(b, -1, 2)
        theta = pairs[:, :, 1] - pairs[:, :, 0]
        part = _ucr(theta, list(range(t + 1, n)), t, mirror=t % 2 == 1)
        seq += [("rz",) + g[1:] if g[0] == "r" else g for g in part]
        w = pairs.mean(axis=2)
    return _cancel_cx(seq)


def prep_angles(psi: np.ndarray) -> np.ndarray:
    """(B, 2^n) normalized states -> (B, n_prep_params) parameter rows for `prep_circuit`."""
    psi = np.atleast_2d(np.asarray(psi, dtype=complex))
    psi = psi / np.linalg.norm(psi, axis=1, keepdims=True)
    return np.stack([g[2] for g in _program(psi) if g[0] != "cx"], axis=1)


def prep_circuit(n: int, p) -> QuantumCircuit:
    """The preparation circuit on n qubits with rotation angles p[0..n_prep_params(n))."""
    probe = np.zeros((1, 2**n), dtype=complex)
    probe[0, 0] = 1
    qc = QuantumCircuit(n, name="prep")
    k = 0
    for g in _program(probe):
        if g[0] == "cx":
            qc.cx(g[1], g[2])
        else:
            getattr(qc, g[0])(p[k], g[1])
            k += 1
    return qc
