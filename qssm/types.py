"""Plain data passed between pipeline stages (docs/architecture.md, "Data").

plan -> CircuitBatch (a logical template, deduplicated parameter rows, observables, shots)
every stage -> CircuitBatch (the same type: ISA circuits after compile, measured circuits after measure)
dispatch -> BatchResult (values or raw counts), mapped back by each stage's post-processing
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

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
    """The one batch type every stage maps: circuits evaluated on many parameter rows.

    Two modes, told apart by `observables`:
    - estimate: `observables` over circuits[0]'s qubits; the backend returns their values
      (exact when `shots` is None);
    - sample: no observables; every circuit carries its own measurements and the backend returns
      each circuit's outcome histogram over its clbits, `shots` per row.
    Circuit i binds `parameters[:, columns[i]]` (all columns in order where `columns` is empty or
    holds None). `key` is a content hash of everything that determines the result, set by the
    compile stage and kept up to date by every later stage; the job store keys on it."""

    circuits: tuple[QuantumCircuit, ...]
    parameters: np.ndarray  # (bindings, width) float64
    observables: tuple[SparsePauliOp, ...] = ()
    shots: int | None = None
    columns: tuple[np.ndarray | None, ...] = ()
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # report-only tags: template name, layout, metrics, cut
    template: Template | None = None  # the logical template it was planned from
    inverse: np.ndarray | None = None  # caller rows -> unique rows (values[inverse] restores the order)
    # -- what crosses modules (docs/architecture.md, "Data") --------------------------------------
    first_row: int = 0  # offset of these rows in the batch they were cut from (cluster chunks sample as the whole)
    shared_body: int | None = None  # measured circuits share their first `shared_body` instructions (one body, k bases)
    calibration: tuple[int, ...] | None = None  # a readout-calibration batch: the qubits it calibrates
    seconds_per_shot: float = 0.0  # the compiled circuit's scheduled duration: what QPU-time pricing multiplies
    round: int | None = None  # the shot planner's / adaptive rounds' round that asked for these rows (in the key)

    @property
    def sampled(self) -> bool:
        return not self.observables

    @property
    def circuit(self) -> QuantumCircuit:
        return self.circuits[0]

    def rows(self, i: int = 0) -> np.ndarray:
        """The parameter rows circuit i binds, in its own parameter order."""
        cols = self.columns[i] if i < len(self.columns) else None
        return self.parameters if cols is None else self.parameters[:, cols]

    @property
    def executions(self) -> int:
        """Circuit executions a backend runs for this batch (rows x circuits)."""
        return len(self.parameters) * len(self.circuits)

    def derive(self, **changes) -> CircuitBatch:
        """A copy with some fields replaced (meta merged, not replaced)."""
        meta = {**self.meta, **changes.pop("meta", {})}
        return replace(self, meta=meta, **changes)


@dataclass(frozen=True, eq=False)
class Pack:
    """Sampled batches of one round trip that a backend runs as one provider job set (IBM: every
    member's PUBs in one Sampler job; docs/architecture.md, "Packs"). Its key, a hash of the members'
    keys in order, is the identity its jobs carry: the same members always make the same pack."""

    members: tuple[CircuitBatch, ...]

    @property
    def key(self) -> str:
        return hashlib.sha256("\n".join(b.key for b in self.members).encode()).hexdigest()

    @property
    def sampled(self) -> bool:
        return True


def members(unit: CircuitBatch | Pack) -> tuple[CircuitBatch, ...]:
    """The batches a unit of dispatch carries: a pack's members, or the batch itself."""
    return unit.members if isinstance(unit, Pack) else (unit,)


@dataclass(eq=False)
class BatchResult:
    """What a batch gave back: values (estimate mode) or per-circuit outcome histograms (sample
    mode: counts[i] is (bindings, 2**num_clbits), clbit k = bit k; float once readout-corrected)."""

    values: np.ndarray | None = None  # (bindings, n_observables)
    stderr: np.ndarray | None = None
    counts: tuple[np.ndarray, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)  # report-only tags: backend, template, method, cut
    # -- accounting, summed when results merge (ZNE scales, cut subexperiments) -------------------
    shots: int = 0  # shots per row the provider ran
    job_ids: tuple[str, ...] = ()  # provider job ids / task ARNs
    cost_usd: float = 0.0
    seconds: float = 0.0  # wall seconds the backend took
    # -- readout correction applied to `counts` (pipeline/mitigation.py): its standard errors grow --
    readout: dict | None = None  # clbit -> (p(1|0), p(0|1)) of the measured qubit
    readout_shots: int = 0  # shots per calibration circuit
    covariance: np.ndarray | None = None  # (bindings, n_obs, n_obs) one-shot covariance of the values (measure stage)

    ACCOUNTING = ("shots", "job_ids", "cost_usd", "seconds")

    def accounting(self) -> dict[str, Any]:
        """The accounting fields as plain data (the job store keeps them beside the arrays)."""
        return {"shots": self.shots, "job_ids": list(self.job_ids), "cost_usd": self.cost_usd, "seconds": self.seconds}


def merged(parts: list[BatchResult], values: np.ndarray | None, stderr: np.ndarray | None = None,
           **meta: Any) -> BatchResult:
    """One result from the results of the batches one batch became (ZNE's scales, a cut's
    subexperiments): the combined values, and the accounting of every part added up."""
    return BatchResult(values, stderr, meta={**(parts[0].meta if parts else {}), **meta},
                       shots=sum(p.shots for p in parts), job_ids=tuple(j for p in parts for j in p.job_ids),
                       cost_usd=sum(p.cost_usd for p in parts), seconds=sum(p.seconds for p in parts))


Post = Callable[[list[BatchResult]], list[BatchResult]]
