"""measure: expectation values from samples (docs/architecture.md, "measure").

For a sampled estimate-mode batch, every Pauli term is measured in the qubit-wise-commuting group
that holds its basis: the stage replaces the batch's circuit by one measured circuit per group
(basis changes in gates every IBM ISA target has: rz, sx), and its post-processing turns each
group's outcome histogram back into expectation values with standard errors. Backends only ever
sample measured circuits, so readout mitigation and any other transform that needs raw outcomes
sees them the same way on every backend.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit

from qssm.pipeline.stages import SpecStage, first, map_batches
from qssm.types import BatchResult, CircuitBatch

COVARIANCE_PAIRS = 256  # term pairs up to which every sampled batch gets its values' covariance


@dataclass
class Group:
    basis: list[str]  # per qubit (index = qubit): "I", "X", "Y" or "Z"
    members: list[tuple[int, int]] = field(default_factory=list)  # (observable, term) it estimates

    @property
    def support(self) -> list[int]:
        return [q for q, p in enumerate(self.basis) if p != "I"]


def _term_basis(label: str) -> list[str]:
    return list(reversed(label))  # Qiskit labels put qubit 0 rightmost


def measurement_groups(observables) -> list[Group]:
    """Greedy qubit-wise-commuting grouping of every non-identity term (first fit)."""
    groups: list[Group] = []
    for i, obs in enumerate(observables):
        for j, label in enumerate(obs.paulis.to_labels()):
            basis = _term_basis(label)
            if set(basis) == {"I"}:
                continue
            for g in groups:
                if all(a == "I" or b == "I" or a == b for a, b in zip(g.basis, basis)):
                    g.basis = [a if a != "I" else b for a, b in zip(g.basis, basis)]
                    g.members.append((i, j))
                    break
            else:
                groups.append(Group(basis, [(i, j)]))
    return groups


def with_measurement(circuit: QuantumCircuit, group: Group) -> QuantumCircuit:
    """Rotate each support qubit's basis to Z (X: rz sx rz = H; Y: sx rz, mapping Y to Z) and
    measure it into register "meas" (bit k = k-th support qubit)."""
    qc = circuit.copy()
    support = group.support
    creg = ClassicalRegister(len(support), "meas")
    qc.add_register(creg)
    for q in support:
        if group.basis[q] == "X":
            qc.rz(math.pi / 2, q)
            qc.sx(q)
            qc.rz(math.pi / 2, q)
        elif group.basis[q] == "Y":
            qc.sx(q)
            qc.rz(math.pi / 2, q)
    for k, q in enumerate(support):
        qc.measure(q, creg[k])
    return qc


def parity_masks(observables, groups: list[Group]) -> list[list[tuple[int, int, int, complex]]]:
    """Per group: (observable, term, bit mask over the group's measured bits, coefficient)."""
    out = []
    for g in groups:
        pos = {q: k for k, q in enumerate(g.support)}
        rows = []
        for i, j in g.members:
            label = observables[i].paulis.to_labels()[j]
            mask = sum(1 << pos[q] for q, p in enumerate(_term_basis(label)) if p != "I")
            rows.append((i, j, mask, complex(observables[i].coeffs[j])))
        out.append(rows)
    return out


def identity_constants(observables) -> np.ndarray:
    """Each observable's identity coefficient: the exact part no measurement needs."""
    return np.array([sum(obs.coeffs[j].real for j, label in enumerate(obs.paulis.to_labels()) if set(label) == {"I"})
                     for obs in observables], dtype=np.float64)


def expectations(counts, observables, groups: list[Group], shots: int, readout: dict | None = None,
                 readout_shots: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """counts[g]: (bindings, 2**width) outcome histograms of group g (bit k = k-th support qubit;
    readout-corrected quasi-counts allowed). Returns (values, stderr), each (bindings, n_obs).
    `readout` ({circuit qubit: [p(1|0), p(0|1)]}) widens the standard errors for the correction."""
    n_bind = counts[0].shape[0] if len(counts) else 1
    values = np.zeros((n_bind, len(observables))) + identity_constants(observables)  # identity terms are exact
    var = np.zeros((n_bind, len(observables)))
    for g, (group, rows) in enumerate(zip(groups, parity_masks(observables, groups))):
        hist = np.asarray(counts[g], dtype=np.float64)
        # the shots the device counted, per row: a provider may return more or fewer than were asked
        # for (twirling rounds them up, IonQ rebuilds round(p x shots) per outcome); readout
        # correction keeps each row's total
        counted = hist.sum(axis=1)
        counted = np.where(counted > 0, counted, shots)
        probs = hist / counted[:, None]
        idx = np.arange(probs.shape[1])
        for i, j, mask, coef in rows:
            sign = 1.0 - 2.0 * (np.bitwise_count(idx & mask) & 1)  # bitwise_count is uint8
            m = probs @ sign
            values[:, i] += coef.real * m
            term_var = np.clip(1 - m**2, 0, None) / counted
            if readout:
                term_var = readout_variance(m, [group.support[k] for k in range(len(group.support)) if mask >> k & 1],
                                            readout, counted, readout_shots or shots)
            var[:, i] += coef.real**2 * term_var
    return values, np.sqrt(var)


def shot_covariance(counts, observables, groups: list[Group], shots: int) -> np.ndarray:
    """(bindings, n_obs, n_obs): the one-shot covariance of the observables' estimates. Terms of
    one group are read from the same shots, so their errors correlate: cov_ij = sum over term
    pairs a of i, b of j in one group of c_a c_b (E[s_a s_b] - E[s_a] E[s_b]), s the parity signs
    (the shot planner, pipeline/shotplan.py, propagates it to the decision)."""
    n_bind = counts[0].shape[0] if len(counts) else 1
    cov = np.zeros((n_bind, len(observables), len(observables)))
    for g, rows in enumerate(parity_masks(observables, groups)):
        hist = np.asarray(counts[g], dtype=np.float64)
        counted = hist.sum(axis=1)  # the shots the device counted, per row (as `expectations` divides)
        probs = hist / np.where(counted > 0, counted, shots)[:, None]
        idx = np.arange(probs.shape[1])
        signs = [(i, coef.real, 1.0 - 2.0 * (np.bitwise_count(idx & mask) & 1)) for i, _, mask, coef in rows]
        means = [probs @ sign for _, _, sign in signs]
        for (i, ci, si), mi in zip(signs, means):
            for (j, cj, sj), mj in zip(signs, means):
                cov[:, i, j] += ci * cj * (probs @ (si * sj) - mi * mj)
    return cov


def term_pairs(groups: list[Group]) -> int:
    """The term pairs shot_covariance sums over (its cost per binding)."""
    return sum(len(g.members) ** 2 for g in groups)


def readout_variance(m: np.ndarray, qubits: list[int], readout: dict, shots, cal_shots: int) -> np.ndarray:
    """Variance of a readout-corrected Pauli expectation m on `qubits` (first-order propagation):
    the inverse divides the raw parity by b = prod_q (1 - p(1|0) - p(0|1)), and the calibration's
    own shot noise adds var(p) (dm/dp)^2 per qubit:
        var = (1 - (m b)^2) / (b^2 shots) + sum_q ((1+m)^2 var p10_q + (1-m)^2 var p01_q) / b_q^2."""
    table = {int(q): v for q, v in readout.items()}
    bq = {q: max(1.0 - sum(table.get(q, (0.0, 0.0))), 1e-3) for q in qubits}
    b = float(np.prod(list(bq.values()))) if bq else 1.0
    mc = np.clip(m, -1, 1)
    var = (1 - np.clip(mc * b, -1, 1) ** 2) / (b**2 * np.maximum(shots, 1))
    for q in qubits:
        p10, p01 = table.get(q, (0.0, 0.0))
        var = var + ((1 + mc) ** 2 * p10 * (1 - p10) + (1 - mc) ** 2 * p01 * (1 - p01)) / (max(cal_shots, 1) * bq[q]**2)
    return var


class Measure(SpecStage):
    """The measure stage: sampled estimate-mode batches -> one measured circuit per group.
    Backends with a native estimator (the IBM runtime Estimator's resilience levels) take
    observables and shots themselves."""

    name = "measure"

    def __init__(self, backend=None):
        self.native = bool(backend is not None and backend.capabilities.native_estimator)

    def __call__(self, batches: list[CircuitBatch]):
        return map_batches(batches, self._one)

    def _one(self, batch: CircuitBatch):
        if batch.sampled or batch.shots is None or self.native:
            return [batch], first
        groups = measurement_groups(batch.observables)
        observables, shots = batch.observables, batch.shots
        cols = batch.columns[0] if batch.columns else None
        circuits = tuple(with_measurement(batch.circuit, g) for g in groups)
        # every measured circuit is the batch's circuit plus a tail: simulators evolve the shared body once
        child = batch.derive(circuits=circuits, observables=(), columns=(cols,) * len(circuits) if cols is not None
                             else (), meta={"groups": len(groups)}, shared_body=len(batch.circuit.data))

        def combine(results: list[BatchResult]) -> BatchResult:
            r = results[0] if results else BatchResult()
            values, stderr = expectations(r.counts, observables, groups, shots, r.readout, r.readout_shots)
            if not results:  # identity observables only: nothing was sent
                values = np.broadcast_to(values, (len(batch.parameters), len(observables))).copy()
                stderr = np.zeros_like(values)
            # the covariance feeds the delta method: the shot planner's rounds always, any other batch
            # while it is cheap (a tomography hand-off's groups have thousands of term pairs)
            planned = results and (batch.round is not None or term_pairs(groups) <= COVARIANCE_PAIRS)
            return dataclasses.replace(r, values=values, stderr=stderr, counts=(), readout=None, readout_shots=0,
                                       meta={**r.meta, "measurement_groups": len(groups)},
                                       covariance=shot_covariance(r.counts, observables, groups, shots) if planned else None)

        return ([child] if circuits else []), combine
