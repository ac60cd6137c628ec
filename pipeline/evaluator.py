"""PipelineEvaluator: runs a model's quantum calls as circuit batches through an executor.

It implements the same Evaluator interface as the torch simulator, so the unchanged model code
runs on any backend: the model asks for expectation values, this class plans circuit batches,
hands each round trip to `execute` (compile -> split -> dispatch -> reconstruct, or any function
with that signature) and feeds the values back into the classical recurrence.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from qssm.circuits.stateprep import prep_angles
from qssm.models.evaluator import QuantumCall
from qssm.pipeline.plan import plan_call, plan_segment
from qssm.pipeline.tomography import dominant_pure_state, linear_inversion, tomography_paulis
from qssm.pipeline.types import BatchResult, CircuitBatch

Execute = Callable[[list[CircuitBatch]], list[BatchResult]]


@dataclass
class Stats:
    round_trips: int = 0
    batches: int = 0
    bindings: int = 0  # distinct parameter rows sent
    requested_rows: int = 0  # rows the model asked for, before deduplication
    circuits_shots: int = 0  # sum over batches of bindings x shots
    table_hits: int = 0  # sub-circuit calls answered by the token table
    seconds: float = 0.0
    segment_purity: list[float] = field(default_factory=list)  # kept eigenvalue per hand-off

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        pur = d.pop("segment_purity")
        if pur:
            d["mean_segment_purity"] = float(np.mean(pur))
        return d


class PipelineEvaluator:
    def __init__(self, execute: Execute, shots: int | None = None, segment: int = 0, token_table=None):
        self.execute = execute
        self.shots = shots or None
        self.segment = segment
        self.token_table = token_table  # pipeline.token_table.TokenTable or None
        self.stats = Stats()
        self.stderr: dict[str, torch.Tensor] = {}  # last standard errors per call name
        self.progress = None  # anything with update(n): advanced once per round trip

    @property
    def round_trips(self) -> int:
        return self.stats.round_trips

    def _round_trip(self, batches: list[CircuitBatch]) -> list[BatchResult]:
        start = time.perf_counter()
        results = self.execute(batches)
        self.stats.seconds += time.perf_counter() - start
        self.stats.round_trips += 1
        if self.progress is not None:
            self.progress.update(1)
        self.stats.batches += len(batches)
        for b in batches:
            self.stats.bindings += len(b.parameters)
            self.stats.requested_rows += len(b.inverse)
            self.stats.circuits_shots += len(b.parameters) * (b.shots or 0)
        return results

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(calls)
        pending = []
        for i, call in enumerate(calls):
            if call.sequential:
                out[i] = self._sequential(call)
            elif self.token_table is not None and (hit := self.token_table.lookup(call)) is not None:
                out[i] = hit
                self.stats.table_hits += 1
            else:
                pending.append(i)
        if pending:  # all stateless calls of this evaluate() share ONE round trip
            batches = [plan_call(calls[i], self.shots) for i in pending]
            for i, batch, res in zip(pending, batches, self._round_trip(batches)):
                out[i] = self._restore(calls[i], batch, res)
        return out

    def _restore(self, call: QuantumCall, batch: CircuitBatch, res: BatchResult) -> torch.Tensor:
        shape = (*call.inputs.shape[:-1], len(call.observables))
        dtype = call.inputs.dtype
        self.stderr[call.name] = torch.as_tensor(res.stderr[batch.inverse], dtype=dtype).reshape(shape)
        return torch.as_tensor(res.values[batch.inverse], dtype=dtype).reshape(shape)

    def _sequential(self, call: QuantumCall) -> torch.Tensor:
        """QLAM memory: one round trip per segment; the state is estimated by tomography at the end
        of each segment, projected to its dominant pure state and re-prepared."""
        b, t, _ = call.inputs.shape
        k = self.segment or t
        n_obs = len(call.observables)
        values = np.zeros((b, t, n_obs))
        errors = np.zeros((b, t, n_obs))
        prep = None
        tomo = tomography_paulis(call.n_qubits)
        for start in range(0, t, k):
            length = min(k, t - start)
            handoff = start + length < t
            batches = plan_segment(call, start, length, prep, self.shots, tomo if handoff else ())
            results = self._round_trip(batches)
            for j, (batch, res) in enumerate(zip(batches, results)):
                values[:, start + j] = res.values[batch.inverse][:, :n_obs]
                errors[:, start + j] = res.stderr[batch.inverse][:, :n_obs]
            if handoff:
                last, res = batches[-1], results[-1]
                rho = linear_inversion(res.values[last.inverse][:, n_obs:], call.n_qubits)
                psi, weight = dominant_pure_state(rho)
                self.stats.segment_purity += weight.tolist()
                prep = prep_angles(psi)
        self.stderr[call.name] = torch.as_tensor(errors, dtype=call.inputs.dtype)
        return torch.as_tensor(values, dtype=call.inputs.dtype)


def n_segments(t: int, k: int) -> int:
    return math.ceil(t / (k or t))
