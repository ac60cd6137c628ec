"""Training (Adam, fixed seeds, progress bar) and evaluation on a config's own test split."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from qssm.errors import QssmError
from qssm.models import resume_state
from qssm.models.checkpoint import digest
from qssm.models.config import ModelConfig, config_to_json
from qssm.models.evaluator import Evaluator, ExactEvaluator
from qssm.models.registry import Preset, build_model, last_logits, n_params
from qssm.models.tasks import TEST_SEED, Batch, test_set, train_batches


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int):
    """The one-cycle schedule, a 10% warm-up. Torch divides by each phase's length in steps, which is
    0 for a warm-up ending at step 0 (steps = 10): a short run warms up over at least 2 steps (runs of
    20 or more keep their schedule, so shipped recipes retrain identically), and one of fewer than 3
    steps, too short for a cycle, keeps its rate constant."""
    if steps < 3:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))


def train(p: Preset, steps: int | None = None, progress: bool = True, log_every: int = 50,
          resume: Path | None = None, save_every: int = 250) -> tuple[torch.nn.Module, dict]:
    """Adam with a one-cycle schedule on the preset's task. With `resume` (a file path), every
    `save_every` steps the model, optimizer, step, elapsed seconds and RNG state go to that file,
    with the loss and the accuracy on the first 1000 test examples (the learning curve); a run
    that finds the file continues from it and ends bit-identical to an uninterrupted one."""
    steps = steps or p.steps
    # These models are tiny: one thread beats several (and does not thrash beside other work).
    torch.set_num_threads(1)
    torch.manual_seed(p.seed)
    model = build_model(p.config)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    sched = one_cycle(opt, p.lr, steps)
    batches = train_batches(p.config.task, p.batch_size, p.seed)
    recipe = _recipe(p, steps)
    first, elapsed, ema, curve = 0, 0.0, None, []
    if resume is not None and Path(resume).exists():
        first, elapsed, ema, curve = resume_state.load(resume, recipe, model, opt, sched)
        for _ in range(first):  # the batch stream is a pure function of the seed: skip what was used
            next(batches)
    start = time.perf_counter() - elapsed
    bar = tqdm(range(first, steps), desc=f"train {p.config.kind}", disable=not progress, dynamic_ncols=True,
               initial=first, total=steps)
    for step in bar:
        batch = next(batches)
        loss = batch_loss(model, batch, p.config.task)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % log_every == 0:
            bar.set_postfix(loss=f"{ema:.3f}")
        done = step + 1
        if resume is not None and (done % save_every == 0 or done == steps):
            curve.append(_curve_point(model, p.config, done, ema, time.perf_counter() - start))
            if progress:
                tqdm.write(json.dumps(curve[-1]), file=sys.stderr)
            resume_state.save(resume, recipe, model, opt, done, time.perf_counter() - start, ema, curve)
    seconds = time.perf_counter() - start
    model.eval()
    record = {
        "steps": steps, "lr": p.lr, "batch_size": p.batch_size, "seed": p.seed,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "train_seconds": round(seconds, 1),
        "sequences_per_second": round(steps * p.batch_size / seconds, 1),
        "params": n_params(model),
        "final_loss": round(ema, 4),
        "metrics": evaluate(model, p.config),
    }
    if curve:
        record["curve"] = curve
    return model, record


def _recipe(p: Preset, steps: int) -> dict:
    """What a resume file must match to be continued: the model and every training setting."""
    return {"config": json.loads(config_to_json(p.config)), "steps": steps, "lr": p.lr,
            "batch_size": p.batch_size, "seed": p.seed}


@torch.no_grad()
def _curve_point(model, cfg: ModelConfig, step: int, ema: float, seconds: float, n: int = 1000) -> dict:
    """One learning-curve point: training loss (EMA), accuracy on the first n test examples and the
    weights' SHA-256 (checkpoint.digest: a retraining reproduces the run bit for bit up to here)."""
    batch = test_set(cfg.task)
    acc = accuracy(predict(model, Batch(batch.inputs[:n], batch.targets[:n], {})), batch.targets[:n])
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return {"step": step, "seconds": round(seconds, 1), "loss": round(ema, 4), "test_accuracy_first_1000": acc,
            "sha256": digest(weights)}


