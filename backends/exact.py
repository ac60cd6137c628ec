"""exact: the torch statevector simulator behind the backend contract.

Runs logical circuits (rx ry rz cx cz, and the sx / x / measure of measured circuits; angles are
circuit parameters or numbers) for every binding in one batched call, in float64. Estimate mode
gives exact values; sample mode draws each measured circuit's outcomes from its exact distribution
(seeded per batch).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from qssm.backends.base import Capabilities, LocalBackend, batch_seed
from qssm.backends.sampling import broadcast, sample_counts
from qssm.errors import QssmError
from qssm.models.ansatz import Op
from qssm.models.statevector import (
    compile_ops,
    default_device,
    one_thread,
    pauli_expectations,
    run_ops,
    run_program,
)
from qssm.types import BatchResult, CircuitBatch

GATES = {"rx", "ry", "rz", "cx", "cz"}
FIXED = {"sx": ("rx", math.pi / 2), "x": ("rx", math.pi)}  # equal up to a global phase


def circuit_ops(circuit: QuantumCircuit) -> tuple[list[Op], torch.Tensor, dict[int, int]]:
    """A logical circuit -> (gate list, constant angles, clbit -> measured qubit): parameters become
    inputs (their column in the parameter row), numbers become fixed "weights"."""
    column = {p: i for i, p in enumerate(circuit.parameters)}
    ops, consts, measured = [], [], {}
    for inst in circuit.data:
        name = inst.operation.name
        qubits = tuple(circuit.find_bit(q).index for q in inst.qubits)
        if name == "barrier":
            continue
        if name == "measure":
            measured[circuit.find_bit(inst.clbits[0]).index] = qubits[0]
            continue
        if any(q in measured.values() for q in qubits):
            raise QssmError("the exact backend samples circuits whose measurements come last; run mid-circuit "
                            "measurements (cut circuits) on aer or a device backend")
        if name in FIXED:
            name, angle = FIXED[name]
            ops.append(Op(name, qubits, "w", len(consts)))
            consts.append(angle)
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
    return ops, torch.tensor(consts, dtype=torch.float64, device=default_device()), measured


def _rows(rows: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(rows, dtype=torch.float64, device=default_device())


def outcome_probabilities(probs: torch.Tensor, measured: dict[int, int], num_clbits: int) -> np.ndarray:
    """(B, 2^n) basis-state probabilities -> (B, 2^num_clbits) over the clbits (clbit k = bit k)."""
    b, d = probs.shape
    idx = torch.arange(d, device=probs.device)
    outcome = torch.zeros(d, dtype=torch.long, device=probs.device)
    for k, q in measured.items():
        outcome |= ((idx >> q) & 1) << k
    out = torch.zeros(b, 2**num_clbits, dtype=probs.dtype, device=probs.device)
    out.index_add_(1, outcome, probs)
    return out.cpu().numpy()


class ExactBackend(LocalBackend):
    name = "exact"
    prefix = "exact"

    def __init__(self, seed: int | None = None):
        super().__init__()
        self.seed = seed
        self._programs: dict[int, tuple] = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_shots=10_000_000, mid_circuit_measurement=False, chunkable=True)

    def _program(self, circuit: QuantumCircuit):
        key = id(circuit)
        if key not in self._programs:  # keep the circuit alive so its id stays unique
            ops, consts, measured = circuit_ops(circuit)
            self._programs[key] = (circuit, compile_ops(ops, circuit.num_qubits, consts), measured)
            while len(self._programs) > 64:
                self._programs.pop(next(iter(self._programs)))
        return self._programs[key][1:]

    def _states(self, batch: CircuitBatch):
        """(circuit index, measured clbits, final states) per measured circuit. Circuits that share
        a body (the measure stage's groups) evolve it once; each tail runs on a copy."""
        body = batch.shared_body
        if body is None:
            for i, circuit in enumerate(batch.circuits):
                prog, measured = self._program(circuit)
                rows = batch.rows(i)[:1] if circuit.num_parameters == 0 else batch.rows(i)
                yield i, measured, run_program(prog, _rows(rows))
            return
        first = batch.circuits[0]
        head = first.copy_empty_like()
        for inst in first.data[:body]:
            head.append(inst)
        prog, _ = self._program(head)
        rows = batch.rows(0)[:1] if head.num_parameters == 0 else batch.rows(0)
        state = run_program(prog, _rows(rows))
        for i, circuit in enumerate(batch.circuits):
            tail = circuit.copy_empty_like()
            for inst in circuit.data[body:]:
                tail.append(inst)
            ops, consts, measured = circuit_ops(tail)
            yield i, measured, run_ops(ops, circuit.num_qubits, _rows(np.zeros((len(state), 0))), consts, state)

    def evaluate(self, batch: CircuitBatch) -> BatchResult:
        with torch.no_grad(), one_thread():
            return self._evaluate(batch)

    def _evaluate(self, batch: CircuitBatch) -> BatchResult:
        meta = {"backend": self.name}
        if batch.sampled:
            counts = []
            seed = batch_seed(self.seed or 0, batch.key or "0" * 8)
            with torch.no_grad():
                for i, measured, state in self._states(batch):
                    probs = outcome_probabilities(state.real**2 + state.imag**2, measured, batch.circuits[i].num_clbits)
                    first = batch.first_row if len(probs) > 1 else 0  # a chunk of a larger batch
                    counts.append(broadcast(sample_counts(probs, batch.shots, [seed, i], first_row=first),
                                            len(batch.parameters)))
            return BatchResult(counts=tuple(counts), meta=meta, shots=batch.shots or 0)
        prog, _ = self._program(batch.circuit)
        labels = [o.paulis.to_labels() for o in batch.observables]
        flat = [lab for labs in labels for lab in labs]
        with torch.no_grad():
            state = run_program(prog, _rows(batch.rows()))
            terms = pauli_expectations(state, flat).cpu().numpy()
        values = np.zeros((len(batch.parameters), len(labels)))
        k = 0
        for i, obs in enumerate(batch.observables):
            n = len(labels[i])
            values[:, i] = terms[:, k : k + n] @ obs.coeffs.real
            k += n
        if batch.shots:
            raise QssmError("the exact backend samples measured circuits: run sampled batches through the measure stage")
        return BatchResult(values, np.zeros_like(values), meta=meta, shots=batch.shots or 0)
