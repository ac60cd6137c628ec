"""Noisy dry runs of the shipped checkpoints on every device snapshot at three shot counts, on
whole test sets (at least 200 examples per cell).

    python -m bench.experiments.dry_runs [--checkpoints a,b] [--backends dm:fake_fez,...] [--shots 500,2000,8000]
                                         [--n 200] [--json bench/experiments/dry_runs.json]
    python -m bench.experiments.dry_runs --render   # the README table from the JSON

Prints accuracy with its standard error (and exact accuracy on the same examples), agreement with
the exact predictions, mean logit error against exact, and wall time per run: the README's table.
The dm: backends are qssm's density-matrix engine with each snapshot's noise (Aer's device models
for IBM, Braket's channels for the Braket snapshots), tested against Aer and braket_dm.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from bench.harness import job_spec, run_job
from qssm.errors import QssmError

CHECKPOINTS = "qmamba-haystack,qmamba-haystack-varlen,qlam-digits,qlam-digits-chain"
BACKENDS = "dm:fake_fez,dm:fake_torino,dm:fake_sherbrooke,dm:iqm_garnet,dm:rigetti_ankaa3,dm:ionq_forte"


def render(rows: list[dict]) -> str:
    """One markdown row per checkpoint x backend: accuracy +- s.e. and logit error at each shot count."""
    shots = sorted({r["shots"] for r in rows})
    head = "| checkpoint | backend | exact | " + " | ".join(f"acc @ {s}" for s in shots) + " | " + \
        " | ".join(f"logit err @ {s}" for s in shots) + " |"
    lines = [head, "|" + " --- |" * (3 + 2 * len(shots))]
    cells = {(r["checkpoint"], r["backend"], r["shots"]): r for r in rows}
    for name, backend in dict.fromkeys((r["checkpoint"], r["backend"]) for r in rows):
        got = [cells.get((name, backend, s)) for s in shots]
        exact = next(r["exact_accuracy"] for r in got if r)
        acc = [f"{r['accuracy']:.3f} ± {r['accuracy_stderr']:.3f}" if r else "refused" for r in got]
        err = [f"{r['logit_error_mean']:.2f}" if r else "" for r in got]
        lines.append(f"| {name} | {backend} | {exact:.3f} | " + " | ".join(acc) + " | " + " | ".join(err) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", default=CHECKPOINTS)
    ap.add_argument("--backends", default=BACKENDS)
    ap.add_argument("--shots", default="500,2000,8000")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "dry_runs.json"))
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    if args.render:
        print(render(json.load(open(args.json))))
        return
    torch.set_num_threads(1)
    # cells already measured stay in the file; a cell measured again replaces its old row
    rows = json.load(open(args.json)) if os.path.exists(args.json) else []
    print(f"{'checkpoint':<24}{'backend':<22}{'shots':>6}{'n':>5}{'acc':>7}{'±':>6}{'exact':>7}{'agree':>7}"
          f"{'logit err':>10}{'seconds':>9}")
    for name in args.checkpoints.split(","):
        for backend in args.backends.split(","):
            for shots in map(int, args.shots.split(",")):
                try:
                    done = run_job(job_spec(name, backend, args.n, shots))
                except QssmError as e:  # e.g. more shots than the device allows: say so, keep going
                    print(f"{name:<24}{backend:<22}{shots:>6}  refused: {e}", flush=True)
                    continue
                r = done.report
                p, n = r["accuracy"], r["n_examples"]
                row = {"checkpoint": name, "backend": backend, "shots": shots, "n": n, "accuracy": p,
                       "accuracy_stderr": r["accuracy_stderr"], "exact_accuracy": r["exact_accuracy"],
                       "agreement": r["agreement"], "logit_error_mean": r["logit_error_mean"],
                       "seconds": done.seconds}
                rows = [r for r in rows if (r["checkpoint"], r["backend"], r["shots"]) != (name, backend, shots)]
                rows.append(row)
                print(f"{name:<24}{backend:<22}{shots:>6}{n:>5}{p:>7.3f}{row['accuracy_stderr']:>6.3f}"
                      f"{row['exact_accuracy']:>7.3f}{row['agreement']:>7.3f}{row['logit_error_mean']:>10.3f}"
                      f"{row['seconds']:>9.1f}", flush=True)
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
