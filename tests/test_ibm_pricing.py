"""IBM prices the runtime jobs dispatch creates: one pack per round trip (its sampled batches'
PUBs in the same jobs), split at the executions limit the way `IBMBackend._chunks` splits it
(whole executions per job)."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from qssm.backends.ibm import JOB_OVERHEAD_S, MAX_EXECUTIONS_PER_JOB
from qssm.backends.registry import pricing_backend
from qssm.types import CircuitBatch, Pack


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
    est = ibm.estimate_cost([[b]])
    assert est["tasks"] == ibm.units(b) == len(ibm.pubs(b))
    assert est["qpu_seconds"] >= ibm.units(b) * JOB_OVERHEAD_S


@pytest.mark.parametrize("sizes", [[(10, 300, 1), (20, 300, 2)], [(2500, 4000, 1), (2501, 4000, 1), (3, 4000, 5)],
                                   [(1, MAX_EXECUTIONS_PER_JOB // 2, 1)] * 3])
def test_a_round_trip_is_one_pack_and_priced_as_dispatch_sends_it(sizes):
    ibm = pricing_backend("ibm:ibm_fez")
    batches = [batch(*s) for s in sizes]
    pack = Pack(tuple(batches))
    jobs = ibm.pubs(pack)
    est = ibm.estimate_cost([batches])
    assert est["tasks"] == ibm.units(pack) == len(jobs) < len(batches) + sum(ibm.units(b) for b in batches)
    # every member's rows, in order, with its own shots; no job over the limit unless one execution is
    pubs = [pub for job in jobs for pub in job]
    it = iter(pubs)
    for b in batches:
        for i, c in enumerate(b.circuits):
            got = 0
            while got < len(b.parameters):
                circuit, rows, shots = next(it)
                assert circuit is c and shots == b.shots
                np.testing.assert_array_equal(rows, b.rows(i)[got:got + len(rows)])
                got += len(rows)
    assert next(it, None) is None
    assert all(sum(len(r) * s for _, r, s in job) <= MAX_EXECUTIONS_PER_JOB or len(job) == 1 for job in jobs)
    apart = ibm.estimate_cost([[b] for b in batches])  # one batch per round trip: no packing across them
    assert apart["tasks"] == sum(ibm.units(b) for b in batches) > est["tasks"]
    assert apart["qpu_seconds"] - est["qpu_seconds"] == pytest.approx((apart["tasks"] - est["tasks"]) * JOB_OVERHEAD_S)


@pytest.mark.parametrize("twirling", [False, True])
def test_a_pack_holds_one_shot_count(twirling):
    """Shots are job-wide (qiskit-ibm-runtime 0.48 deprecated PUBs with different shots in one job;
    twirling splits them once per job): other shots go in other jobs."""
    ibm = pricing_backend("ibm:ibm_fez")
    ibm.configure(twirling=twirling)
    a, b, c = batch(10, 100), batch(11, 100), batch(12, 400)
    assert ibm.pack_class(a) == ibm.pack_class(b) != ibm.pack_class(c)
    assert ibm.estimate_cost([[a, b, c]])["tasks"] == 2
