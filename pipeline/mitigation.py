"""mitigation: readout calibration + correction and zero-noise extrapolation, as pipeline stages
(docs/architecture.md, "mitigate"). Both apply the same way on every backend: their extra circuits
are ordinary batches that go through dispatch (job store, retries, cost), and their corrections act
on what every backend returns.

ZNE ("zne", before "measure"): the two-qubit gates of each ISA circuit are folded G -> G (G G)^k
(cz, ecr, cx are self-inverse, so the folded circuit stays native and needs no new transpile); noise
on two-qubit gates scales by 1, 3, 5. The zero-noise estimate is a fixed linear combination
sum_i g_i y_i of the scaled values (Richardson: the polynomial through all points; linear: least
squares), so standard errors propagate exactly as sqrt(sum_i g_i^2 s_i^2). At a budget of S shots
per circuit the shots are split over the scales in proportion to |g_i|, which minimizes that
variance at equal total shots.

Readout ("readout", last before dispatch): for the physical qubits a round trip's measured circuits
read, two calibration circuits (all 0, all 1) join the round trip; p(1|0) and p(0|1) per qubit come
from their outcome histograms. Qubits are modelled independently (tensored confusion matrices,
cached per qubit for the run). The post-processing applies the inverse of each measured clbit's 2x2
confusion matrix to every outcome histogram (quasi-counts), and hands the table on in the result's
meta so that standard errors include the correction's amplification and the calibration's noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit

from qssm.errors import QssmError
from qssm.pipeline.stages import SpecStage, map_batches
from qssm.types import BatchResult, CircuitBatch, merged

SELF_INVERSE_2Q = frozenset({"cz", "ecr", "cx", "cy", "swap", "ch"})
EXTRAPOLATIONS = ("richardson", "linear")


# -- readout ---------------------------------------------------------------------------------------
def measured_clbits(circuit: QuantumCircuit) -> dict[int, int]:
    """clbit index -> the circuit qubit it last recorded."""
    out = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            out[circuit.find_bit(inst.clbits[0]).index] = circuit.find_bit(inst.qubits[0]).index
    return out


def confusion_inverse(p10: float, p01: float, qubit: int) -> np.ndarray:
    a = np.array([[1 - p10, p01], [p10, 1 - p01]])  # column = prepared, row = measured
    if abs(np.linalg.det(a)) < 1e-6:
        raise QssmError(f"readout calibration of qubit {qubit} is singular (p(1|0)={p10:.3f}, p(0|1)={p01:.3f}); "
                        "recalibrate or disable [mitigation] readout")
    return np.linalg.inv(a)


def correct_counts(counts: np.ndarray, inverses: dict[int, np.ndarray], num_clbits: int) -> np.ndarray:
    """Apply each clbit's inverse confusion to (bindings, 2**num_clbits) histograms (quasi-counts:
    the total is kept, entries may turn slightly negative)."""
    t = np.asarray(counts, dtype=np.float64).reshape((counts.shape[0],) + (2,) * num_clbits)
    for k, inv in inverses.items():
        axis = num_clbits - k  # C order: the last axis is clbit 0
        t = np.moveaxis(np.tensordot(inv, t, axes=([1], [axis])), 0, axis)
    return t.reshape(counts.shape[0], -1)


def calibration_circuit(num_qubits: int, qubits: tuple[int, ...], state: int, basis: set[str] | None) -> QuantumCircuit:
    """Prepare |state> on `qubits` (x, or sx sx where a target lacks x) and measure each into clbit k."""
    qc = QuantumCircuit(num_qubits, name=f"readout_cal{state}")
    creg = ClassicalRegister(len(qubits), "meas")
    qc.add_register(creg)
    for q in qubits if state else ():
        if basis is None or "x" in basis:
            qc.x(q)
        else:
            qc.sx(q)
            qc.sx(q)
    for k, q in enumerate(qubits):
        qc.measure(q, creg[k])
    return qc


def marginal_ones(counts: np.ndarray, k: int) -> float:
    """Fraction of outcomes with clbit k = 1 (one row of counts)."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    idx = np.arange(len(c))
    return float(c[(idx >> k) & 1 == 1].sum() / max(c.sum(), 1))


