"""The delta method (docs/architecture.md, "Shots"): how each measured row's shot noise reaches the
outputs of the classical recurrence and head, to first order.

With g_c the gradient of output c with respect to the values a measured row u gave (autograd
through the model), summed over an example's uses of the row (a deduplicated row shared by
positions is one noise draw), and C_u the covariance of those values, row u adds
g_c^T C_u g_d to Cov(output c, output d) of the example. The shot planner and the adaptive rounds
(pipeline/shotplan.py, pipeline/adaptive.py) propagate margins this way; `logit_stderr` gives the
logits' standard errors of an ordinary run (qssm.logits, qssm.run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qssm.models.evaluator import ExactEvaluator, QuantumCall


def row_covariances(outputs: torch.Tensor, records: Sequence, variance: Callable[[int], np.ndarray],
                    keep_graph: bool = False):
    """outputs (B, k), computed from the leaves `records[i].values`, each caller row of which is
    example `records[i].example` and measured row `records[i].unit`; variance(u): (K, K) of row u.
    Returns per (example, row) entry its example, its row, a (M, k, k) = g^T C g, and per record the
    entry of each caller row. keep_graph: the forward's graph outlives this (another pass reads it)."""
    k = outputs.shape[-1]
    with torch.enable_grad():  # callers run under no_grad (inference); the graph is already built
        leaves = [r.values for r in records]
        grads = [torch.autograd.grad(outputs[:, c].sum(), leaves, retain_graph=keep_graph or c < k - 1, allow_unused=True)
                 for c in range(k)]
    example, unit, a, rows, offset = [], [], [], [], 0
    for i, r in enumerate(records):
        g = torch.stack([torch.zeros_like(r.values) if gr[i] is None else gr[i] for gr in grads])  # (k, ..., K)
        g = g.reshape(k, len(r.unit), -1).detach().numpy()
        pair, inv = np.unique(np.stack([r.example, r.unit], 1), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        summed = np.zeros((k, len(pair), g.shape[-1]))
        np.add.at(summed, (slice(None), inv), g)  # a row used twice in one example: its noise counts once
        kk = g.shape[-1]
        cov1 = np.stack([variance(u)[:kk, :kk] for u in pair[:, 1]])  # (P, K, K)
        a.append(np.einsum("cpk,dpl,pkl->pcd", summed, summed, cov1))
        example.append(pair[:, 0])
        unit.append(pair[:, 1])
        rows.append(offset + inv)
        offset += len(pair)
    return np.concatenate(example), np.concatenate(unit), np.concatenate(a), rows


def logit_stderr(logits: torch.Tensor, records: Sequence, variance: Callable[[int], np.ndarray],
                 shots: np.ndarray | None = None, keep_graph: bool = False) -> np.ndarray:
    """(B, classes) standard errors of the scored logits (the last position of `logits`), from the
    leaves in `records`; with `shots`, variance(u) is one shot's and row u had shots[u]."""
    with torch.enable_grad():  # a slice taken under no_grad would be cut from the graph
        last = logits[:, -1] if logits.dim() == 3 else logits
    if not records:
        return np.zeros(tuple(last.shape))
    example, unit, a, _ = row_covariances(last, records, variance, keep_graph)
    var = np.einsum("mcc->mc", a)
    if shots is not None:
        var = var / shots[unit][:, None]
    out = np.zeros(tuple(last.shape))
    np.add.at(out, example, var)
    return np.sqrt(out)


@dataclass
class Recorded:
    """One call's values in a forward: their mean, covariance (..., K, K), and per caller row its
    example and measured row (rows with equal inputs in one call are one deduplicated circuit)."""

    mean: torch.Tensor
    covariance: torch.Tensor
    example: np.ndarray
    unit: np.ndarray
    values: torch.Tensor | None = None  # the leaf of a replay


class Recorder:
    """An evaluator that passes calls to one with a `covariance` per call name (PipelineEvaluator)
    and keeps what `stderr` needs: each call's values, their covariance, and which rows share a circuit."""

    def __init__(self, inner):
        self.inner, self.calls, self.units = inner, [], 0

    def close(self) -> None:
        self.inner.close()

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        out = self.inner.evaluate(calls)
        for call, v in zip(calls, out):
            k = v.shape[-1]
            cov = self.inner.covariance.get(call.name)
            cov = torch.zeros((*v.shape, k), dtype=v.dtype) if cov is None else cov
            flat = call.inputs.detach().reshape(-1, call.inputs.shape[-1]).numpy()
            if call.sequential:  # QLAM memory: every (sequence, position) is its own prefix circuit
                unit = np.arange(len(flat))
            else:
                unit = np.unique(flat, axis=0, return_inverse=True)[1].reshape(-1)
            per = len(flat) // call.inputs.shape[0]
            self.calls.append(Recorded(v.detach(), cov.detach(), np.arange(len(flat)) // per, self.units + unit))
            self.units += int(unit.max()) + 1 if len(unit) else 0
        return out

    def covariances(self) -> list[np.ndarray]:
        """Per measured row: its values' covariance (..., K, K), in unit order."""
        out: list[np.ndarray] = []
        for rec in self.calls:  # a call's rows are units offset .. offset + distinct rows - 1
            _, first = np.unique(rec.unit, return_index=True)
            out += list(rec.covariance.reshape(len(rec.unit), *rec.covariance.shape[-2:]).numpy()[first])
        return out


class Replay:
    """Answers a forward's calls with the recorded means plus a zero leaf: the logits as a function
    of the measured values. A later QMamba layer's inputs depend on earlier values, so its values
    also follow its inputs, as the exact simulator's do."""

    def __init__(self, calls: list[Recorded]):
        self.calls, self.i = calls, 0

    def close(self) -> None:
        pass

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        out = []
        for call in calls:
            rec = self.calls[self.i]
            self.i += 1
            rec.values = torch.zeros_like(rec.mean).requires_grad_(True)
            v = rec.mean + rec.values
            if call.inputs.requires_grad:
                ideal = ExactEvaluator()._one(call)
                v = v + (ideal - ideal.detach())
            out.append(v)
        return out


def stderr(model, inputs: torch.Tensor, recorder: Recorder, logits: torch.Tensor) -> torch.Tensor:
    """(B, classes) standard errors of `logits`, the model's scored logits (the last position) in
    the forward the recorder saw: zero where every value was exact."""
    if all(not rec.covariance.any() for rec in recorder.calls):
        return torch.zeros_like(logits)
    covariances = recorder.covariances()
    grad = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # the leaves' gradients only
    try:
        with torch.enable_grad():
            out = model(inputs, Replay(recorder.calls))
        err = logit_stderr(out, recorder.calls, covariances.__getitem__)
    finally:
        for p, g in zip(model.parameters(), grad):
            p.requires_grad_(g)
    return torch.as_tensor(err, dtype=logits.dtype)
