"""Classical shadows for QLAM hand-offs: randomized Pauli measurements with median-of-means
(Huang, Kueng, Preskill 2020) instead of all 3^n Pauli bases (docs/architecture.md, "QLAM segments").

Each hand-off measures the state in M random Pauli bases (the same M for every sequence, so the rows
of a batch share circuits). The basis is a per-row parameter: the shadow template ends in RZ(v) RY(v)
per qubit and measures the 2^n - 1 Z-strings, which the measure stage reads as ONE group (one
measured circuit per row). The Z-string of support S in basis b is the Pauli with b's letters on S.

Estimator of a Pauli P of support S: 3^|S| <P>_b averaged over the bases b that agree with P on S
(0 for the others) -- unbiased over the random bases -- with the bases split into K groups and the
median of the K group means taken per Pauli (robust to the heavy tail of high-weight terms).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from qssm.models.statevector import pauli_expectations
from qssm.pipeline.tomography import tomography_paulis

LETTERS = "XYZ"
# (RY, RZ) angles that turn each basis into Z: RY(-pi/2) maps |+> to |0>; RZ(-pi/2) maps |+i> to |+>
ANGLES = {"X": (-math.pi / 2, 0.0), "Y": (-math.pi / 2, -math.pi / 2), "Z": (0.0, 0.0)}


@lru_cache(maxsize=None)
def zstrings(n: int) -> tuple[str, ...]:
    """Z-string labels for support masks 1 .. 2^n - 1 (Qiskit order, qubit 0 rightmost)."""
    return tuple("".join("Z" if m >> q & 1 else "I" for q in reversed(range(n))) for m in range(1, 2**n))


def random_bases(m: int, n: int, seed: int) -> np.ndarray:
    """(m, n) basis letters as indices into LETTERS, one row per measured basis."""
    return np.random.default_rng(seed).integers(0, 3, size=(m, n))


def basis_angles(bases: np.ndarray) -> np.ndarray:
    """(m, n) basis indices -> (m, 2n) template angles v: v[2q] = RY, v[2q+1] = RZ of qubit q."""
    table = np.array([ANGLES[c] for c in LETTERS])  # (3, 2)
    return table[bases].reshape(len(bases), -1)


@lru_cache(maxsize=8)
def _pauli_support(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every tomography Pauli: support mask (4^n - 1,) and letter per qubit (4^n - 1, n), -1 = I."""
    labels = tomography_paulis(n)
    letters = np.full((len(labels), n), -1)
    for k, label in enumerate(labels):
        for q, c in enumerate(reversed(label)):
            if c != "I":
                letters[k, q] = LETTERS.index(c)
    mask = ((letters >= 0) * (1 << np.arange(n))).sum(1)
    return mask, letters


def shadow_weights(bases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, 4^n - 1) weights 3^|S| [basis agrees with P on S] and each Pauli's Z-string column."""
    n = bases.shape[1]
    mask, letters = _pauli_support(n)
    agree = (letters[None] < 0) | (letters[None] == bases[:, None, :])  # (M, K, n)
    weight = np.where(agree.all(2), 3.0 ** (letters >= 0).sum(1)[None], 0.0)
    return weight, mask - 1


def pauli_estimates(values: np.ndarray, bases: np.ndarray, groups: int = 1) -> np.ndarray:
    """values (R, M, 2^n - 1): each row's Z-string expectations in each basis -> (R, 4^n - 1)
    shadow estimates of every tomography Pauli, median of `groups` means over the bases."""
    r, m, _ = values.shape
    weight, col = shadow_weights(bases)
    groups = max(1, min(groups, m))
    split = np.array_split(np.arange(m), groups)
    out = np.empty((r, weight.shape[1]))
    for lo in range(0, r, 8):  # (8, M, 4^n) at a time: 17 MB at n = 6, M = 64
        v = values[lo:lo + 8][:, :, col] * weight[None]
        means = np.stack([v[:, g].mean(1) for g in split])
        out[lo:lo + 8] = np.median(means, axis=0)
    return out


def basis_labels(bases: np.ndarray) -> tuple[str, ...]:
    """The Pauli each (basis, Z-string) pair measures, basis-major (M * (2^n - 1) labels)."""
    n = bases.shape[1]
    out = []
    for b in bases:
        for m in range(1, 2**n):
            out.append("".join(LETTERS[b[q]] if m >> q & 1 else "I" for q in reversed(range(n))))
    return tuple(out)


def fit_depolarized(values: np.ndarray, bases: np.ndarray, init: np.ndarray, steps: int = 300
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Targeted estimation: what the next segment needs is one pure state, so fit
    rho = lam |psi><psi| + (1 - lam) I/d straight to the measured bases (least squares over every
    Z-string of every basis: <P>_rho = lam <P>_psi), starting from `init` (R, d). Returns psi (R, d)
    and lam (R,). Depolarizing noise only shrinks lam, so psi is the noiseless state's estimate."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical on resume (see circuits/shallow_prep.py fit_hea)
    try:
        return _fit_depolarized(values, bases, init, steps)
    finally:
        torch.set_num_threads(saved)


def _fit_depolarized(values, bases, init, steps):
    labels = basis_labels(bases)
    y = torch.as_tensor(values.reshape(len(values), -1), dtype=torch.float64)
    psi0 = torch.as_tensor(init, dtype=torch.complex128)
    with torch.enable_grad():
        z = torch.view_as_real(psi0).clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.02)
        for _ in range(steps):
            opt.zero_grad()
            psi = torch.view_as_complex(z)
            psi = psi / psi.norm(dim=1, keepdim=True)
            e = pauli_expectations(psi, labels)
            lam = ((y * e).sum(1) / (e * e).sum(1).clamp_min(1e-12)).clamp(0, 1).detach()
            ((y - lam[:, None] * e) ** 2).sum().backward()
            opt.step()
    with torch.no_grad():
        psi = torch.view_as_complex(z)
        psi = psi / psi.norm(dim=1, keepdim=True)
        e = pauli_expectations(psi, labels)
        lam = ((y * e).sum(1) / (e * e).sum(1).clamp_min(1e-12)).clamp(0, 1)
    return np.round(psi.numpy(), 12), lam.numpy()