class Readout(SpecStage):
    """The readout stage (module docstring)."""

    name = "readout"

    @classmethod
    def from_spec(cls, spec, ctx):
        # readout = "mthree" is pipeline/mthree_readout.py's stage
        return cls(ctx.backend, spec.mitigation.readout_shots, ctx.tracker) if spec.mitigation.readout is True else None

    @classmethod
    def validate(cls, spec, backend, model=None) -> None:
        if spec.mitigation.readout and not spec.backend.circuit_shots:
            raise QssmError("[mitigation] readout needs sampled results: set [backend] shots > 0")

    def __init__(self, backend, shots: int = 0, tracker=None):
        self.backend = backend
        self.shots = shots  # calibration shots per circuit; 0 = the measured batches' shots
        self.tracker = tracker
        self.table: dict[int, tuple[float, float]] = {}  # physical qubit -> p(1|0), p(0|1)
        # qubits whose calibration a round trip already carries: known when the batches are planned,
        # not when results return, so that pricing (transform only, no results) plans what dispatch sends
        self.planned: set[int] = set()
        self.calibration_sets = 0

    def _calibration(self, width: int, qubits: tuple[int, ...], shots: int) -> CircuitBatch:
        b = self.backend
        basis = set(b.target.operation_names) if b.target is not None else None
        circuits = tuple(calibration_circuit(width, qubits, s, basis) for s in (0, 1))
        key = _hash("qssm-readout-cal-v2", b.name, b.calibration, width, list(qubits), shots)
        return CircuitBatch(circuits, np.zeros((1, 0)), shots=shots, key=key, meta={"template": "readout_cal"},
                            calibration=tuple(qubits))

    def __call__(self, batches: list[CircuitBatch]):
        need: dict[tuple[int, tuple[int, ...]], int] = {}  # (width, uncalibrated qubits) -> shots
        for batch in batches:
            if not (batch.sampled and batch.shots):
                continue
            for c in batch.circuits:
                missing = tuple(sorted({q for q in measured_clbits(c).values() if q not in self.planned}))
                if missing:
                    need.setdefault((c.num_qubits, missing), self.shots or batch.shots)
        # one calibration per width covering every qubit it needs
        merged: dict[int, set[int]] = {}
        for (width, qubits), _ in need.items():
            merged.setdefault(width, set()).update(qubits)
        cal = [self._calibration(w, tuple(sorted(qs)), max(s for (ww, _), s in need.items() if ww == w))
               for w, qs in merged.items()]
        if self.tracker is not None and cal:
            self.tracker.add(calibration_circuits=sum(len(c.circuits) for c in cal))
        self.planned.update(q for c in cal for q in c.calibration)
        n = len(batches)

        def post(results: list[BatchResult]) -> list[BatchResult]:
            for c, r in zip(cal, results[n:]):
                self.calibration_sets += 1
                for k, q in enumerate(c.calibration):  # clipped: never flips a qubit's meaning
                    p10 = float(np.clip(marginal_ones(r.counts[0], k), 0.0, 0.49))
                    p01 = float(np.clip(1 - marginal_ones(r.counts[1], k), 0.0, 0.49))
                    self.table[q] = (p10, p01)
            return [self._correct(b, r) for b, r in zip(batches, results[:n])]

        return list(batches) + cal, post

    def _correct(self, batch: CircuitBatch, result: BatchResult) -> BatchResult:
        if not (batch.sampled and batch.shots) or not result.counts:
            return result
        counts, used = [], {}
        for c, h in zip(batch.circuits, result.counts):
            clbits = measured_clbits(c)
            inv = {k: confusion_inverse(*self.table[q], q) for k, q in clbits.items() if q in self.table}
            used.update({q: list(self.table[q]) for q in clbits.values() if q in self.table})
            counts.append(correct_counts(h, inv, c.num_clbits))
        return dataclasses.replace(result, counts=tuple(counts), readout=used, readout_shots=self.shots or batch.shots)

    def report(self, totals: dict) -> dict:
        cal_exec, cal_shots = totals["calibration_executions"], totals["calibration_shots"]
        total_exec, total_shots = max(totals["executions"], 1), max(totals["total_shots"], 1)
        return {"setting": "readout", "circuits": cal_exec, "shots": cal_shots,
                "circuit_multiplier": total_exec / max(total_exec - cal_exec, 1),
                "shot_multiplier": total_shots / max(total_shots - cal_shots, 1),
                "calibrated_qubits": len(self.table), "calibration_sets": self.calibration_sets}


