"""State estimation between QLAM segments: Pauli tomography, projection to a physical state,
and the dominant pure state that the next segment re-prepares."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from qssm.models.statevector import _pauli_tables


@lru_cache(maxsize=None)
def tomography_paulis(n: int) -> tuple[str, ...]:
    """Every non-identity n-qubit Pauli label (4^n - 1 of them; measured in 3^n bases)."""
    labels = ("".join(p) for p in itertools.product("IXYZ", repeat=n))
    return tuple(lab for lab in labels if set(lab) != {"I"})


def linear_inversion(values: np.ndarray, n: int) -> np.ndarray:
    """values (B, 4^n - 1) Pauli expectations -> (B, d, d) Hermitian, trace-one estimates
    rho = (I + sum_P <P> P) / 2^n (may have negative eigenvalues under shot noise).
    Each Pauli has one non-zero per column, P[perm[j], j] = coef[j], so rho is a scatter-add of
    (B, K, d) terms rather than a product with 4^n dense matrices (268 MB at n = 6)."""
    d = 2**n
    perm, coef = _pauli_tables(tomography_paulis(n))
    perm, coef = perm.numpy(), coef.numpy()
    flat = (perm * d + np.arange(d)[None]).reshape(-1)  # row-major index of (perm[j], j)
    rho = np.zeros((len(values), d * d), dtype=complex)
    for b in range(len(values)):
        rho[b] = np.bincount(flat, weights=(values[b][:, None] * coef).real.reshape(-1), minlength=d * d) + 1j * \
            np.bincount(flat, weights=(values[b][:, None] * coef).imag.reshape(-1), minlength=d * d)
    return (rho.reshape(-1, d, d) + np.eye(d)[None]) / d


def project_simplex(eigs: np.ndarray) -> np.ndarray:
    """Nearest probability vector to each row of eigenvalues (Euclidean; Smolin, Gambetta, Smith
    2012: the nearest physical state in 2-norm keeps the eigenvectors)."""
    b, d = eigs.shape
    s = -np.sort(-eigs, axis=1)
    css = np.cumsum(s, axis=1) - 1
    k = np.arange(1, d + 1)
    cond = s - css / k > 0
    r = d - 1 - np.argmax(cond[:, ::-1], axis=1)
    theta = css[np.arange(b), r] / (r + 1)
    return np.maximum(eigs - theta[:, None], 0)


def physical_state(rho: np.ndarray) -> np.ndarray:
    """Project (B, d, d) Hermitian estimates to the nearest density matrices."""
    w, v = np.linalg.eigh(rho)
    w = project_simplex(w)
    return np.einsum("bik,bk,bjk->bij", v, w, v.conj())
