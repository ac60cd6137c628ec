"""compile: transpile each circuit once per target, bind many (docs/architecture.md, "compile").

ISA circuits are cached by (template hash or circuit digest, backend, calibration, options), so the
number of transpile calls in a run depends on the model's templates only, never on the number of
tokens or sequences. Observables are mapped through the ISA circuit's final layout onto physical
qubits, and each circuit's parameter columns follow the ISA circuit's parameter order (the rows
themselves are never copied). Backends whose target is None (logical simulators) run the circuits
as they are: no transpilation.

The batch key hashes the ISA circuits' OpenQASM 3 text, not their QPY bytes: QPY stores each
Parameter's random UUID, so the same circuit built in two processes would get two keys and a
resumed run could not find its finished batches in the job store.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, qasm3
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qssm.errors import QssmError
from qssm.pipeline.metrics import SwapCounter, circuit_metrics, final_layout, two_qubit_count
from qssm.pipeline.stages import SpecStage, first, map_batches
from qssm.types import CircuitBatch, Template

KEY_VERSION = b"qssm-batch-v2"


@dataclass(frozen=True)
class CompileOptions:
    optimization_level: int = 2
    seed_transpiler: int = 0
    initial_layout: tuple[int, ...] | None = None  # physical qubit per logical qubit; lists accepted

    def __post_init__(self) -> None:
        if self.initial_layout is not None:  # a tuple keeps the options hashable (cache key)
            object.__setattr__(self, "initial_layout", tuple(int(q) for q in self.initial_layout))
        if self.optimization_level not in (0, 1, 2, 3):
            raise QssmError(f"optimization_level must be 0..3, got {self.optimization_level}")


@dataclass
class Compiled:
    """One circuit transpiled for one target."""

    circuit: QuantumCircuit  # ISA circuit (or the logical circuit for target-less backends)
    observables: list[SparsePauliOp]  # over circuit.num_qubits
    columns: np.ndarray | None  # logical parameter position feeding each ISA parameter; None = same order
    layout: list[int]  # physical qubit holding each logical qubit at the end
    digest: str  # sha256 of the circuit's OpenQASM 3 text
    metrics: dict
    seconds: float = 0.0  # transpile wall time


def circuit_digest(circuit: QuantumCircuit) -> str:
    try:
        text = qasm3.dumps(circuit)
    except Exception as e:  # noqa: BLE001 - qasm3 cannot express every custom instruction
        raise QssmError(f"cannot serialize circuit {circuit.name} to OpenQASM 3 for hashing: {e}") from e
    return hashlib.sha256(text.encode()).hexdigest()


def check_width(name: str, circuit: QuantumCircuit, backend) -> None:
    target = backend.target
    if target is not None and circuit.num_qubits > target.num_qubits:
        raise QssmError(
            f"template {name} needs {circuit.num_qubits} qubits but backend {backend.name} "
            f"has {target.num_qubits}; enable cutting with [split] cutting = \"auto\"")


def transpile(circuit: QuantumCircuit, target, options: CompileOptions) -> tuple[QuantumCircuit, int]:
    """(ISA circuit, routing swaps) with the preset pass manager for `options`."""
    layout = list(options.initial_layout) if options.initial_layout is not None else None
    if layout is not None and (len(layout) != circuit.num_qubits or len(set(layout)) != len(layout)
                               or max(layout) >= target.num_qubits or min(layout) < 0):
        raise QssmError(f"initial_layout {layout} must list {circuit.num_qubits} distinct physical qubits "
                        f"below {target.num_qubits} for circuit {circuit.name}")
    pm = generate_preset_pass_manager(optimization_level=options.optimization_level, target=target,
                                      seed_transpiler=options.seed_transpiler, initial_layout=layout)
    counter = SwapCounter()
    isa = pm.run(circuit, callback=counter)
    return isa, counter.swaps


def _columns(logical: QuantumCircuit, isa: QuantumCircuit, name: str) -> np.ndarray | None:
    before, after = list(logical.parameters), list(isa.parameters)
    if set(before) != set(after):
        lost = sorted(p.name for p in set(before) - set(after))
        raise QssmError(f"transpiling {name} changed its inputs (lost {lost[:4]}); "
                        "use a lower [backend] optimization_level")
    if before == after:
        return None
    pos = {p: i for i, p in enumerate(before)}
    return np.array([pos[p] for p in after], dtype=np.int64)


def compile_circuit(circuit: QuantumCircuit, observables: tuple[str, ...], backend, options: CompileOptions,
                    name: str = "") -> Compiled:
    """Transpile one circuit for `backend` (uncached; CompileCache.get caches it)."""
    name = name or circuit.name
    obs = [SparsePauliOp(label) for label in observables]
    target = backend.target
    if target is None:  # logical simulators run the circuit as it is
        return Compiled(circuit, obs, None, list(range(circuit.num_qubits)), circuit_digest(circuit), {})
    check_width(name, circuit, backend)
    start = time.perf_counter()
    isa, swaps = transpile(circuit, target, options)
    seconds = time.perf_counter() - start
    mapped = [o.apply_layout(isa.layout) for o in obs]
    layout = final_layout(isa)
    measured = layout if obs else []  # circuits that measure themselves pay their readout in their gates
    metrics = circuit_metrics(isa, target, swaps=swaps, logical=circuit, measured=measured)
    metrics["transpile_seconds"] = seconds
    return Compiled(isa, mapped, _columns(circuit, isa, name), layout, circuit_digest(isa), metrics, seconds)


class CompileCache:
    """ISA circuits per (content, backend, calibration, options); counts real transpiles."""

    def __init__(self, tracker=None) -> None:
        self.tracker = tracker  # counts transpile calls wherever they happen (compile, or split's cut decision)
        self._compiled: dict[tuple, Compiled] = {}
        self.transpile_calls = 0
        self.transpile_seconds = 0.0
        self.cut_decisions: dict[tuple, object] = {}  # memo for pipeline.cutting.should_cut
        self.names: dict[tuple, str] = {}  # key -> template name, for templates (not cut subexperiments)

    def get(self, template: Template, backend, options: CompileOptions) -> Compiled:
        self.names.setdefault(self._key(template.hash, backend, options), template.name)
        return self._get(template.hash, template.circuit, template.observables, template.name, backend, options)

    def rows(self) -> list[dict]:
        """What each template became on its target, in the order first compiled: the run records
        these (report.json `compiled`), so a report shows what ran without transpiling again."""
        out = []
        for key, name in self.names.items():
            c = self._compiled.get(key)
            if c is None:
                continue
            options = key[3]
            # a logical simulator runs the template as it is: its own depth and gates, nothing routed
            metrics = c.metrics or {"depth": c.circuit.depth(), "two_qubit": two_qubit_count(c.circuit), "swaps": 0,
                                    "success_probability": 1.0}
            row = {"target": key[1], "template": name, "layout": list(c.layout),
                   "initial_layout": None if options.initial_layout is None else list(options.initial_layout),
                   "optimization_level": options.optimization_level, **metrics}
            # the split stage's cut decision for this template, if it made one (pipeline/cutting.py)
            why = [v[1] for k, v in self.cut_decisions.items() if k[0] == "should_cut" and k[1:5] == key]
            if why:
                row["cut_decision"] = why[0]
            out.append(row)
        return out

    def _book(self, seconds: float) -> None:
        """Transpile wall time goes to the tracker's "transpile", whichever stage asked for it."""
        if self.tracker is not None:
            self.tracker.time("transpile", seconds)

    def circuit(self, circuit: QuantumCircuit, backend, options: CompileOptions) -> Compiled:
        """A circuit without a template (cut subexperiments): keyed by its own digest."""
        return self._get(circuit_digest(circuit), circuit, (), circuit.name, backend, options)

    @staticmethod
    def _key(content: str, backend, options: CompileOptions) -> tuple:
        return content, backend.name, backend.calibration, options

    def _get(self, content: str, circuit, observables, name, backend, options) -> Compiled:
        key = self._key(content, backend, options)
        if key not in self._compiled:
            compiled = compile_circuit(circuit, observables, backend, options, name)
            self._book(compiled.seconds)
            self._store(key, compiled, backend)
        return self._compiled[key]

    def _store(self, key: tuple, compiled: Compiled, backend) -> None:
        if backend.target is not None:
            self.transpile_calls += 1
            self.transpile_seconds += compiled.seconds
            if self.tracker is not None:
                self.tracker.add(transpile_calls=1)
        self._compiled[key] = compiled

    def prefetch(self, templates: list[Template], backend, options: CompileOptions) -> None:
        """Transpile the templates not compiled yet in one `backend.map`: side by side on a cluster's
        workers (the same seeded transpiler, so the same ISA circuits), in turn anywhere else."""
        todo: dict[tuple, Template] = {}
        for t in templates:
            key = self._key(t.hash, backend, options)
            if key not in self._compiled:
                todo.setdefault(key, t)
        if len(todo) < 2 or backend.target is None:
            return
        for key, t in todo.items():
            self.names.setdefault(key, t.name)
        jobs = [(t.circuit, t.observables, options, t.name) for t in todo.values()]
        start = time.perf_counter()  # wall time: on a cluster the transpiles run side by side
        compiled = list(backend.map(_compile_job, jobs))
        self._book(time.perf_counter() - start)
        for key, c in zip(todo, compiled):
            self._store(key, c, backend)


