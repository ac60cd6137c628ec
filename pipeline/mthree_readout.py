"""The readout stage with mthree's correction: `[mitigation] readout = "mthree"` on ibm: and aer:
targets (docs/architecture.md, "mitigate").

Calibration is the readout stage's own: the same two circuits per round trip (all 0, all 1 on the
measured physical qubits, mthree's "marginal" method), sent as an ordinary batch through dispatch
(job store, retries, cost), so the preflight prices exactly what is sent and the store keeps it.
Their per-qubit p(1|0), p(0|1) become mthree's 2x2 calibration matrices (`cals_from_matrices`),
and mthree's M3 solver corrects each outcome histogram in the subspace of the bitstrings observed
(instead of qssm's full tensored inverse). The result is handed on as quasi-counts with the same
calibration table, so the measure stage's standard errors widen as for qssm's own correction.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qssm.errors import QssmError
from qssm.pipeline.mitigation import Readout, measured_clbits
from qssm.types import BatchResult, CircuitBatch

FAMILIES = ("ibm", "aer")  # backend name prefixes whose results mthree is made for (Qiskit counts)


class MthreeReadout(Readout):
    """The readout stage (pipeline/mitigation.py) with mthree's M3 correction of the counts."""

    name = "readout"
    method = "mthree"

    @classmethod
    def from_spec(cls, spec, ctx):
        return cls(ctx.backend, spec.mitigation.readout_shots, ctx.tracker) if spec.mitigation.readout == cls.method else None

    @classmethod
    def validate(cls, spec, backend, model=None) -> None:
        if spec.mitigation.readout == cls.method and backend.name.split(":")[0] not in FAMILIES:
            raise QssmError(f'[mitigation] readout = "mthree" runs on ibm: and aer: targets, not {backend.name}; '
                            "set readout = true (qssm's own correction) for this target")

    def _mitigator(self):
        import mthree  # imported on use: it loads qiskit-ibm-runtime (about 1.4 s) for jobs that ask for it

        mit = mthree.M3Mitigation()
        cals = [None] * (max(self.table, default=-1) + 1)
        for q, (p10, p01) in self.table.items():  # column = prepared, row = measured (mthree's convention)
            cals[q] = np.array([[1 - p10, p01], [p10, 1 - p01]], dtype=np.float32)
        mit.cals_from_matrices(cals)
        return mit

    def _correct(self, batch: CircuitBatch, result: BatchResult) -> BatchResult:
        if not (batch.sampled and batch.shots) or not result.counts:
            return result
        mit = self._mitigator()
        counts, used = [], {}
        for c, h in zip(batch.circuits, result.counts):
            clbits = measured_clbits(c)  # a cut subexperiment may leave some clbits unmeasured (always 0)
            if any(q not in self.table for q in clbits.values()):
                raise QssmError(f"readout = \"mthree\": a qubit of {c.name!r} has no calibration; "
                                "set [mitigation] readout = true for this job")
            used.update({q: list(self.table[q]) for q in clbits.values()})
            counts.append(self._quasi_counts(mit, np.asarray(h, dtype=np.float64), clbits))
        return dataclasses.replace(result, counts=tuple(counts), readout=used, readout_shots=self.shots or batch.shots)

    @staticmethod
    def _quasi_counts(mit, hist: np.ndarray, clbits: dict[int, int]) -> np.ndarray:
        """(bindings, 2**num_clbits) histograms -> M3-corrected quasi-counts (same totals). The
        measured clbits are corrected; outcomes are grouped by the bits no measurement wrote (always
        0 in practice), each group corrected on its own."""
        bits = sorted(clbits)
        if not bits:  # nothing measured, nothing to correct
            return hist.copy()
        qubits = [clbits[k] for k in bits]  # bit j of mthree's bitstring (rightmost = 0) -> its physical qubit
        unmeasured = sum(1 << k for k in range(int(np.log2(hist.shape[1]))) if k not in clbits)
        groups = []  # (binding, unmeasured bits' value, {bitstring: count})
        for row, h in enumerate(hist):
            by_rest: dict[int, dict[str, float]] = {}
            for i in np.flatnonzero(h):
                key = "".join("1" if i >> k & 1 else "0" for k in reversed(bits))
                by_rest.setdefault(int(i) & unmeasured, {})[key] = float(h[i])
            groups += [(row, rest, d) for rest, d in by_rest.items()]
        out = np.zeros_like(hist)
        if groups:
            quasi = mit.apply_correction([d for _, _, d in groups], qubits)
            for (row, rest, d), q in zip(groups, quasi):
                total = sum(d.values())
                for key, p in q.items():
                    out[row, rest | sum(1 << k for k, b in zip(reversed(bits), key) if b == "1")] = p * total
        return out

    def report(self, totals: dict) -> dict:
        return {**super().report(totals), "method": self.method}
