"""Plain data passed between pipeline stages (DESIGN §2).

plan -> CircuitBatch (logical template + parameter rows + observables + shots)
compile/split -> CompiledBatch (what a backend executes: ISA circuit, rows, mapped observables)
dispatch -> BatchResult (expectation values, standard errors, metadata)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp


@dataclass(frozen=True, eq=False)
class Template:
    """A logical sub-circuit: trained weights bound, per-token inputs left as ParameterVector "x"
    (in order, so parameter row i binds x[i]), no measurements."""

    name: str  # e.g. "layer0.A", "memory.k4"
    circuit: QuantumCircuit
    observables: tuple[str, ...]  # Pauli labels over the template's qubits (qubit 0 rightmost)
    hash: str  # stable content hash of the circuit and observables

    @property
    def n_inputs(self) -> int:
        return self.circuit.num_parameters


@dataclass(eq=False)
class CircuitBatch:
    """One template evaluated on many bindings. `inverse` maps the caller's rows to the
    deduplicated `parameters` rows (values[inverse] restores the caller's order)."""

    template: Template
    parameters: np.ndarray  # (bindings, n_inputs) float64, unique rows
    inverse: np.ndarray  # (caller rows,) int
    shots: int | None  # None: exact expectation values


@dataclass(eq=False)
class CompiledBatch:
    """What a backend executes: a circuit for its target with observables already mapped to the
    circuit's qubits, many parameter rows. `key` is a content hash of everything that determines
    the result, used for caching and the job store."""

    key: str
    circuit: QuantumCircuit
    parameters: np.ndarray  # (bindings, n_params)
    observables: list[SparsePauliOp]  # each over circuit.num_qubits
    shots: int | None
    meta: dict[str, Any] = field(default_factory=dict)  # template name, layout, cut info, ...


@dataclass(eq=False)
class BatchResult:
    values: np.ndarray  # (bindings, n_observables)
    stderr: np.ndarray  # same shape; zeros for exact
    meta: dict[str, Any] = field(default_factory=dict)  # shots, job_ids, seconds, cost, backend
