"""The QLAM paper's benchmarks on the standard splits: bench/generate/paper_benchmarks.json from the shipped
checkpoints' own training records (exact accuracy on the full 10,000-image test set, parameters,
steps, batch, epochs, seconds, learning curve). docs/tables.py builds the README's paper-style table
from it and from bench/experiments/paper_noise.json (bench/experiments/paper_noise.py: QLAM on each device's noise).

    python -m bench.generate.paper_table   # write bench/generate/paper_benchmarks.json
    python docs/gen_readme.py --tables # rewrite the README's tables from the JSON
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.harness import ROOT
from qssm.models import checkpoint

BENCHMARKS = ("smnist-full", "sfashion", "scifar")
MODELS = ("qlam", "ssm", "gru", "transformer")


def rows() -> dict:
    out = {}
    for bench in BENCHMARKS:
        for kind in MODELS:
            path = ROOT / "checkpoints" / f"{kind}-{bench}.safetensors"
            if not path.exists():
                continue
            _, r = checkpoint.load(path)
            m = r["metrics"]
            p, n = m["accuracy"], m["n_examples"]
            out[f"{kind}-{bench}"] = {
                "accuracy": p, "se": math.sqrt(p * (1 - p) / n), "n": n, "params": r["params"],
                "train_seconds": r["train_seconds"], "steps": r["steps"], "batch_size": r["batch_size"],
                "epochs": round(r["steps"] * r["batch_size"] / 60_000, 2), "command": r["command"],
                "threads": r["threads"], "torch": r["torch"], "curve": r.get("curve", []),
            }
    return out


def main() -> None:
    results = rows()
    (Path(__file__).resolve().parent / "paper_benchmarks.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    for name, r in results.items():
        print(f"{name:24} {r['accuracy']:.4f} ± {r['se']:.4f} (n = {r['n']}), {r['steps']} steps x {r['batch_size']} "
              f"({r['epochs']:g} epochs), {r['train_seconds']:.0f} s")


if __name__ == "__main__":
    main()
