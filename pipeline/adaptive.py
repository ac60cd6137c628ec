"""Adaptive, decision-aware shots at run time: `[backend] shots = "auto"` (docs/architecture.md, "Shots").

    round 0   every circuit, at the shots the noiseless forward's sensitivity asks for (Neyman for
              the exact margins), between MIN_PILOT and pilot_shots
    round r   per example: top-1 minus top-k margins of the pooled-mean forward and their covariance
              by the delta method (pipeline/shotplan.py); an example is decided when P(its argmax
              differs from the infinite-shot one) <= 1 - confidence (the measured margins less
              their curvature shift) and none of the curvature's draws through the model changes
              its argmax (else its margins' variances are cut VETO_CUT x at its cheapest rows,
              Sensitivity.tighten), or capped at max_shots_per_example (0: 16 uniform pilot
              rounds' worth); the undecided ones get each measured row's Neyman shots
              (sensitivity x standard deviation over cost), at most 4x a row's shots per round,
              in powers of two, and run again
    stop      when every example is decided or capped, or after MAX_ROUNDS

Each round is ordinary batches through the stages and dispatch (so the job store and the
preflight see them); a row measured again pools its counts with the earlier rounds' (shots-weighted
means). A QMamba layer's circuit inputs depend on the layers before it, so when an earlier layer's
values move its rows are new circuits, measured at the shots the sensitivity of the final logits to
that layer's values asks. Round batches carry their round in their content key, so every round
samples afresh and a killed job resumes bit-identical (the store replays finished rounds).
"""

from __future__ import annotations

import numpy as np
import torch
from qiskit.quantum_info import SparsePauliOp

from qssm.models.evaluator import ExactEvaluator
from qssm.pipeline.delta import logit_stderr
from qssm.pipeline.measure import measurement_groups
from qssm.pipeline.shotplan import (
    Pool,
    Record,
    ShotEvaluator,
    curvature_bias,
    final_logits,
    flip_probability,
    sensitivity,
)

MAX_ROUNDS = 8
MIN_PILOT = 2  # shots of the pilot on a circuit no decision is sensitive to
PAIRS = 4  # antithetic draws per round for the curvature shift
VETO_CUT = 2  # a vetoed example's margin variances are cut this much per round, at its cheapest rows
GROWTH = 4  # a row's shots grow at most this much per round: margins from few shots are themselves noisy


def quantize(shots: np.ndarray, pilot: int) -> np.ndarray:
    """Up to the next pilot x 2^j (at least pilot): few distinct shot counts, so few batches per
    template and round."""
    steps = np.ceil(np.log2(np.maximum(shots, pilot) / pilot) - 1e-9)
    return (pilot * 2.0 ** np.maximum(steps, 0)).astype(np.int64)


