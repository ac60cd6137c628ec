"""The QLAM segment hand-off: how the state at the end of a segment is estimated and how the next
segment starts from it (docs/architecture.md, "QLAM segments").

    estimate   "pauli": the 4^n - 1 Paulis in all 3^n bases, linear inversion
               "shadows": M random Pauli bases, median-of-means (pipeline/shadows.py)
               "fit": the same M random bases, with a depolarized pure state fitted to them
               (targeted: the next segment needs one pure state, not all 4^n - 1 Paulis)
    purify     True: project to the nearest physical state and keep its dominant eigenvector
               (under depolarizing-like noise the dominant eigenvector IS the noiseless state,
               so this is error mitigation); False: re-prepare the mixed state itself, as
               `mixture` eigenvectors per sequence drawn by their eigenvalues (the next segment's
               rows and outputs are averaged over them, at the same total shots)
    prep       "mottonen": exact preparation (circuits/stateprep.py)
               "shallow": the chain ansatz of circuits/shallow_prep.py, fitted per state
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qssm.circuits.shallow_prep import fit_hea
from qssm.circuits.stateprep import prep_angles
from qssm.errors import QssmError
from qssm.pipeline.shadows import (
    basis_angles,
    fit_depolarized,
    pauli_estimates,
    random_bases,
)
from qssm.pipeline.tomography import linear_inversion, project_simplex

TOMOGRAPHY = ("pauli", "shadows", "fit")
PREPS = ("mottonen", "shallow")


@dataclass(frozen=True)
class Handoff:
    tomography: str = "pauli"
    prep: str = "mottonen"
    layers: int = 12  # shallow prep: CZ-chain layers ((n - 1) * layers two-qubit gates)
    bases: int = 64  # shadows: random Pauli bases per sequence and hand-off
    groups: int = 8  # shadows: median-of-means groups
    purify: bool = True
    mixture: int = 4  # purify off: eigenvectors re-prepared per sequence
    seed: int = 0
    purify_readout: bool = False  # each segment's last readout from the purified estimate, not the raw one

    def __post_init__(self) -> None:
        if self.tomography not in TOMOGRAPHY or self.prep not in PREPS:
            raise QssmError(f"hand-off tomography must be one of {TOMOGRAPHY} and prep one of {PREPS}")

    @property
    def prep_kind(self) -> str:
        """The template's preparation (circuits/templates.py memory_template)."""
        return "mottonen" if self.prep == "mottonen" else f"hea{self.layers}"

    @property
    def rep(self) -> int:
        return 1 if self.purify else self.mixture

    def shadow_bases(self, index: int, n: int) -> np.ndarray | None:
        """The random bases of hand-off `index` (fixed by the seed: a resumed job plans the same)."""
        if self.tomography == "pauli":
            return None
        return random_bases(self.bases, n, self.seed * 1000 + index)

    def estimate(self, paulis: np.ndarray | None, shadow_values: np.ndarray | None, bases: np.ndarray | None,
                 n: int, rep: int) -> np.ndarray:
        """Per-row Pauli expectations (tomography) or Z-strings per basis (shadows) -> (B, d, d)
        state estimates, averaged over the `rep` rows of a re-prepared mixture."""
        if shadow_values is not None:
            paulis = pauli_estimates(shadow_values, bases, self.groups)
        rho = linear_inversion(paulis, n)
        d = rho.shape[-1]
        if self.tomography == "fit":
            w, v = np.linalg.eigh(rho)
            psi, lam = fit_depolarized(shadow_values, bases, v[:, :, -1])
            rho = lam[:, None, None] * np.einsum("bi,bj->bij", psi, psi.conj()) + (1 - lam)[:, None, None] * np.eye(d) / d
        return rho.reshape(-1, rep, d, d).mean(1)

    def targets(self, rho: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(B, d, d) estimates -> the states to prepare (B * rep, d) and the dominant eigenvalue
        of each physical estimate (B,)."""
        w, v = np.linalg.eigh(rho)
        w = project_simplex(w)
        if self.purify:
            return v[:, :, -1], w[:, -1]
        picks = np.stack([rng.choice(len(wi), size=self.mixture, p=wi / wi.sum()) for wi in w])  # (B, rep)
        return v[np.arange(len(v))[:, None], :, picks].reshape(-1, v.shape[1]), w[:, -1]

    def angles(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preparation rows for the template and the fidelity each row prepares its state with."""
        if self.prep == "mottonen":
            return prep_angles(psi), np.ones(len(psi))
        return fit_hea(psi, self.layers, seed=self.seed)


def shadow_rows(rows: np.ndarray, prep_width: int, angles: np.ndarray) -> np.ndarray:
    """Every row (p..., x...) once per basis, as (p..., v..., x...) (Qiskit's parameter order)."""
    m = len(angles)
    rep = np.repeat(rows, m, axis=0)
    v = np.tile(angles, (len(rows), 1))
    return np.concatenate([rep[:, :prep_width], v, rep[:, prep_width:]], axis=1)


__all__ = ["Handoff", "basis_angles", "shadow_rows"]
