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

from qssm.errors import QssmError
from qssm.models.evaluator import QuantumCall
from qssm.models.statevector import pauli_expectations, phi
from qssm.pipeline.gradients import jacobian, occurrences, shifted_rows
from qssm.pipeline.handoff import Handoff
from qssm.pipeline.obp import plan_backpropagated
from qssm.pipeline.plan import make_batch, plan_call, plan_segment, plan_trainable
from qssm.pipeline.shadows import basis_angles
from qssm.pipeline.tomography import tomography_paulis
from qssm.pipeline.tracker import Tracker
from qssm.types import BatchResult, CircuitBatch

Execute = Callable[[list[CircuitBatch]], list[BatchResult]]


class PipelineEvaluator:
    def __init__(self, execute: Execute, shots: int | None = None, segment: int = 0, token_table=None,
                 tracker: Tracker | None = None, counter: str = "round_trips", handoff: Handoff | None = None,
                 obp=None):
        self.execute = execute
        self.shots = shots or None
        self.segment = segment
        self.handoff = handoff or Handoff()
        self.obp = obp  # pipeline.obp.OBP or None: readouts of the last steps back-propagated
        self.keep_states = False  # keep each hand-off's estimate (benchmarks compare it to the exact state)
        self.handoff_states: list[dict] = []
        self.token_table = token_table  # pipeline.token_table.TokenTable or None
        self.tracker = tracker or getattr(execute, "tracker", None) or Tracker()
        self.counter = counter  # the tracker total its round trips add to ("table_round_trips" for a token table)
        self.round_trips = 0  # this evaluator's own
        self.stderr: dict[str, torch.Tensor] = {}  # last standard errors per call name
        # last covariance of each call's values at the shots they had, (..., K, K): the delta method's input
        # (pipeline/delta.py); zero for exact values
        self.covariance: dict[str, torch.Tensor] = {}
        self.progress = None  # anything with update(n): advanced once per round trip

    def close(self) -> None:
        """Close the backend the pipeline dispatches to (an IBM Session, a cluster client)."""
        close = getattr(self.execute, "close", None)  # a Pipeline closes its backend; a bare dispatch owns nothing
        if close is not None:
            close()

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
                if differentiable(call):  # never silently partial (pipeline/gradients.py)
                    out[i] = _NoGradient.apply(call.weights, call.inputs, out[i])
            elif self.token_table is not None and not differentiable(call) and (
                    hit := self.token_table.lookup(call)) is not None:
                out[i], self.covariance[call.name] = hit
                self.tracker.add(table_hits=1)
            else:
                pending.append(i)
        if pending:  # all stateless calls of this evaluate() share ONE round trip
            batches = [plan_trainable(calls[i], self.shots) if differentiable(calls[i]) else
                       plan_call(calls[i], self.shots) for i in pending]
            for i, batch, res in zip(pending, batches, self._round_trip(batches)):
                out[i] = self._restore(calls[i], batch, res)
                if differentiable(calls[i]):
                    call = calls[i]
                    out[i] = _ParameterShift.apply(phi(call.weights), call.inputs, out[i], self, batch)
        return out

    def shift_jacobian(self, batch: CircuitBatch) -> np.ndarray:
        """d values / d row for every caller row of a trainable batch: (rows, outputs, width), by the
        parameter-shift rule, from one more round trip through the pipeline."""
        counts = occurrences(batch.template.circuit)
        unique = batch.parameters
        shifted = make_batch(batch.template, shifted_rows(unique, counts), batch.shots)
        [res] = self._round_trip([shifted])
        return jacobian(res.values[shifted.inverse], len(unique), counts)[batch.inverse]

    def _restore(self, call: QuantumCall, batch: CircuitBatch, res: BatchResult) -> torch.Tensor:
        shape = (*call.inputs.shape[:-1], len(call.observables))
        dtype = call.inputs.dtype
        self.stderr[call.name] = torch.as_tensor(res.stderr[batch.inverse], dtype=dtype).reshape(shape)
        cov = value_covariance(res, batch.shots)[batch.inverse]
        self.covariance[call.name] = torch.as_tensor(cov, dtype=dtype).reshape(*shape, shape[-1])
        return torch.as_tensor(res.values[batch.inverse], dtype=dtype).reshape(shape)

    def _sequential(self, call: QuantumCall) -> torch.Tensor:
        """QLAM memory: one round trip per segment; the state at the end of a segment is estimated
        (tomography or classical shadows), purified or not, and re-prepared by the next segment's
        circuits (pipeline/handoff.py)."""
        if self.obp is not None and self.obp.steps:
            return self._backpropagated(call)
        b, t, _ = call.inputs.shape
        k = self.segment or t
        n, n_obs, h = call.n_qubits, len(call.observables), self.handoff
        values = np.zeros((b, t, n_obs))
        errors = np.zeros((b, t, n_obs))
        prep, rep = None, 1
        tomo = tomography_paulis(n)
        rng = np.random.default_rng(h.seed)
        for index, start in enumerate(range(0, t, k)):
            length = min(k, t - start)
            last_segment = start + length >= t
            # the last segment estimates its state too when its last readout is to be purified
            handoff = not last_segment or (h.purify_readout and h.purify)
            bases = h.shadow_bases(index, n) if handoff else None
            extra = tomo if handoff and bases is None else ()
            shots = max(1, self.shots // rep) if self.shots else None  # a mixture keeps the shots per sequence
            batches = plan_segment(call, start, length, prep, shots, extra, h.prep_kind, rep,
                                   None if bases is None else basis_angles(bases))
            results = self._round_trip(batches)
            for j in range(length):
                batch, res = batches[j], results[j]
                v = res.values[batch.inverse][:, :n_obs].reshape(b, rep, n_obs)
                e = res.stderr[batch.inverse][:, :n_obs].reshape(b, rep, n_obs)
                values[:, start + j] = v.mean(1)
                errors[:, start + j] = np.sqrt((e**2).mean(1) / rep)
            if handoff:
                last, res = batches[-1], results[-1]
                if bases is None:
                    rho = h.estimate(res.values[last.inverse][:, n_obs:], None, None, n, rep)
                else:
                    rho = h.estimate(None, res.values[last.inverse].reshape(b * rep, len(bases), -1), bases, n, rep)
                psi, weight = h.targets(rho, rng)
                if h.purify_readout and h.purify:  # the segment's last readout from the purified state
                    values[:, start + length - 1] = pauli_expectations(torch.as_tensor(psi), call.observables).numpy()
                if last_segment:
                    break
                prep, fid = h.angles(psi)
                rep = h.rep
                self.tracker.segment_purity += weight.tolist()
                self.tracker.prep_fidelity += fid.tolist()
                if self.keep_states:
                    self.handoff_states.append({"token": start + length, "rho": rho, "targets": psi, "fidelity": fid})
        self._diagonal(call, errors)
        return torch.as_tensor(values, dtype=call.inputs.dtype)

    def _diagonal(self, call: QuantumCall, errors: np.ndarray) -> None:
        """Standard errors without a covariance (QLAM's memory readouts: a mixture's, a back-propagated sum's)."""
        self.stderr[call.name] = torch.as_tensor(errors, dtype=call.inputs.dtype)
        self.covariance[call.name] = torch.diag_embed(self.stderr[call.name] ** 2)

    def _backpropagated(self, call: QuantumCall) -> torch.Tensor:
        """QLAM memory without a hand-off: the device runs prefixes of at most T - s steps, and
        the readouts of prefix k > T - s are measured on prefix k - s as back-propagated Pauli sums
        (pipeline/obp.py). One round trip."""
        batches, combine = plan_backpropagated(call, self.obp, self.shots, self.tracker)
        values, errors = combine(self._round_trip(batches))
        self._diagonal(call, errors)
        return torch.as_tensor(values, dtype=call.inputs.dtype)


def value_covariance(res: BatchResult, shots: int | None) -> np.ndarray:
    """(rows, K, K) covariance of a result's values at the shots they were measured with: the standard
    errors squared on the diagonal (readout correction widens them), the measure stage's one-shot
    covariance / shots off it (terms read from the same shots correlate); zero for exact values."""
    var = np.zeros_like(res.values) if res.stderr is None else res.stderr**2
    rows, k = var.shape
    cov = res.covariance
    out = cov / shots if cov is not None and shots and cov.shape == (rows, k, k) else np.zeros((rows, k, k))
    out[:, np.arange(k), np.arange(k)] = var
    return out


def differentiable(call: QuantumCall) -> bool:
    """Whether autograd will ask for this call's gradient."""
    return torch.is_grad_enabled() and (call.weights.requires_grad or call.inputs.requires_grad)


class _ParameterShift(torch.autograd.Function):
    """Values of a stateless call as a function of (phi(w), inputs); backward by parameter shift."""

    @staticmethod
    def forward(ctx, angles, inputs, values, evaluator, batch):
        ctx.evaluator, ctx.batch, ctx.n_w, ctx.shape = evaluator, batch, angles.numel(), inputs.shape
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        jac = torch.as_tensor(ctx.evaluator.shift_jacobian(ctx.batch), dtype=grad.dtype)
        g = torch.einsum("ro,row->rw", grad.reshape(jac.shape[0], -1), jac)
        return g[:, :ctx.n_w].sum(0), g[:, ctx.n_w:].reshape(ctx.shape), None, None, None


class _NoGradient(torch.autograd.Function):
    """QLAM's memory on a backend: its segments hand a measured state over, which has no gradient."""

    @staticmethod
    def forward(ctx, weights, inputs, values):
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        raise QssmError("gradients of QLAM's memory through a backend are not available: the segment hand-off "
                        "(tomography, re-preparation) is not differentiable; train with the exact evaluator, or "
                        "against a device's noise with `qssm train PRESET --noise DEVICE`")


def n_segments(t: int, k: int) -> int:
    return math.ceil(t / (k or t))