class Prior:
    """The exact simulator as the pilot's prior: the noiseless forward's margins and their
    sensitivity to every circuit's value (one-shot variance 1 - <P>^2) say, before any shot is
    spent, which circuits can move a decision. Each caller row is its own unit."""

    def __init__(self):
        self.pool, self.records, self.exact = Pool(), [], ExactEvaluator()

    def evaluate(self, calls):
        out = []
        for call in calls:
            v = self.exact._one(call)  # differentiable in its inputs: later QMamba layers see earlier ones
            k = v.shape[-1]
            flat = v.detach().reshape(-1, k).numpy()
            n, per = len(flat), len(flat) // call.inputs.shape[0]
            cost = len(measurement_groups([SparsePauliOp(o) for o in call.observables]))
            start = len(self.pool.shots)
            self.pool.shots += [1] * n
            self.pool.cost += [cost] * n
            self.pool.values += list(flat)
            self.pool.var1 += [np.diag(np.clip(1 - f**2, 0, 1)) for f in flat]
            leaf = torch.zeros_like(v).requires_grad_(True)
            rows = np.arange(n)
            self.records.append(Record(call.name, leaf, rows // per, rows % per, start + rows))
            out.append(v + leaf)
        return out


def pilot_targets(model, inputs: torch.Tensor, pilot: int, confidence: float) -> dict[str, np.ndarray]:
    """Per call and (example, position): the pilot's shots, the noiseless forward's Neyman shots
    for the target confidence, at least MIN_PILOT and at most `pilot`, in powers of two."""
    prior = Prior()
    with torch.enable_grad():
        logits = model(inputs, prior)
    sens = sensitivity(logits, prior.records, prior.pool)
    _, cost = prior.pool.arrays()
    want, _ = sens.neyman(cost, confidence)
    want = quantize(np.clip(np.nan_to_num(want, posinf=pilot), MIN_PILOT, pilot), 1)
    targets = {}
    for rec, rows in zip(prior.records, sens.rows):
        t = targets.setdefault(rec.name, np.full((len(inputs), rec.position.max() + 1), MIN_PILOT, dtype=np.int64))
        np.maximum.at(t, (rec.example, rec.position), want[rows])
    return targets


def run_adaptive(model, inputs: torch.Tensor, pipeline, backend_spec, progress=None) -> tuple[torch.Tensor, dict]:
    pilot, confidence, cap = backend_spec.pilot_shots, backend_spec.confidence, backend_spec.max_shots_per_example
    alpha = 1 - confidence
    ev = ShotEvaluator(pipeline, pilot)
    ev.pool.sampled = True
    model.requires_grad_(False)
    ev.targets = pilot_targets(model, inputs, pilot, confidence)
    b = len(inputs)
    out = None
    active = np.arange(b)
    stopped_round = np.full(b, -1)
    decided = np.zeros(b, dtype=bool)
    uses: list[np.ndarray] = []  # (example, row) pairs of every round, for shots per example
    rounds = []
    for r in range(MAX_ROUNDS):
        ev.round, ev.examples, ev.records = r, active, []
        with torch.enable_grad():
            logits = model(inputs[active], ev)
        if out is None:
            out = torch.zeros((b, *logits.shape[1:]), dtype=logits.dtype)
            err = torch.zeros((b, logits.shape[-1]), dtype=logits.dtype)  # the scored logits' standard errors
        out[active] = logits.detach()
        err[active] = torch.as_tensor(logit_stderr(logits, ev.records, ev.pool.variance,
                                                   ev.pool.arrays()[0], keep_graph=True))
        sens = sensitivity(logits, ev.records, ev.pool)
        shots, cost = ev.pool.arrays()
        uses.append(np.stack([active[sens.example], sens.unit], 1))
        spent = _per_example(uses, shots, cost, b)[active]
        if r == 0 and not cap:  # CAP_PILOTS uniform pilot rounds: pilot x the example's measured circuits
            cap = backend_spec.CAP_PILOTS * pilot * float(_per_example(uses, np.ones(len(shots)), cost, b).mean())
        # measured margins carry the curvature shift of their shots (QMamba's recurrence bends noise
        # into bias): the infinite-shot margins are estimated without it
        shift, flipped = curvature_bias(model, inputs[active], ev.records, ev.pool, sens, shots, pairs=PAIRS, seed=r)
        sens.margin = sens.margin - shift
        cov = sens.cov(shots)
        p = flip_probability(sens.margin, cov)
        # a stop needs the model's word too: the delta method's Gaussian is too narrow where a
        # draw through the recurrence at these shots already changes the decision (QMamba's shared,
        # nonlinear token rows at the pilot's few shots)
        clear = p <= alpha
        vetoed, sure = clear & flipped, clear & ~flipped
        done = sure | (spent >= cap) | (r == MAX_ROUNDS - 1)
        decided[active[sure]] = True
        stopped_round[active[done]] = r
        rounds.append({"round": r, "examples": int(len(active)), "decided": int(sure.sum()), "vetoed": int(vetoed.sum()),
                       "capped": int((done & ~sure).sum()),
                       "shots": int((shots * cost).sum())})
        if progress is not None:
            progress.update(1)
        if done.all():
            break
        want, _ = sens.neyman(cost, confidence)
        now = shots[sens.unit]
        want = np.clip(np.nan_to_num(want, posinf=GROWTH * now), now, GROWTH * now)
        # its margins look clear: only more shots tell; VETO_CUT x less variance, at its cheapest rows
        if vetoed.any():
            want = np.where(vetoed[sens.example], sens.tighten(cost, now, VETO_CUT, GROWTH), want)
        # the cap: an example's further rows scaled so its shots stay within it
        extra = np.bincount(sens.example, (want - now) * cost[sens.unit], minlength=len(active))
        room = np.maximum(cap - spent, 0)
        scale = np.where(extra > room, room / np.maximum(extra, 1e-300), 1.0)
        want = quantize(now + (want - now) * scale[sens.example], 1)
        for rec, rows in zip(ev.records, sens.rows):
            keep = ~done[rec.example]
            target = ev.targets.setdefault(rec.name, np.full((b, rec.position.max() + 1), pilot, dtype=np.int64))
            ex, pos = active[rec.example[keep]], rec.position[keep]
            target[ex, pos] = np.maximum(target[ex, pos], want[rows[keep]])
        active = active[~done]
    shots, cost = ev.pool.arrays()
    per_example = _per_example(uses, shots, cost, b)
    info = {"rounds": rounds, "decided": int(decided.sum()), "capped": int(b - decided.sum()),
            "decided_examples": decided.tolist(),
            "stopped_round": stopped_round.tolist(), "shots_per_example": per_example.tolist(),
            "confidence": confidence, "pilot_shots": pilot, "max_shots_per_example": cap,
            "decisions": final_logits(out).argmax(-1).tolist(), "logit_stderr": err}
    return out, info


def _per_example(uses: list[np.ndarray], shots: np.ndarray, cost: np.ndarray, b: int) -> np.ndarray:
    """Each measured row's shots x circuits, shared equally by the examples that used it."""
    pairs = np.unique(np.concatenate(uses), axis=0)
    users = np.bincount(pairs[:, 1], minlength=len(shots))
    return np.bincount(pairs[:, 0], (shots * cost)[pairs[:, 1]] / users[pairs[:, 1]], minlength=b)


def summary(info: dict) -> dict:
    s = np.asarray(info["shots_per_example"])
    return {"shots_per_example_mean": float(s.mean()), "shots_per_example_median": float(np.median(s)),
            "shots_per_example_p90": float(np.percentile(s, 90)), "shots_per_example_max": float(s.max()),
            "adaptive_rounds": len(info["rounds"]), "adaptive_decided": info["decided"],
            "adaptive_capped": info["capped"]}
