"""What each piece of noise-aware fine-tuning buys (one base checkpoint, one device).

    python -m bench.experiments.noise_ablation qmamba-haystack-varlen [--variants a,b,...]
                                               [--json bench/experiments/noise_ablation.json]

Every variant fine-tunes the base checkpoint with pipeline/noisy_train.py `finetune_noisy` (the preset's
NoiseTuning with some fields changed) and is then measured through the real pipeline
(`run_inference` on dm:<device>, 4000 shots, the first 200 test examples, simulator seed 1), like
bench/experiments/noise_tuning.py. One training process at a time, one thread.

The row "post-measurement normalization" trains nothing: it is QuantumNAT's normalization
(Wang et al., 2022) applied to the base model's noisy readouts, each observable standardized over
the batch and mapped onto the exact readouts' batch mean and spread, which is what a model trained
with normalization layers sees; it is measured with the NoisyEvaluator (exact noisy means), because
the pipeline has no such layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.harness import ROOT, job_spec, run_job
from qssm.models import checkpoint
from qssm.models.evaluator import ExactEvaluator
from qssm.models.registry import last_logits, noise_tuning
from qssm.models.tasks import test_set
from qssm.models.train import accuracy
from qssm.pipeline.noisy import NoisyEvaluator
from qssm.pipeline.noisy_train import finetune_noisy

VARIANTS = {
    "ce-noisy": {"w_exact": 0.0, "w_consistency": 0.0, "shots": 0},
    "ce-noisy+shots": {"w_exact": 0.0, "w_consistency": 0.0},
    "ce-noisy+ce-exact+shots": {"w_consistency": 0.0},
    "full-no-shots": {"shots": 0},
    "full": {},
    # QLAM (qlam-digits-chain, whose recipe takes no step): gradient steps on every weight after the
    # normalization, measured against the shipped normalization alone ("full" there)
    "every-weight-teacher": {"tune": "all", "lr": 1e-3, "steps": 60},
    "every-weight-labels": {"tune": "all", "target": "labels", "lr": 5e-4, "steps": 100},
}


class Normalized:
    """QuantumNAT's post-measurement normalization, as a model trained with it would see it: each
    observable of each call (and QLAM step) standardized over the batch, then given the exact
    readouts' batch mean and standard deviation."""

    def __init__(self, noisy):
        self.noisy, self.exact = noisy, ExactEvaluator()

    def evaluate(self, calls):
        out = []
        for v, e in zip(self.noisy.evaluate(calls), self.exact.evaluate(calls)):
            dims = (0,) if v.dim() == 3 and v.shape[1] > 1 and calls[0].sequential else tuple(range(v.dim() - 1))
            z = (v - v.mean(dims, keepdim=True)) / v.std(dims, keepdim=True).clamp_min(1e-6)
            out.append(z * e.std(dims, keepdim=True) + e.mean(dims, keepdim=True))
        return out


def pipeline(path: str, device: str, n: int = 200, shots: int = 4000) -> dict:
    r = run_job(job_spec(path, f"dm:{device}", n, shots, seed_simulator=1)).report
    return {k: r[k] for k in ("accuracy", "exact_accuracy", "logit_error_mean")}


@torch.no_grad()
def normalization_row(model, device: str, n: int = 200) -> dict:
    b = test_set(model.cfg.task)
    x, y = b.inputs[:n], b.targets[:n]
    exact = last_logits(model, x)
    plain = last_logits(model, x, NoisyEvaluator(device))
    normed = last_logits(model, x, Normalized(NoisyEvaluator(device)))
    return {"noisy_mean_logit_error": float((plain - exact).abs().mean()),
            "normalized_logit_error": float((normed - exact).abs().mean()),
            "noisy_mean_accuracy": accuracy(plain, y), "normalized_accuracy": accuracy(normed, y)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("--device", default="fake_fez")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base_path = ROOT / "checkpoints" / f"{args.preset}.safetensors"
    out = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    rows = out.setdefault(f"{args.preset}@{args.device}", {})
    base, _ = checkpoint.load(base_path)
    rows["base"] = pipeline(str(base_path), args.device)
    rows["post-measurement normalization"] = normalization_row(base, args.device)
    print(args.preset, "base", rows["base"], "\nnormalization", rows["post-measurement normalization"], flush=True)
    for name in args.variants.split(","):
        tuning = dataclasses.replace(noise_tuning(args.preset, args.device), **VARIANTS[name])
        if args.steps:
            tuning = dataclasses.replace(tuning, steps=args.steps)
        model, _ = checkpoint.load(base_path)
        start = time.perf_counter()
        model, record = finetune_noisy(model, tuning, progress=False)
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tuned.safetensors"
            checkpoint.save(model, path, record)
            rows[name] = {**pipeline(str(path), args.device), "tuning": VARIANTS[name], "steps": tuning.steps,
                          "train_seconds": round(seconds, 1), "noisy_metrics": record["noisy_metrics"],
                          "exact_metrics": record["metrics"]}
        print(name, {k: v for k, v in rows[name].items() if k not in ("noisy_metrics", "exact_metrics")}, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
