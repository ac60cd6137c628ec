"""compile: transpile each template once per target, bind many.

ISA circuits are cached by (template hash, backend name, calibration, options), so the number of
transpile calls in a run depends on the model's templates only, never on the number of tokens or
sequences. Observables are mapped through the ISA circuit's final layout onto physical qubits, and
parameter rows are reordered if the ISA circuit orders its parameters differently.

Backends whose target is None (logical simulators) run the template as it is: no transpilation.

The CompiledBatch key hashes the ISA circuit's OpenQASM 3 text, not its QPY bytes: QPY stores
each Parameter's random UUID, so the same circuit built in two processes would get two keys and a
resumed run could not find its finished batches in the job store.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, qasm3
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qssm.errors import QssmError
from qssm.pipeline.metrics import SwapCounter, circuit_metrics, final_layout
from qssm.pipeline.types import CircuitBatch, CompiledBatch, Template


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
    """One template transpiled for one target."""

    circuit: QuantumCircuit  # ISA circuit (or the logical circuit for target-less backends)
    observables: list[SparsePauliOp]  # over circuit.num_qubits
    columns: np.ndarray | None  # template row column feeding each ISA parameter; None = same order
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


def check_width(template: Template, backend) -> None:
    target = backend.target
    if target is not None and template.circuit.num_qubits > target.num_qubits:
        raise QssmError(
            f"template {template.name} needs {template.circuit.num_qubits} qubits but backend {backend.name} "
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


def _columns(template: Template, circuit: QuantumCircuit) -> np.ndarray | None:
    logical, isa = list(template.circuit.parameters), list(circuit.parameters)
    if set(logical) != set(isa):
        lost = sorted(p.name for p in set(logical) - set(isa))
        raise QssmError(f"transpiling {template.name} changed its inputs (lost {lost[:4]}); "
                        "use a lower [backend] optimization_level")
    if logical == isa:
        return None
    pos = {p: i for i, p in enumerate(logical)}
    return np.array([pos[p] for p in isa], dtype=np.int64)


def compile_template(template: Template, backend, options: CompileOptions) -> Compiled:
    """Transpile one template for `backend` (uncached; CompileCache.get caches it)."""
    obs = [SparsePauliOp(label) for label in template.observables]
    logical = template.circuit
    target = backend.target
    if target is None:  # logical simulators run the circuit as it is
        return Compiled(logical, obs, None, list(range(logical.num_qubits)), circuit_digest(logical), {})
    check_width(template, backend)
    start = time.perf_counter()
    isa, swaps = transpile(logical, target, options)
    seconds = time.perf_counter() - start
    mapped = [o.apply_layout(isa.layout) for o in obs]
    layout = final_layout(isa)
    metrics = circuit_metrics(isa, target, swaps=swaps, logical=logical, measured=layout)
    metrics["transpile_seconds"] = seconds
    return Compiled(isa, mapped, _columns(template, isa), layout, circuit_digest(isa), metrics, seconds)


class CompileCache:
    """ISA circuits per (template hash, backend, calibration, options); counts real transpiles."""

    def __init__(self) -> None:
        self._compiled: dict[tuple, Compiled] = {}
        self.transpile_calls = 0
        self.transpile_seconds = 0.0
        self.cut_decisions: dict[tuple, object] = {}  # memo for pipeline.cutting.should_cut

    def get(self, template: Template, backend, options: CompileOptions) -> Compiled:
        key = (template.hash, backend.name, backend.calibration, options)
        if key not in self._compiled:
            compiled = compile_template(template, backend, options)
            if backend.target is not None:
                self.transpile_calls += 1
                self.transpile_seconds += compiled.seconds
            self._compiled[key] = compiled
        return self._compiled[key]


def check_shots(shots: int | None, backend) -> None:
    if shots is None:
        return
    if shots < 0:
        raise QssmError(f"shots must be >= 0, got {shots}")
    if backend.max_shots is not None and shots > backend.max_shots:
        raise QssmError(f"{shots} shots exceed backend {backend.name}'s limit of {backend.max_shots} shots per "
                        f"circuit; set [backend] shots to at most {backend.max_shots}")


def compile_batch(batch: CircuitBatch, backend, options: CompileOptions, cache: CompileCache) -> CompiledBatch:
    check_shots(batch.shots, backend)
    c = cache.get(batch.template, backend, options)
    rows = np.asarray(batch.parameters, dtype=np.float64).reshape(len(batch.parameters), -1)
    if rows.shape[1] != batch.template.circuit.num_parameters:
        raise QssmError(f"template {batch.template.name} takes {batch.template.circuit.num_parameters} inputs, "
                        f"got parameter rows of width {rows.shape[1]}")
    rows = np.ascontiguousarray(rows if c.columns is None else rows[:, c.columns])
    h = hashlib.sha256(b"qssm-compiled-batch-v1")
    for part in (c.digest, backend.name, backend.calibration, repr(options), repr(batch.shots),
                 repr(rows.shape), *(f"{o.paulis.to_labels()}{o.coeffs.tolist()}" for o in c.observables)):
        h.update(part.encode())
        h.update(b"\0")
    h.update(rows.tobytes())
    meta = {"template": batch.template.name, "template_hash": batch.template.hash, "layout": list(c.layout),
            "metrics": dict(c.metrics)}
    return CompiledBatch(h.hexdigest(), c.circuit, rows, list(c.observables), batch.shots, meta)
