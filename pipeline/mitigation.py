"""Error mitigation around dispatch: readout calibration (tensored model) and zero-noise extrapolation.

    mitigation = Mitigation.from_spec(spec.mitigation, backend, shots)
    results = mitigation.run(compiled, dispatch)   # same order as `compiled`, values mitigated
    mitigation.report()                            # per-setting circuit and shot overhead

Readout: for the physical qubits a batch measures, two calibration circuits (all 0, all 1) run through
the same `dispatch` as real batches (so the job store records them and resumes them). Each measures
Z on every qubit, so p(1|0) = (1 - <Z>_0) / 2 and p(0|1) = (1 + <Z>_1) / 2 come from expectation values
and work on every backend. Qubits are modelled independently (tensored confusion matrices), cached
per qubit for the run. The confusion data travels as plain data in CompiledBatch.meta["readout"]
({circuit qubit: [p(1|0), p(0|1)]}); sampling backends build `readout_corrector` from it and pass it to
backends.sampling.expectations, which applies it to each measurement group's outcome distribution.

ZNE: two-qubit gates of the ISA circuit are folded G -> G (G G)^k (cz, ecr, cx are self-inverse, so the
folded circuit stays native and needs no new transpile); noise on two-qubit gates scales by 1, 3, 5.
Extrapolation to zero noise is a fixed linear combination sum_i g_i y_i of the scaled values
(Richardson: the polynomial through all points; linear: least squares), so standard errors propagate
exactly as sqrt(sum_i g_i^2 s_i^2). At a budget of S shots per circuit, the shots are split over the
scales in proportion to |g_i|, which minimizes that variance at equal total shots.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from qssm.errors import QssmError
from qssm.pipeline.types import BatchResult, CompiledBatch

SELF_INVERSE_2Q = frozenset({"cz", "ecr", "cx", "cy", "swap", "ch"})
EXTRAPOLATIONS = ("richardson", "linear")
IBM_ONLY = ("resilience_level", "twirling", "dynamical_decoupling")


# -- readout ---------------------------------------------------------------------------------------
def readout_corrector(meta_readout: dict, qubits=None):
    """mitigate(group, probs) for backends.sampling.expectations: applies the inverse of each support
    qubit's 2x2 confusion matrix to the group's outcome distribution (bit k = k-th support qubit).

    `meta_readout` maps a circuit qubit (int or str key, as after a JSON round trip) to
    [p(1|0), p(0|1)]. `qubits`, if given, maps the group's qubit index to that key (a backend that
    compacted the circuit passes its active qubits)."""
    table = {int(q): (float(v[0]), float(v[1])) for q, v in meta_readout.items()}
    inverses = {}
    for q, (p10, p01) in table.items():
        a = np.array([[1 - p10, p01], [p10, 1 - p01]])  # column = prepared, row = measured
        if abs(np.linalg.det(a)) < 1e-6:
            raise QssmError(f"readout calibration of qubit {q} is singular (p(1|0)={p10:.3f}, p(0|1)={p01:.3f}); "
                            "recalibrate or disable [mitigation] readout")
        inverses[q] = np.linalg.inv(a)

    def mitigate(group, probs: np.ndarray) -> np.ndarray:
        support = group.support
        width = len(support)
        t = np.asarray(probs, dtype=np.float64).reshape((probs.shape[0],) + (2,) * width)
        for k, q in enumerate(support):
            key = int(qubits[q]) if qubits is not None else q
            inv = inverses.get(key)
            if inv is None:
                continue  # uncalibrated qubit: left as measured
            axis = width - k  # C order: the last axis is bit 0
            t = np.moveaxis(np.tensordot(inv, t, axes=([1], [axis])), 0, axis)
        return t.reshape(probs.shape[0], -1)

    return mitigate


def readout_stderr(observable: SparsePauliOp, value: np.ndarray, stderr: np.ndarray, shots: int,
                   readout: dict, cal_shots: int) -> np.ndarray:
    """Standard error of a readout-corrected expectation value (first-order propagation).

    expectations() reports sqrt(1 - m^2 / shots) of the *corrected* value m, which understates it:
    the inverse divides the raw parity by b = prod_q (1 - p(1|0) - p(0|1)) and the calibration's own
    shot noise adds var(p) (dm/dp)^2 per qubit. For a single Pauli term c P:
        var = c^2 [ (1 - (m/b)^2) / (b^2 shots) + sum_q ((1+m)^2 var p10_q + (1-m)^2 var p01_q) / b_q^2 ]
    (m/b approximates the raw parity). Sums of terms fall back to the reported stderr / b_max."""
    table = {int(q): v for q, v in readout.items()}

    def qubits(k):
        return [int(q) for q in np.flatnonzero(observable.paulis.x[k] | observable.paulis.z[k])]

    def b_of(qs):
        return float(np.prod([max(1.0 - sum(table.get(q, (0.0, 0.0))), 1e-3) for q in qs]))

    if len(observable) != 1:
        return stderr / min(b_of(qubits(k)) for k in range(len(observable)))
    c = abs(float(observable.coeffs[0].real)) or 1.0
    qs = qubits(0)
    b = b_of(qs)
    m = np.clip(value / c, -1, 1)
    var = (1 - np.clip(m * b, -1, 1) ** 2) / (b**2 * max(shots, 1))  # m * b: raw parity (symmetric approx)
    for q in qs:
        p10, p01 = table.get(q, (0.0, 0.0))
        bq = max(1.0 - p10 - p01, 1e-3)
        var = var + ((1 + m) ** 2 * p10 * (1 - p10) + (1 - m) ** 2 * p01 * (1 - p01)) / (max(cal_shots, 1) * bq**2)
    return c * np.sqrt(var)


def measured_qubits(batch: CompiledBatch) -> tuple[int, ...]:
    return tuple(sorted({int(q) for o in batch.observables for q in np.flatnonzero(o.paulis.x.any(0) | o.paulis.z.any(0))}))


def calibration_batch(backend, num_qubits: int, qubits: tuple[int, ...], state: int, shots: int) -> CompiledBatch:
    """Prepare |state> on `qubits` (x, or sx sx where a target lacks x) and measure Z on each."""
    qc = QuantumCircuit(num_qubits, name=f"readout_cal{state}")
    if state:
        ops = getattr(backend.target, "operation_names", None)
        for q in qubits:
            if ops is None or "x" in ops:
                qc.x(q)
            else:
                qc.sx(q)
                qc.sx(q)
    obs = [SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], num_qubits=num_qubits) for q in qubits]
    key = _hash("qssm-readout-cal-v1", backend.name, backend.calibration, num_qubits, list(qubits), state, shots)
    meta = {"template": f"readout_cal{state}", "qubits": list(qubits), "mitigation": "readout-calibration"}
    return CompiledBatch(key, qc, np.zeros((1, 0)), obs, shots, meta)


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


# -- the stage -------------------------------------------------------------------------------------
@dataclass
class Overhead:
    circuits: int = 0  # circuit executions (bindings x measurement groups)
    shots: int = 0

    def add(self, circuits: int, shots: int | None) -> None:
        self.circuits += circuits
        self.shots += circuits * (shots or 0)


@dataclass
class Mitigation:
    backend: object
    shots: int | None
    readout: bool = False
    zne: bool = False
    scales: list[int] = field(default_factory=lambda: [1, 3, 5])
    extrapolation: str = "richardson"
    readout_shots: int = 0  # calibration shots per circuit; 0 = the batches' shots

    def __post_init__(self) -> None:
        self.weights = extrapolation_weights(self.scales, self.extrapolation) if self.zne else np.ones(1)
        self._cal: dict[tuple[str, str, int], tuple[float, float]] = {}  # (backend, calibration, qubit) -> p10, p01
        self._folded: dict[tuple[int, int], tuple[QuantumCircuit, QuantumCircuit]] = {}
        self.base = Overhead()  # what the batches would cost unmitigated
        self.calibration = Overhead()
        self.executed = Overhead()  # mitigated batches (all ZNE scales), calibration excluded
        self.calibration_sets = 0

    @classmethod
    def from_spec(cls, spec, backend, shots: int | None) -> Mitigation:
        if spec.extrapolation not in EXTRAPOLATIONS:
            raise QssmError(f"[mitigation] extrapolation must be one of {', '.join(EXTRAPOLATIONS)}, got {spec.extrapolation!r}")
        if spec.readout and not shots:
            raise QssmError("[mitigation] readout needs sampled results: set [backend] shots > 0")
        scales = parse_scales(spec.zne_scales)
        if spec.zne and shots and shots < len(scales):
            raise QssmError(f"ZNE splits {shots} shots over {len(scales)} scales; raise [backend] shots")
        return cls(backend, shots, spec.readout, spec.zne, scales, spec.extrapolation, spec.readout_shots)

    # readout ----------------------------------------------------------------------------------
    def _readout_tables(self, compiled: list[CompiledBatch], dispatch) -> tuple[list[dict], list[BatchResult]]:
        b = self.backend
        need: dict[tuple[int, tuple[int, ...]], None] = {}  # (width, qubits not yet calibrated), in order
        for batch in compiled:
            if batch.shots:
                missing = tuple(q for q in measured_qubits(batch) if (b.name, b.calibration, q) not in self._cal)
                if missing:
                    need[(batch.circuit.num_qubits, missing)] = None
        cal_batches = []
        for width, qubits in need:
            shots = self.readout_shots or self.shots
            cal_batches += [calibration_batch(b, width, qubits, s, shots) for s in (0, 1)]
        cal_results = dispatch(cal_batches) if cal_batches else []
        for (_, qubits), r0, r1 in zip(need, cal_results[0::2], cal_results[1::2]):
            self.calibration_sets += 1
            for k, q in enumerate(qubits):  # clipped: a mitigation never flips a qubit's meaning
                p10 = float(np.clip((1 - r0.values[0, k]) / 2, 0.0, 0.49))
                p01 = float(np.clip((1 + r1.values[0, k]) / 2, 0.0, 0.49))
                self._cal[(b.name, b.calibration, q)] = (p10, p01)
        for cb in cal_batches:
            self.calibration.add(1, cb.shots)
        tables = [{q: list(self._cal[(b.name, b.calibration, q)]) for q in measured_qubits(batch)} if batch.shots else {}
                  for batch in compiled]
        return tables, cal_results

    # ZNE --------------------------------------------------------------------------------------
    def _folded_circuit(self, circuit: QuantumCircuit, scale: int) -> QuantumCircuit:
        key = (id(circuit), scale)
        if key not in self._folded:  # keep `circuit` alive so its id stays unique
            self._folded[key] = (circuit, fold_two_qubit_gates(circuit, scale))
        return self._folded[key][1]

    def _variants(self, batch: CompiledBatch, readout: dict) -> list[CompiledBatch]:
        scales = self.scales if self.zne else [1]
        shots = split_shots(batch.shots, self.weights) if self.zne else [batch.shots]
        out = []
        for scale, s in zip(scales, shots):
            meta = dict(batch.meta)
            if readout:
                meta["readout"] = readout
            if self.zne:
                meta["zne_scale"] = scale
            # the key covers everything that changes the result: scale, shots, readout correction
            key = _hash(batch.key, "mitigation-v1", scale, s, sorted(readout.items()))
            out.append(CompiledBatch(key, self._folded_circuit(batch.circuit, scale), batch.parameters,
                                     batch.observables, s, meta))
        return out

    def run(self, compiled: list[CompiledBatch], dispatch) -> list[BatchResult]:
        from qssm.backends.sampling import measurement_groups

        if self.readout:
            tables, cal_results = self._readout_tables(compiled, dispatch)
        else:
            tables, cal_results = [{} for _ in compiled], []
        variants = [self._variants(batch, table) for batch, table in zip(compiled, tables)]
        flat = [v for vs in variants for v in vs]
        results = dispatch(flat)
        out, k = [], 0
        for batch, table, vs in zip(compiled, tables, variants):
            rs = results[k:k + len(vs)]
            k += len(vs)
            groups = max(1, len(measurement_groups(batch.observables))) if batch.shots else 1
            self.base.add(len(batch.parameters) * groups, batch.shots)
            for v in vs:
                self.executed.add(len(batch.parameters) * groups, v.shots)
            out.append(self._combine(batch, table, rs))
        if out and cal_results:  # calibration jobs count toward the run's cost and job ids
            out[0].meta["job_ids"] = list(out[0].meta.get("job_ids", [])) + [j for r in cal_results for j in r.meta.get("job_ids", [])]
            out[0].meta["cost_usd"] = float(out[0].meta.get("cost_usd", 0.0)) + sum(float(r.meta.get("cost_usd", 0.0)) for r in cal_results)
        return out

    def _combine(self, batch: CompiledBatch, readout: dict, rs: list[BatchResult]) -> BatchResult:
        values = np.stack([r.values for r in rs])
        stderr = np.stack([r.stderr for r in rs])
        if readout:  # the correction amplifies shot noise and adds the calibration's own
            cal_shots = self.readout_shots or self.shots or 1
            for i, r in enumerate(rs):
                shots = int(r.meta.get("shots") or self.shots or 1)
                for j, o in enumerate(batch.observables):
                    stderr[i, :, j] = readout_stderr(o, values[i, :, j], stderr[i, :, j], shots, readout, cal_shots)
        if self.zne:
            w = self.weights[:, None, None]
            mitigated, err = (w * values).sum(0), np.sqrt((w**2 * stderr**2).sum(0))
        else:
            mitigated, err = values[0], stderr[0]
        meta = dict(rs[0].meta)
        meta["shots"] = sum(int(r.meta.get("shots", 0) or 0) for r in rs)
        meta["job_ids"] = [j for r in rs for j in r.meta.get("job_ids", [])]
        meta["cost_usd"] = sum(float(r.meta.get("cost_usd", 0.0)) for r in rs)
        meta["mitigation"] = {"readout": bool(readout), "zne_scales": self.scales if self.zne else None,
                              "zne_values": values.tolist() if self.zne and values.size <= 64 else None}
        return BatchResult(mitigated, err, meta)

    # report -----------------------------------------------------------------------------------
    def report(self) -> dict:
        """Per-setting overhead: circuit executions (bindings x measurement groups) and shots, as
        totals and as multipliers over the same batches run unmitigated."""
        base_c, base_s = max(self.base.circuits, 1), max(self.base.shots, 1)
        rows = {}
        if self.readout:
            rows["readout"] = {"circuits": self.calibration.circuits, "shots": self.calibration.shots,
                               "circuit_multiplier": 1 + self.calibration.circuits / base_c,
                               "shot_multiplier": 1 + self.calibration.shots / base_s,
                               "calibrated_qubits": len(self._cal), "calibration_sets": self.calibration_sets,
                               "note": "2 calibration circuits per new measured-qubit set, cached per qubit for the run"}
        if self.zne:
            rows["zne"] = {"circuits": self.executed.circuits, "shots": self.executed.shots,
                           "circuit_multiplier": self.executed.circuits / base_c,
                           "shot_multiplier": self.executed.shots / base_s,
                           "scales": list(self.scales), "extrapolation": self.extrapolation,
                           "weights": [float(w) for w in self.weights],
                           "shot_fractions": [s / self.shots for s in split_shots(self.shots, self.weights)]
                           if self.shots else None,
                           "two_qubit_gate_multiplier": float(np.mean(self.scales)),
                           "note": "equal total shots: each circuit's shots split over scales in proportion to |weight|"}
        total_c = self.executed.circuits + self.calibration.circuits
        total_s = self.executed.shots + self.calibration.shots
        rows["total"] = {"circuits": total_c, "shots": total_s, "circuit_multiplier": total_c / base_c,
                         "shot_multiplier": total_s / base_s, "unmitigated_circuits": self.base.circuits,
                         "unmitigated_shots": self.base.shots}
        return rows

    def report_rows(self) -> list[dict]:
        """report() as table rows (setting, circuits, shots, multipliers) for qssm.report."""
        keys = ("circuits", "shots", "circuit_multiplier", "shot_multiplier")
        return [{"setting": name, **{k: row[k] for k in keys}} for name, row in self.report().items()]


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()
