"""Adaptive, decision-aware shots at run time: `[backend] shots = "auto"` (docs/architecture.md, "Shots").

    round 0   every circuit at pilot_shots
    round r   per example: top-1 minus top-k margins of the pooled-mean forward and their covariance
              by the delta method (pipeline/shotplan.py); an example is decided when P(its argmax
              differs from the infinite-shot one) <= 1 - confidence, or capped at
              max_shots_per_example (0: 16 pilot rounds' worth); the undecided ones get each measured row's Neyman shots
              (sensitivity x standard deviation over cost), at most 4x a row's shots per round, in
              powers of two of the pilot, and run again
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

from qssm.pipeline.shotplan import ShotEvaluator, curvature_bias, final_logits, flip_probability, sensitivity

MAX_ROUNDS = 8
ALPHA_SHARE = 1.0  # of 1 - confidence allowed per stop
PAIRS = 4  # antithetic draws per round for the curvature shift
GROWTH = 4  # a row's shots grow at most this much per round: margins from few shots are themselves noisy


def quantize(shots: np.ndarray, pilot: int) -> np.ndarray:
    """Up to the next pilot x 2^j: few distinct shot counts, so few batches per template and round."""
    steps = np.ceil(np.log2(np.maximum(shots, pilot) / pilot) - 1e-9)
    return (pilot * 2.0 ** np.maximum(steps, 0)).astype(np.int64)


def run_adaptive(model, inputs: torch.Tensor, pipeline, backend_spec, progress=None) -> tuple[torch.Tensor, dict]:
    pilot, confidence, cap = backend_spec.pilot_shots, backend_spec.confidence, backend_spec.max_shots_per_example
    alpha = (1 - confidence) * ALPHA_SHARE
    ev = ShotEvaluator(pipeline, pilot)
    ev.pool.sampled = True
    model.requires_grad_(False)
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
        out[active] = logits.detach()
        sens = sensitivity(logits, ev.records, ev.pool)
        shots, cost = ev.pool.arrays()
        uses.append(np.stack([active[sens.example], sens.unit], 1))
        spent = _per_example(uses, shots, cost, b)[active]
        if r == 0 and not cap:
            cap = backend_spec.CAP_PILOTS * float(spent.mean())
        # measured margins carry the curvature shift of their shots (QMamba's recurrence bends noise
        # into bias): the infinite-shot margins are estimated without it
        sens.margin = sens.margin - curvature_bias(model, inputs[active], ev.records, ev.pool, sens, shots,
                                                   pairs=PAIRS, seed=r)
        p = flip_probability(sens.margin, sens.cov(shots))
        sure = p <= alpha
        done = sure | (spent >= cap) | (r == MAX_ROUNDS - 1)
        decided[active[sure]] = True
        stopped_round[active[done]] = r
        rounds.append({"round": r, "examples": int(len(active)), "decided": int(sure.sum()),
                       "capped": int((done & ~sure).sum()), "shots": int((shots * cost).sum())})
        if progress is not None:
            progress.update(1)
        if done.all():
            break
        want, _ = sens.neyman(cost, 1 - alpha)
        now = shots[sens.unit]
        want = np.clip(np.nan_to_num(want, posinf=GROWTH * now), now, GROWTH * now)
        # the cap: an example's further rows scaled so its shots stay within it
        extra = np.bincount(sens.example, (want - now) * cost[sens.unit], minlength=len(active))
        room = np.maximum(cap - spent, 0)
        scale = np.where(extra > room, room / np.maximum(extra, 1e-300), 1.0)
        want = quantize(now + (want - now) * scale[sens.example], pilot)
        for rec, rows in zip(ev.records, sens.rows):
            keep = ~done[rec.example]
            target = ev.targets.setdefault(rec.name, np.full((b, rec.position.max() + 1), pilot, dtype=np.int64))
            ex, pos = active[rec.example[keep]], rec.position[keep]
            target[ex, pos] = np.maximum(target[ex, pos], want[rows[keep]])
        active = active[~done]
    shots, cost = ev.pool.arrays()
    per_example = _per_example(uses, shots, cost, b)
    info = {"rounds": rounds, "decided": int(decided.sum()), "capped": int(b - decided.sum()),
            "stopped_round": stopped_round.tolist(), "shots_per_example": per_example.tolist(),
            "confidence": confidence, "pilot_shots": pilot, "max_shots_per_example": cap,
            "decisions": final_logits(out).argmax(-1).tolist()}
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
