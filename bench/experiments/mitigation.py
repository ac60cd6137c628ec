"""Mitigation benchmark: QMamba haystack inference on noisy device snapshots with no mitigation,
readout mitigation, ZNE, and both, at equal shots per circuit (ZNE splits them over its scales;
readout calibration is a cached per-run overhead, reported), plus noise-aware vs default layout.

    python -m bench.experiments.mitigation [--n 16] [--T 16] [--shots 2000] [--seeds 3]

Every row is mean +- standard error over seeds (seed_simulator; the transpile seed is fixed, so
layouts and ISA circuits are identical across seeds). Logit error = mean |logits - exact torch
logits| at the last position. Writes bench/experiments/mitigation.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from bench.harness import CHECKPOINT, job_spec, run_job
from qssm.pipeline.mitigation import mitigation_report

DEVICES = ("aer:fake_fez", "aer:fake_sherbrooke")
SETTINGS = {"none": {}, "readout": {"readout": True}, "zne": {"zne": True},
            "both": {"readout": True, "zne": True}}


def run(device: str, mitigation: dict, seed: int, args, layout: str = "default") -> dict:
    done = run_job(job_spec(CHECKPOINT, device, args.n, args.shots, data={"T": args.T}, mitigation=mitigation,
                            seed_simulator=seed, layout=layout))
    r = done.report
    r["mitigation_report"] = {row["setting"]: row for row in mitigation_report(done.pipeline)} or None
    r["layout_report"] = done.pipeline.layout_report
    return r


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0
    return m, se


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--shots", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows, started = [], time.perf_counter()
    for device in DEVICES:
        cases = [(name, m, "default") for name, m in SETTINGS.items()] + [("none+noise_aware", {}, "noise_aware")]
        for name, mitigation, layout in cases:
            runs = [run(device, mitigation, seed, args, layout) for seed in range(1, args.seeds + 1)]
            acc, err = mean_se([r["accuracy"] for r in runs]), mean_se([r["logit_error_mean"] for r in runs])
            mrep = runs[0]["mitigation_report"] or {}
            lrep = runs[0]["layout_report"] or {}
            row = {"device": device, "setting": name, "accuracy": acc, "logit_error": err,
                   "exact_accuracy": runs[0]["exact_accuracy"],
                   "shot_multiplier": mrep.get("total", {}).get("shot_multiplier", 1.0),
                   "circuit_multiplier": mrep.get("total", {}).get("circuit_multiplier", 1.0),
                   "calibration_circuits": mrep.get("readout", {}).get("circuits", 0),
                   "seconds": sum(r["wall_seconds"] for r in runs) / len(runs),
                   "layout": lrep or None}
            rows.append(row)
            print(f"{device:20s} {name:17s} acc {acc[0]:.3f}±{acc[1]:.3f}  logit err {err[0]:.3f}±{err[1]:.3f}  "
                  f"shots x{row['shot_multiplier']:.3f} circuits x{row['circuit_multiplier']:.2f}  "
                  f"{row['seconds']:.1f}s", flush=True)
            if lrep:
                print(f"{'':20s} est. success default {lrep['default_success']:.4f} {lrep['default_layout']} | "
                      f"noise-aware {lrep['noise_aware_success']:.4f} {lrep['noise_aware_layout']} "
                      f"(used: {lrep['used']})", flush=True)
    print()
    print(table(rows, args))
    out = {"settings": vars(args), "seconds": time.perf_counter() - started, "rows": rows}
    (Path(__file__).resolve().parent / "mitigation.json").write_text(json.dumps(out, indent=1))


def table(rows: list[dict], args) -> str:
    lines = [f"QMamba haystack, n={args.n}, T={args.T}, {args.shots} shots/circuit, {args.seeds} seeds (mean ± s.e.)",
             "| device | setting | accuracy | logit error | shots x | circuits x |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['setting']} | {r['accuracy'][0]:.3f} ± {r['accuracy'][1]:.3f} | "
                     f"{r['logit_error'][0]:.3f} ± {r['logit_error'][1]:.3f} | {r['shot_multiplier']:.3f} | "
                     f"{r['circuit_multiplier']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
