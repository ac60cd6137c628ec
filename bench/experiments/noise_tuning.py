"""Noise-aware fine-tuning, before and after, through the real pipeline.

    python -m bench.experiments.noise_tuning [--pairs base:tuned,...] [--devices fake_fez,fake_sherbrooke]
        [--shots 4000] [--sim-seeds 1,2] [--json bench/experiments/noise_tuning.json]

Each checkpoint runs as `qssm run` would (run_inference: transpile for the device, measure stage,
dm:<device> with `shots` per circuit, QMamba's token table) on n test examples, per data seed and
simulator (shot) seed, scored against the exact forward: accuracy, exact accuracy, mean |noisy -
exact| logit at the last position (`logit_error_mean`). `accuracy_se` is the binomial standard
error over the distinct test examples, sqrt(p (1 - p) / (n x data seeds)) (the simulator seeds
rerun the same examples, so they are not counted as more examples). The logit error scales with the logits,
so `relative` divides it by the logits' own spread (mean |exact logit - its row mean|): a model
that only shrank its logits would keep its relative error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import ROOT, job_spec, run_job
from qssm.models import checkpoint
from qssm.models.registry import last_logits
from qssm.models.tasks import GENERATED, TEST_SEED, test_set, test_size

PAIRS = "qmamba-haystack-varlen:qmamba-haystack-varlen-noisy-fez,qlam-digits-chain:qlam-digits-chain-noisy-fez"


def spread(path: str, n: int, seed: int) -> float:
    model, _ = checkpoint.load(path)
    x = test_set(model.cfg.task, seed).inputs[:n]
    with torch.no_grad():
        lg = last_logits(model.double(), x.double() if x.is_floating_point() else x)
    return float((lg - lg.mean(1, keepdim=True)).abs().mean())


def run(path: str, device: str, n: int, shots: int, data_seed: int, sim_seed: int) -> dict:
    r = run_job(job_spec(path, f"dm:{device}", n, shots, data={"seed": data_seed}, seed_simulator=sim_seed)).report
    return {k: r[k] for k in ("accuracy", "exact_accuracy", "agreement", "logit_error_mean", "logit_error_max",
                              "n_examples", "wall_seconds")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default=PAIRS, help="base:tuned checkpoint names under checkpoints/")
    ap.add_argument("--devices", default="fake_fez,fake_sherbrooke")
    ap.add_argument("--shots", type=int, default=4000)
    ap.add_argument("--sim-seeds", default="1,2")
    ap.add_argument("--n", type=int, default=0, help="examples per run (0: 200 for sequences, the whole split for images)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {"shots": args.shots, "rows": []}
    for pair in args.pairs.split(","):
        base, tuned = pair.split(":")
        for name in (base, tuned):
            path = f"checkpoints/{name}.safetensors"
            model, record = checkpoint.load(ROOT / path)
            generated = model.cfg.task["name"] in GENERATED
            n = args.n or (200 if generated else test_size(model.cfg.task))
            data_seeds = [TEST_SEED, 20001] if generated else [TEST_SEED]
            for device in args.devices.split(","):
                runs = []
                for ds in data_seeds:
                    sp = spread(str(ROOT / path), n, ds)
                    for ss in (int(s) for s in args.sim_seeds.split(",")):
                        start = time.perf_counter()
                        r = run(str(ROOT / path), device, n, args.shots, ds, ss)
                        r.update(data_seed=ds, sim_seed=ss, spread=sp, relative=r["logit_error_mean"] / sp,
                                 seconds=round(time.perf_counter() - start, 1))
                        runs.append(r)
                summary = {k: float(np.mean([r[k] for r in runs])) for k in
                           ("accuracy", "exact_accuracy", "logit_error_mean", "relative", "spread")}
                for k in ("accuracy", "exact_accuracy"):
                    summary[f"{k}_se"] = float(np.sqrt(summary[k] * (1 - summary[k]) / (n * len(data_seeds))))
                summary["logit_error_sd"] = float(np.std([r["logit_error_mean"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
                row = {"checkpoint": name, "base": base, "tuned": name == tuned, "device": device, "n": n,
                       "data_seeds": data_seeds, "runs": runs, **summary,
                       "train": {k: record.get(k) for k in ("command", "train_seconds")}}
                out["rows"].append(row)
                print(f"{name:34} {device:16} n={n} x{len(runs)} acc {summary['accuracy']:.3f}±{summary['accuracy_se']:.3f} exact "
                      f"{summary['exact_accuracy']:.3f} logit err {summary['logit_error_mean']:.3f} "
                      f"(sd {summary['logit_error_sd']:.3f}) relative {summary['relative']:.3f}", flush=True)
    rows = {(r["checkpoint"], r["device"]): r for r in out["rows"]}
    for pair in args.pairs.split(","):
        base, tuned = pair.split(":")
        for device in args.devices.split(","):
            b, t = rows[(base, device)], rows[(tuned, device)]
            drop = 1 - t["logit_error_mean"] / b["logit_error_mean"]
            # correct examples per (data seed, simulator seed), tuned minus base: the same examples and shots
            paired = [round(rt["accuracy"] * rb["n_examples"]) - round(rb["accuracy"] * rb["n_examples"])
                      for rt, rb in zip(t["runs"], b["runs"])]
            se = float(np.std(paired, ddof=1) / np.sqrt(len(paired))) if len(paired) > 1 else 0.0
            out.setdefault("change", {})[f"{tuned}@{device}"] = {
                "logit_error_reduction": drop, "relative_reduction": 1 - t["relative"] / b["relative"],
                "accuracy_change": t["accuracy"] - b["accuracy"], "exact_accuracy_change": t["exact_accuracy"] - b["exact_accuracy"],
                "paired_correct_examples": paired, "paired_mean": float(np.mean(paired)), "paired_se": se}
            print(f"{tuned} on {device}: logit error -{100 * drop:.1f}% (relative -{100 * (1 - t['relative'] / b['relative']):.1f}%), "
                  f"accuracy {t['accuracy'] - b['accuracy']:+.3f} ({np.mean(paired):+.2f} ± {se:.2f} examples per run, paired), "
                  f"exact {t['exact_accuracy'] - b['exact_accuracy']:+.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
