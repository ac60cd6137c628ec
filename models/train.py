"""Training (Adam, fixed seeds, progress bar) and evaluation on a config's own test split."""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from qssm.errors import QssmError
from qssm.models.config import ModelConfig
from qssm.models.evaluator import Evaluator, ExactEvaluator
from qssm.models.registry import NoiseTuning, Preset, build_model, last_logits, n_params, tuned_parameters
from qssm.models.tasks import TEST_SEED, Batch, test_set, train_batches


def train(p: Preset, steps: int | None = None, progress: bool = True, log_every: int = 50) -> tuple[torch.nn.Module, dict]:
    steps = steps or p.steps
    # These models are tiny: one thread beats several (and does not thrash beside other work).
    torch.set_num_threads(1)
    torch.manual_seed(p.seed)
    model = build_model(p.config)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=steps, pct_start=0.1)
    batches = train_batches(p.config.task, p.batch_size, p.seed)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"train {p.config.kind}", disable=not progress, dynamic_ncols=True)
    ema = None
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
    return model, record


def finetune_noisy(model: torch.nn.Module, tuning: NoiseTuning, progress: bool = True,
                   log_every: int = 10) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a trained model against `tuning.device`'s noise (registry.NoiseTuning): every step
    runs the batch through the NoisyEvaluator (differentiable noisy density-matrix simulation of the
    device's ISA circuits, shot noise injected) and through the exact simulator, and descends
    `noisy_loss` on the scored logits (the last position, or every determined one for
    every_position tasks). Adam at a constant rate, gradients clipped to 1, training batches from
    seed 1_000 + seed (not the base run's), one thread. With steps = 0 only the readout_norm switch
    applies (QLAM's recipe) and the record still measures the result on the device."""
    from qssm.models.noisy import NoisyEvaluator

    torch.set_num_threads(1)
    torch.manual_seed(tuning.seed)
    start = time.perf_counter()
    teacher = frozen_copy(model) if tuning.target == "teacher" else None
    if tuning.readout_norm and tuning.readout_norm != getattr(model.cfg, "readout_norm", tuning.readout_norm):
        model = with_readout_norm(model, tuning.readout_norm, tuning.seed)
    elif tuning.readout_norm and model.cfg.kind != "qlam":
        raise QssmError(f"readout_norm applies to QLAM memories, not to a {model.cfg.kind} model")
    cfg = model.cfg
    model.train()
    noisy = NoisyEvaluator(tuning.device, shots=tuning.shots, seed=tuning.seed)
    params = tuned_parameters(model, tuning.tune)
    for p in set(model.parameters()) - set(params):
        p.requires_grad_(False)  # frozen for the tuning only: the saved checkpoint trains as usual
    opt = torch.optim.Adam(params, lr=tuning.lr)
    batches = train_batches(cfg.task, tuning.batch_size, 1_000 + tuning.seed)
    bar = tqdm(range(tuning.steps), desc=f"noise-tune {cfg.kind} on {tuning.device}",
               disable=not progress or not tuning.steps, dynamic_ncols=True)
    ema = None
    for step in bar:
        batch = next(batches)
        parts = noisy_loss(model, batch, cfg.task, noisy, tuning, teacher)
        loss = parts["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        vals = {k: v.item() for k, v in parts.items()}
        ema = vals if ema is None else {k: 0.9 * ema[k] + 0.1 * v for k, v in vals.items()}
        if step % log_every == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()})
    seconds = time.perf_counter() - start
    model.eval()
    model.requires_grad_(True)
    record = {
        "noise_tuning": dataclasses.asdict(tuning),
        "steps": tuning.steps, "lr": tuning.lr, "batch_size": tuning.batch_size, "seed": tuning.seed,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "train_seconds": round(seconds, 1),
        "params": n_params(model),
        "final_loss": {k: round(v, 4) for k, v in (ema or {}).items()},
        "metrics": evaluate(model, cfg),
        "noisy_metrics": evaluate_noisy(model, cfg, tuning.device, tuning.n_eval),
    }
    return model, record


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


def noisy_loss(model, batch: Batch, task: dict, noisy, tuning: NoiseTuning,
               teacher: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """target "labels":  w_noisy CE(noisy) + w_exact CE(exact) + w_consistency mean (noisy - exact)^2;
    target "teacher": w_noisy mean (noisy - t)^2 + w_exact mean (exact - t)^2 + w_consistency ...,
    with t the starting model's exact logits (distillation: the tuned model keeps the function the
    base learned instead of refitting the training labels, whose loss is already near zero)."""
    every = task.get("loss", "last") == "every_position"
    targets = batch.meta["next"].reshape(-1) if every else batch.targets

    def scored(out):
        if every:
            return out.reshape(-1, out.shape[-1])
        return out[:, -1] if out.dim() == 3 else out

    exact = scored(model(batch.inputs))
    noisy_out = scored(model(batch.inputs, noisy))
    keep = targets != -100

    def squared(a, b):
        return ((a - b)[keep] ** 2).mean()

    if tuning.target == "teacher":
        if teacher is None:
            raise QssmError('target = "teacher" needs the starting model as teacher')
        with torch.no_grad():
            ref = scored(teacher(batch.inputs))
        names, noisy_term, exact_term = ("noisy_teacher", "exact_teacher"), squared(noisy_out, ref), squared(exact, ref)
    else:
        names = ("ce_noisy", "ce_exact")
        noisy_term, exact_term = F.cross_entropy(noisy_out, targets), F.cross_entropy(exact, targets)
    consistency = squared(noisy_out, exact)
    loss = tuning.w_noisy * noisy_term + tuning.w_exact * exact_term + tuning.w_consistency * consistency
    return {names[0]: noisy_term, names[1]: exact_term, "consistency": consistency, "loss": loss}


@torch.no_grad()
def evaluate_noisy(model, cfg: ModelConfig, device: str, n: int = 200, shots: int = 0, seed: int = TEST_SEED) -> dict:
    """The NoisyEvaluator's view of the first n test examples (exact noisy means when shots = 0):
    accuracy, exact accuracy and the mean |noisy - exact| logit at the scored position."""
    from qssm.models.noisy import NoisyEvaluator

    batch = test_set(cfg.task, seed)
    inputs, targets = batch.inputs[:n], batch.targets[:n]
    ev = NoisyEvaluator(device, shots=shots)
    noisy = torch.cat([last_logits(model, inputs[i:i + 50], ev) for i in range(0, len(targets), 50)])
    exact = predict(model, Batch(inputs, targets, {}))
    return {"device": device, "n_examples": len(targets), "shots": shots, "accuracy": accuracy(noisy, targets),
            "exact_accuracy": accuracy(exact, targets), "logit_error_mean": float((noisy - exact).abs().mean())}


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


def _by_depth(correct: np.ndarray, depth: np.ndarray) -> dict[str, float]:
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
        out["by_depth"] = _by_depth((logits.argmax(-1) == batch.targets).numpy(), batch.meta["depth"])
    if task["name"] in LENGTH_MULTIPLES and lengths:
        out["by_length"], depth = {}, {}
        for mult in LENGTH_MULTIPLES[task["name"]]:
            T = task["T"] * mult
            b = first(test_set(task, seed, T=T)) if mult > 1 else batch
            lg = predict(model, b, evaluator) if mult > 1 else logits
            out["by_length"][str(T)] = accuracy(lg, b.targets)
            if "depth" in b.meta:
                depth[str(T)] = _by_depth((lg.argmax(-1) == b.targets).numpy(), b.meta["depth"])
        if depth:
            out["by_depth_length"] = depth
    out["examples_run"] = out["n_examples"] * len(out.get("by_length", {None: 0}))  # every length's test set
    return out
