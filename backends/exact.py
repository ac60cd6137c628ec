"""exact: the torch statevector simulator behind the backend contract.

Runs logical circuits (rx ry rz cx cz; angles are circuit parameters or numbers) for every binding
in one batched call, in float64. Without shots the values are exact; with shots, each observable
is sampled as a +-1 variable with the exact probabilities (seeded).
"""

from __future__ import annotations

import uuid

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from qssm.backends.base import Backend, Handle
from qssm.errors import QssmError
from qssm.models.ansatz import Op
from qssm.models.statevector import compile_ops, pauli_expectations, run_program
from qssm.pipeline.types import BatchResult, CompiledBatch

GATES = {"rx", "ry", "rz", "cx", "cz"}


def circuit_ops(circuit: QuantumCircuit) -> tuple[list[Op], torch.Tensor]:
    """A logical circuit -> (gate list, constant angles): parameters become inputs (their column in
    the parameter row), numbers become fixed "weights"."""
    column = {p: i for i, p in enumerate(circuit.parameters)}
    ops, consts = [], []
    for inst in circuit.data:
        name = inst.operation.name
        qubits = tuple(circuit.find_bit(q).index for q in inst.qubits)
        if name == "barrier":
            continue
        if name not in GATES:
            raise QssmError(f"exact backend cannot run gate {name!r}; it runs logical templates (rx ry rz cx cz)")
        if name in ("cx", "cz"):
            ops.append(Op(name, qubits))
            continue
        angle = inst.operation.params[0]
        if isinstance(angle, Parameter):
            ops.append(Op(name, qubits, "in", column[angle]))
        elif hasattr(angle, "parameters") and angle.parameters:
            raise QssmError("exact backend needs plain parameters as angles; run the logical template")
        else:
            ops.append(Op(name, qubits, "w", len(consts)))
            consts.append(float(angle))
    return ops, torch.tensor(consts, dtype=torch.float64)


class ExactBackend(Backend):
    name = "exact"
    deterministic = True
    max_shots = 10_000_000

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._results: dict[str, BatchResult] = {}
        self._programs: dict[int, tuple] = {}

    def _program(self, circuit: QuantumCircuit):
        key = id(circuit)
        if key not in self._programs:
            ops, consts = circuit_ops(circuit)
            self._programs[key] = (circuit, compile_ops(ops, circuit.num_qubits, consts))
        return self._programs[key][1]

    def evaluate(self, batch: CompiledBatch) -> BatchResult:
        prog = self._program(batch.circuit)
        rows = torch.as_tensor(batch.parameters, dtype=torch.float64)
        labels = [o.paulis.to_labels() for o in batch.observables]
        flat = [lab for labs in labels for lab in labs]
        with torch.no_grad():
            state = run_program(prog, rows)
            terms = pauli_expectations(state, flat).numpy()
        values = np.zeros((len(rows), len(labels)))
        k = 0
        for i, obs in enumerate(batch.observables):
            n = len(labels[i])
            values[:, i] = terms[:, k : k + n] @ obs.coeffs.real
            k += n
        stderr = np.zeros_like(values)
        if batch.shots:
            rng = np.random.default_rng([self.seed or 0, int(batch.key[:8], 16)])
            p = np.clip((1 + values) / 2, 0, 1)
            values = 2 * rng.binomial(batch.shots, p) / batch.shots - 1
            stderr = np.sqrt(np.clip(1 - values**2, 0, None) / batch.shots)
        return BatchResult(values, stderr, {"backend": self.name, "shots": batch.shots or 0, "job_ids": []})

    def submit(self, batch: CompiledBatch) -> Handle:
        job = f"exact-{uuid.uuid4().hex[:12]}"
        self._results[job] = self.evaluate(batch)
        return Handle(self.name, [job])

    def status(self, handle: Handle) -> str:
        return "done" if handle.job_ids[0] in self._results else "unknown"

    def result(self, handle: Handle, batch: CompiledBatch | None = None) -> BatchResult:
        return self._results.pop(handle.job_ids[0])

    def cancel(self, handle: Handle) -> None:
        self._results.pop(handle.job_ids[0], None)