@torch.no_grad()
def with_readout_norm(model, norm: str, seed: int = 0):
    """The same QLAM with cfg.readout_norm = norm: every trained tensor kept, the new per-Pauli
    gains set to the mean RMS of the exact readouts over a training batch, so the normalized
    readouts start at the scale the head was trained on."""
    cfg = dataclasses.replace(model.cfg, readout_norm=norm)
    new = build_model(cfg)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - {"readout_gain"}:
        raise QssmError(f"cannot switch readout_norm: missing {missing}, unexpected {unexpected}")
    if norm == "rms":
        x = next(train_batches(cfg.task, 256, 2_000 + seed)).inputs
        m = model.memory(x, ExactEvaluator())
        new.readout_gain.fill_(float(m.pow(2).mean(-1).add(1e-4).sqrt().mean()))
    return new


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model as it is now, in eval mode with no gradients: the teacher of target = "teacher"."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def batch_loss(model, batch: Batch, task: dict) -> torch.Tensor:
    """Cross-entropy at the last position (the prediction every task scores), or with
    task["loss"] = "every_position" at every position whose next token is determined
    (meta["next"], language-model style: what greedy generation needs)."""
    if task.get("loss", "last") == "every_position":
        if "next" not in batch.meta:
            raise QssmError(f'task {task["name"]!r} has no per-position targets; use loss = "last"')
        logits = model(batch.inputs)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.meta["next"].reshape(-1))
    return F.cross_entropy(last_logits(model, batch.inputs), batch.targets)


@torch.no_grad()
def predict(model, batch: Batch, evaluator: Evaluator | None = None, chunk: int = 500) -> torch.Tensor:
    outs = [last_logits(model, batch.inputs[i : i + chunk], evaluator) for i in range(0, len(batch.targets), chunk)]
    return torch.cat(outs)


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float((logits.argmax(-1) == targets).float().mean())


LENGTH_MULTIPLES = {"haystack": (1, 2, 4, 8), "pattern": (1, 2, 4, 8)}


def accuracy_by_depth(correct: np.ndarray, depth: np.ndarray) -> dict[str, float]:
    """Accuracy by needle depth quartile (depth 0 = needle at the start, far from the query)."""
    bins = np.minimum((depth * 4).astype(int), 3)
    return {f"{q / 4:.2f}-{(q + 1) / 4:.2f}": float(correct[bins == q].mean()) if (bins == q).any() else float("nan")
            for q in range(4)}


@torch.no_grad()
def evaluate(model, cfg: ModelConfig, evaluator: Evaluator | None = None, seed: int = TEST_SEED,
             lengths: bool = True, n: int | None = None) -> dict:
    """Test accuracy; for generated tasks also accuracy at 1x, 2x, 4x and 8x the reference length
    task["T"] (`by_length`), and for haystack by needle depth quartile, at T (`by_depth`) and at
    every length (`by_depth_length`). n: the first n examples of each test set only."""
    task = cfg.task

    def first(b: Batch) -> Batch:
        if n is None:
            return b
        return Batch(b.inputs[:n], b.targets[:n], {k: (v[:n] if hasattr(v, "__len__") else v) for k, v in b.meta.items()})

    batch = first(test_set(task, seed))
    logits = predict(model, batch, evaluator)
    out = {"accuracy": accuracy(logits, batch.targets), "n_examples": len(batch.targets)}
    if task["name"] == "haystack":
        out["by_depth"] = accuracy_by_depth((logits.argmax(-1) == batch.targets).numpy(), batch.meta["depth"])
    if task["name"] in LENGTH_MULTIPLES and lengths:
        out["by_length"], depth = {}, {}
        for mult in LENGTH_MULTIPLES[task["name"]]:
            T = task["T"] * mult
            b = first(test_set(task, seed, T=T)) if mult > 1 else batch
            lg = predict(model, b, evaluator) if mult > 1 else logits
            out["by_length"][str(T)] = accuracy(lg, b.targets)
            if "depth" in b.meta:
                depth[str(T)] = accuracy_by_depth((lg.argmax(-1) == b.targets).numpy(), b.meta["depth"])
        if depth:
            out["by_depth_length"] = depth
    out["examples_run"] = out["n_examples"] * len(out.get("by_length", {None: 0}))  # every length's test set
    return out