# -- ZNE -------------------------------------------------------------------------------------------
def fold_two_qubit_gates(circuit: QuantumCircuit, scale: int) -> QuantumCircuit:
    """Each two-qubit gate G -> G (G G)^((scale-1)/2), barriers between copies so no later pass or
    runtime merges them. Only self-inverse native gates are folded (the circuit stays ISA)."""
    if scale == 1:
        return circuit
    if scale < 1 or scale % 2 == 0:
        raise QssmError(f"ZNE scale factors must be odd integers >= 1, got {scale}; fix [mitigation] zne_scales")
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        out.append(inst)
        op = inst.operation
        if op.num_qubits == 2 and op.name != "barrier":
            if op.name not in SELF_INVERSE_2Q or op.params:
                raise QssmError(f"ZNE cannot fold two-qubit gate {op.name!r} (not self-inverse); "
                                "disable [mitigation] zne for this target")
            for _ in range(scale - 1):
                out.barrier(*inst.qubits)
                out.append(inst)
    return out


def extrapolation_weights(scales: list[float], method: str) -> np.ndarray:
    """g such that the zero-noise estimate is sum_i g_i y(scale_i)."""
    x = np.asarray(scales, dtype=np.float64)
    if method == "richardson":  # Lagrange polynomial through every point, evaluated at 0
        return np.array([np.prod([x[j] / (x[j] - x[i]) for j in range(len(x)) if j != i]) for i in range(len(x))])
    if method == "linear":  # ordinary least squares line, intercept
        design = np.stack([np.ones_like(x), x], axis=1)
        return np.linalg.pinv(design)[0]
    raise QssmError(f"unknown extrapolation {method!r}; set [mitigation] extrapolation to one of {', '.join(EXTRAPOLATIONS)}")


def split_shots(total: int | None, weights: np.ndarray) -> list[int | None]:
    """Shots per scale summing to `total`, proportional to |weight| (at least 1 each)."""
    if not total:
        return [None] * len(weights)
    w = np.abs(weights) / np.abs(weights).sum()
    shots = np.maximum(1, np.floor(w * total)).astype(int)
    for i in np.argsort(-(w * total - np.floor(w * total)))[: max(0, total - int(shots.sum()))]:
        shots[i] += 1  # largest remainders first
    return [int(s) for s in shots]


def parse_scales(text: str) -> list[int]:
    try:
        scales = [int(s) for s in str(text).replace(" ", "").split(",") if s]
    except ValueError:
        raise QssmError(f'[mitigation] zne_scales must list odd integers like "1,3,5", got {text!r}') from None
    if len(scales) < 2 or len(set(scales)) != len(scales) or any(s < 1 or s % 2 == 0 for s in scales):
        raise QssmError(f'[mitigation] zne_scales needs >= 2 distinct odd integers >= 1 like "1,3,5", got {text!r}')
    return sorted(scales)


