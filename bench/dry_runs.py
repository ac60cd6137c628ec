"""Noisy dry runs of the shipped checkpoints on device snapshots at three shot counts.

    python bench/dry_runs.py [--backends aer:fake_fez,...] [--shots 500,2000,8000] [--json out.json]

Prints accuracy (and exact accuracy on the same examples), agreement with exact predictions, mean
logit error against exact, and wall time per run: the table in the README.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from qssm.jobs.spec import parse_spec
from qssm.pipeline.inference import run_inference

CHECKPOINTS = {"qmamba-haystack": 32, "qlam-digits": 16}  # examples per run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="aer:fake_fez,ibm:fake_fez,aer:fake_sherbrooke,braket:local_dm")
    ap.add_argument("--shots", default="500,2000,8000")
    ap.add_argument("--json", default="bench/dry_runs.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'checkpoint':<17}{'backend':<20}{'shots':>6}{'acc':>7}{'exact':>7}{'agree':>7}{'logit err':>10}{'seconds':>9}")
    for name, n in CHECKPOINTS.items():
        for backend in args.backends.split(","):
            for shots in map(int, args.shots.split(",")):
                spec = parse_spec({"model": {"checkpoint": f"checkpoints/{name}.safetensors"}, "data": {"n": n},
                                   "backend": {"name": backend, "shots": shots}})
                start = time.perf_counter()
                r = run_inference(spec, progress=False)
                row = {"checkpoint": name, "backend": backend, "shots": shots, "n": n, "accuracy": r["accuracy"],
                       "exact_accuracy": r["exact_accuracy"], "agreement": r["agreement"],
                       "logit_error_mean": r["logit_error_mean"], "seconds": time.perf_counter() - start}
                rows.append(row)
                print(f"{name:<17}{backend:<20}{shots:>6}{row['accuracy']:>7.3f}{row['exact_accuracy']:>7.3f}"
                      f"{row['agreement']:>7.3f}{row['logit_error_mean']:>10.3f}{row['seconds']:>9.1f}", flush=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
