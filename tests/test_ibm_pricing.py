"""IBM prices the runtime jobs dispatch creates: one per batch, split at the executions limit the
way `IBMBackend._chunks` splits it (whole executions per job)."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from qssm.backends.ibm import JOB_OVERHEAD_S, MAX_EXECUTIONS_PER_JOB
from qssm.backends.registry import pricing_backend
from qssm.types import CircuitBatch


def batch(rows: int, shots: int, circuits: int = 1) -> CircuitBatch:
    qc = QuantumCircuit(1, 1)
    qc.rx(Parameter("x"), 0)
    qc.measure(0, 0)
    return CircuitBatch((qc,) * circuits, np.zeros((rows, 1)), shots=shots, key=f"k{rows}-{shots}-{circuits}")


@pytest.mark.parametrize("rows,shots,circuits", [
    (10_000, 3000, 1),  # 3333 executions per job: 4 jobs, though 30M executions x shots / 10M is 3
    (1, 4000, 8), (2500, 4000, 1), (2501, 4000, 1), (5000, 4000, 3), (7, MAX_EXECUTIONS_PER_JOB, 2),
])
def test_ibm_price_counts_the_jobs_dispatch_creates(rows, shots, circuits):
    ibm = pricing_backend("ibm:ibm_fez")
    b = batch(rows, shots, circuits)
    est = ibm.estimate_cost([b])
    assert est["tasks"] == ibm.units(b) == len(ibm.pubs(b))
    assert est["qpu_seconds"] >= ibm.units(b) * JOB_OVERHEAD_S