class ZNE(SpecStage):
    """The zne stage (module docstring)."""

    name = "zne"

    @classmethod
    def from_spec(cls, spec, ctx):
        m = spec.mitigation
        return cls(parse_scales(m.zne_scales), m.extrapolation, ctx.tracker) if m.zne else None

    @classmethod
    def validate(cls, spec, backend, model=None) -> None:
        m, shots = spec.mitigation, spec.backend.circuit_shots
        if m.extrapolation not in EXTRAPOLATIONS:
            raise QssmError(f"[mitigation] extrapolation must be one of {', '.join(EXTRAPOLATIONS)}, "
                            f"got {m.extrapolation!r}")
        scales = parse_scales(m.zne_scales)
        if m.zne and shots and shots < len(scales):
            raise QssmError(f"ZNE splits {shots} shots over {len(scales)} scales; raise [backend] shots")
        if m.zne and spec.split.cutting == "force":
            raise QssmError('ZNE extrapolates expectation values and cut circuits return raw samples: disable '
                            '[mitigation] zne or set [split] cutting = "auto"')

    def __init__(self, scales: list[int], extrapolation: str = "richardson", tracker=None):
        self.scales = list(scales)
        self.extrapolation = extrapolation
        self.weights = extrapolation_weights(self.scales, extrapolation)
        self.tracker = tracker
        self._folded: dict[tuple[int, int], tuple[QuantumCircuit, QuantumCircuit]] = {}

    def _fold(self, circuit: QuantumCircuit, scale: int) -> QuantumCircuit:
        key = (id(circuit), scale)
        if key not in self._folded:  # keep `circuit` alive so its id stays unique
            self._folded[key] = (circuit, fold_two_qubit_gates(circuit, scale))
        return self._folded[key][1]

    def __call__(self, batches: list[CircuitBatch]):
        return map_batches(batches, self._one)

    def _one(self, batch: CircuitBatch):
        if batch.sampled:
            raise QssmError("ZNE extrapolates expectation values, and cut circuits return raw samples: disable "
                            "[mitigation] zne or set [split] cutting = \"off\"")
        shots = split_shots(batch.shots, self.weights)
        children = [batch.derive(circuits=tuple(self._fold(c, scale) for c in batch.circuits), shots=s,
                                 key=_hash(batch.key, "zne-v2", scale, s), meta={"zne_scale": scale})
                    for scale, s in zip(self.scales, shots)]
        if self.tracker is not None:
            self.tracker.add(zne_circuits=sum(len(c.circuits) for c in children[1:]))
        w = self.weights[:, None, None]

        def combine(results: list[BatchResult]) -> BatchResult:
            values = np.stack([r.values for r in results])
            stderr = np.stack([r.stderr for r in results])
            return merged(results, (w * values).sum(0), np.sqrt((w**2 * stderr**2).sum(0)),
                          zne={"scales": self.scales, "values": values.tolist() if values.size <= 64 else None})

        return children, combine

    def report(self, totals: dict) -> dict:
        cal_exec, cal_shots = totals["calibration_executions"], totals["calibration_shots"]
        return {"setting": "zne", "circuits": max(totals["executions"], 1) - cal_exec,
                "shots": max(totals["total_shots"], 1) - cal_shots,
                "circuit_multiplier": float(len(self.scales)), "shot_multiplier": 1.0,
                "scales": self.scales, "extrapolation": self.extrapolation,
                "weights": [float(w) for w in self.weights],
                "note": "equal total shots: each circuit's shots split over scales in proportion to |weight|"}


def mitigation_report(pipeline) -> list[dict]:
    """Each stage's report row (what it added, as multipliers over the same run without it) and the
    total: the product of the multipliers."""
    totals = pipeline.tracker.totals
    rows = [row for stage in pipeline.stages if (row := getattr(stage, "report", lambda t: None)(totals))]
    if rows:
        rows.append({"setting": "total", "circuits": max(totals["executions"], 1),
                     "shots": max(totals["total_shots"], 1),
                     "circuit_multiplier": float(np.prod([r["circuit_multiplier"] for r in rows])),
                     "shot_multiplier": float(np.prod([r["shot_multiplier"] for r in rows]))})
    return rows


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()
