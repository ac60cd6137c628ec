"""PipelineEvaluator: runs a model's quantum calls as circuit batches through a pipeline.

It implements the same Evaluator interface as the torch simulator, so the unchanged model code
runs on any backend: the model asks for expectation values, this class plans circuit batches
(plan), hands each round trip to `execute` (a `Pipeline`: split -> compile -> mitigate -> measure
-> dispatch -> reconstruct, or any function with that signature) and feeds the values back into
the classical recurrence.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from qssm.circuits.stateprep import prep_angles
from qssm.models.evaluator import QuantumCall
from qssm.pipeline.plan import plan_call, plan_segment
from qssm.pipeline.tomography import dominant_pure_state, linear_inversion, tomography_paulis
from qssm.pipeline.tracker import Tracker
from qssm.pipeline.types import BatchResult, CircuitBatch

Execute = Callable[[list[CircuitBatch]], list[BatchResult]]


class PipelineEvaluator:
    def __init__(self, execute: Execute, shots: int | None = None, segment: int = 0, token_table=None,
                 tracker: Tracker | None = None, counter: str = "round_trips"):
        self.execute = execute
        self.shots = shots or None
        self.segment = segment
        self.token_table = token_table  # pipeline.token_table.TokenTable or None
        self.tracker = tracker or getattr(execute, "tracker", None) or Tracker()
        self.counter = counter  # the tracker total its round trips add to ("table_round_trips" for a token table)
        self.round_trips = 0  # this evaluator's own
        self.stderr: dict[str, torch.Tensor] = {}  # last standard errors per call name
        self.progress = None  # anything with update(n): advanced once per round trip

    def _round_trip(self, batches: list[CircuitBatch]) -> list[BatchResult]:
        results = self.execute(batches)
        self.round_trips += 1
        self.tracker.add(**{self.counter: 1}, batches=len(batches), bindings=sum(len(b.parameters) for b in batches),
                         requested_rows=sum(len(b.inverse) for b in batches))
        if self.progress is not None:
            self.progress.update(1)
        return results

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(calls)
        pending = []
        for i, call in enumerate(calls):
            if call.sequential:
                out[i] = self._sequential(call)
            elif self.token_table is not None and (hit := self.token_table.lookup(call)) is not None:
                out[i] = hit
                self.tracker.add(table_hits=1)
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
                self.tracker.segment_purity += weight.tolist()
                prep = prep_angles(psi)
        self.stderr[call.name] = torch.as_tensor(errors, dtype=call.inputs.dtype)
        return torch.as_tensor(values, dtype=call.inputs.dtype)


def n_segments(t: int, k: int) -> int:
    return math.ceil(t / (k or t))
