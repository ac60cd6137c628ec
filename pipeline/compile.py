"""compile: transpile each template once per target, bind many.

ISA circuits are cached by (template hash, backend, calibration, options), so the number of
transpile calls in a run depends on the model's templates only, never on the number of tokens or
sequences. Observables are mapped through the final layout onto the physical qubits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, qpy
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qssm.errors import QssmError
from qssm.pipeline.metrics import circuit_metrics
from qssm.pipeline.types import CircuitBatch, CompiledBatch, Template


@dataclass(frozen=True)
class CompileOptions:
    optimization_level: int = 2
    seed_transpiler: int = 7
    initial_layout: tuple[int, ...] | None = None


@dataclass
class Compiled:
    """One template transpiled for one target."""

    circuit: QuantumCircuit
    observables: list[SparsePauliOp]
    layout: list[int]  # physical qubit of each logical qubit
    digest: str  # hash of the ISA circuit (QPY bytes)
    metrics: dict


class CompileCache:
    def __init__(self) -> None:
        self._isa: dict[tuple, Compiled] = {}
        self.transpile_calls = 0

    def get(self, template: Template, backend, options: CompileOptions) -> Compiled:
        key = (template.hash, backend.name, backend.calibration, options)
        if key not in self._isa:
            self._isa[key] = self._compile(template, backend, options)
        return self._isa[key]

    def _compile(self, template: Template, backend, options: CompileOptions) -> Compiled:
        logical = template.circuit
        obs = [SparsePauliOp(label) for label in template.observables]
        target = backend.target
        if target is None:  # logical simulators run the circuit as it is
            return Compiled(logical, obs, list(range(logical.num_qubits)), _digest(logical), {})
        if logical.num_qubits > target.num_qubits:
            raise QssmError(
                f"template {template.name} needs {logical.num_qubits} qubits but {backend.name} has "
                f"{target.num_qubits}; set [split] cutting = \"auto\" or pick a wider backend")
        layout = list(options.initial_layout) if options.initial_layout else None
        pm = generate_preset_pass_manager(optimization_level=options.optimization_level, target=target,
                                          seed_transpiler=options.seed_transpiler, initial_layout=layout)
        self.transpile_calls += 1
        swaps = []

        def count_swaps(pass_, dag, **_):  # routing passes leave explicit swaps before translation
            if pass_.name().endswith(("Swap", "SabreLayout")):
                swaps.append(dag.count_ops().get("swap", 0))

        isa = pm.run(logical, callback=count_swaps)
        if set(isa.parameters) != set(logical.parameters):
            raise QssmError(f"transpiling {template.name} dropped circuit inputs; use optimization_level <= 2")
        physical = isa.layout.final_index_layout() if isa.layout is not None else list(range(logical.num_qubits))
        mapped = [o.apply_layout(isa.layout) for o in obs]
        return Compiled(isa, mapped, list(physical), _digest(isa), circuit_metrics(isa, target, physical, swaps[-1] if swaps else None))


def _digest(circuit: QuantumCircuit) -> str:
    import io

    buf = io.BytesIO()
    qpy.dump(circuit, buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def compile_batch(batch: CircuitBatch, backend, options: CompileOptions, cache: CompileCache) -> CompiledBatch:
    if batch.shots and backend.max_shots and batch.shots > backend.max_shots:
        raise QssmError(f"{batch.shots} shots exceed {backend.name}'s limit of {backend.max_shots}; lower [backend] shots")
    c = cache.get(batch.template, backend, options)
    # rows follow the template's parameter order; the ISA circuit keeps the same Parameter objects
    # and Qiskit orders circuit parameters by name, so the columns line up
    rows = np.ascontiguousarray(batch.parameters, dtype=np.float64)
    h = hashlib.sha256()
    for part in (c.digest, backend.name, backend.calibration, repr(options), str(batch.shots)):
        h.update(part.encode())
    h.update(rows.tobytes())
    h.update(",".join(batch.template.observables).encode())
    meta = {"template": batch.template.name, "template_hash": batch.template.hash, "layout": c.layout,
            **{k: v for k, v in c.metrics.items() if k != "layout"}}
    return CompiledBatch(h.hexdigest(), c.circuit, rows, c.observables, batch.shots, meta)