def _compile_job(backend, job) -> Compiled:
    circuit, observables, options, name = job
    return compile_circuit(circuit, observables, backend, options, name)


def batch_key(batch: CircuitBatch, backend, options: CompileOptions, digests: list[str]) -> str:
    """A content hash of everything that determines a compiled batch's result."""
    h = hashlib.sha256(KEY_VERSION)
    cols = [None if c is None else np.asarray(c).tolist() for c in batch.columns]
    for part in (backend.name, backend.calibration, json.dumps(backend.fingerprint(), sort_keys=True),
                 repr(options), repr(batch.shots), repr(batch.parameters.shape), *digests, json.dumps(cols),
                 *(f"{o.paulis.to_labels()}{o.coeffs.tolist()}" for o in batch.observables),
                 *([f"round {batch.round}"] if batch.round else [])):
        h.update(part.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(batch.parameters, dtype=np.float64).tobytes())
    return h.hexdigest()


def compile_batch(batch: CircuitBatch, backend, options: CompileOptions, cache: CompileCache) -> CircuitBatch:
    """A planned batch -> the same batch on the target: ISA circuits, mapped observables, parameter
    columns in each ISA circuit's order, and its content key."""
    t = batch.template
    rows = np.ascontiguousarray(np.asarray(batch.parameters, dtype=np.float64).reshape(len(batch.parameters), -1))
    circuits, columns, digests = [], [], []
    observables = batch.observables
    meta, seconds_per_shot = {}, 0.0
    for i, circuit in enumerate(batch.circuits):
        c = cache.get(t, backend, options) if t is not None and i == 0 else cache.circuit(circuit, backend, options)
        given = batch.columns[i] if i < len(batch.columns) else None
        width = circuit.num_parameters if given is None else len(given)
        if given is None and rows.shape[1] != width:
            raise QssmError(f"template {batch.meta.get('template', circuit.name)} takes {width} inputs, "
                            f"got parameter rows of width {rows.shape[1]}")
        base = np.arange(width) if given is None else np.asarray(given)
        cols = None if c.columns is None and given is None else base[c.columns if c.columns is not None else slice(None)]
        circuits.append(c.circuit)
        columns.append(cols)
        digests.append(c.digest)
        if i == 0:
            if batch.observables:
                observables = tuple(c.observables)
            meta = {"layout": list(c.layout), "metrics": dict(c.metrics)}
            seconds_per_shot = float(c.metrics.get("duration_us") or 0.0) * 1e-6
    if t is not None:
        meta.update(template=t.name, template_hash=t.hash)
    out = batch.derive(circuits=tuple(circuits), parameters=rows, observables=observables,
                       columns=tuple(columns) if any(c is not None for c in columns) else (), meta=meta,
                       seconds_per_shot=seconds_per_shot)
    out.key = batch_key(out, backend, options, digests)
    return out


class Compile(SpecStage):
    """The compile stage."""

    name = "compile"

    @classmethod
    def from_spec(cls, spec, ctx):
        return cls(ctx.backend, ctx.options, ctx.cache)

    def __init__(self, backend, options: CompileOptions | None = None, cache: CompileCache | None = None):
        self.backend = backend
        self.options = options or CompileOptions()
        self.cache = cache or CompileCache()

    def __call__(self, batches: list[CircuitBatch]):
        self.cache.prefetch([b.template for b in batches if b.template is not None], self.backend, self.options)
        return map_batches(batches, lambda b: ([compile_batch(b, self.backend, self.options, self.cache)], first))
