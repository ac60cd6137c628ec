"""Noise-aware fine-tuning (`qssm train PRESET --noise DEVICE`): a trained model's loss on the
NoisyEvaluator (pipeline/noisy.py: the device's ISA circuits, differentiable noisy density
matrices) beside its exact loss. It sits beside the evaluator it trains against, above models/."""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from qssm.errors import QssmError
from qssm.models.config import ModelConfig
from qssm.models.registry import NoiseTuning, last_logits, n_params, tuned_parameters
from qssm.models.tasks import TEST_SEED, Batch, test_set, train_batches
from qssm.models.train import (
    accuracy,
    evaluate,
    frozen_copy,
    predict,
    with_readout_norm,
)
from qssm.pipeline.noisy import NoisyEvaluator


def finetune_noisy(model: torch.nn.Module, tuning: NoiseTuning, progress: bool = True,
                   log_every: int = 10) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a trained model against `tuning.device`'s noise (registry.NoiseTuning): every step
    runs the batch through the NoisyEvaluator (differentiable noisy density-matrix simulation of the
    device's ISA circuits, shot noise injected) and through the exact simulator, and descends
    `noisy_loss` on the scored logits (the last position, or every determined one for
    every_position tasks). Adam at a constant rate, gradients clipped to 1, training batches from
    seed 1_000 + seed (not the base run's), one thread. With steps = 0 only the readout_norm switch
    applies (QLAM's recipe) and the record still measures the result on the device."""
    torch.set_num_threads(1)
    torch.manual_seed(tuning.seed)
    start = time.perf_counter()
    teacher = frozen_copy(model) if tuning.target == "teacher" else None
    if tuning.readout_norm and tuning.readout_norm != getattr(model.cfg, "readout_norm", tuning.readout_norm):
        model = with_readout_norm(model, tuning.readout_norm, tuning.seed)
    elif tuning.readout_norm and not hasattr(model.cfg, "readout_norm"):
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
    batch = test_set(cfg.task, seed)
    inputs, targets = batch.inputs[:n], batch.targets[:n]
    ev = NoisyEvaluator(device, shots=shots)
    noisy = torch.cat([last_logits(model, inputs[i:i + 50], ev) for i in range(0, len(targets), 50)])
    exact = predict(model, Batch(inputs, targets, {}))
    return {"device": device, "n_examples": len(targets), "shots": shots, "accuracy": accuracy(noisy, targets),
            "exact_accuracy": accuracy(exact, targets), "logit_error_mean": float((noisy - exact).abs().mean())}
