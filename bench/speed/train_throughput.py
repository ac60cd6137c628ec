"""Training throughput (sequences per second) of each preset, forward + backward + Adam step.

    python -m bench.speed.train_throughput [--steps 20] [--repeats 5]

Prints a table of medians over repeats; machines are noisy, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from qssm.models.registry import PRESETS, build_model, last_logits, n_params
from qssm.models.tasks import train_batches


def measure(name: str, steps: int, repeats: int) -> dict:
    p = PRESETS[name]
    torch.manual_seed(0)
    model = build_model(p.config)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    batches = train_batches(p.config.task, p.batch_size, 0)
    data = [next(batches) for _ in range(steps)]
    rates = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        for batch in data:
            loss = F.cross_entropy(last_logits(model, batch.inputs), batch.targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if r:  # the first pass is a warm-up
            rates.append(steps * p.batch_size / (time.perf_counter() - start))
    return {"preset": name, "params": n_params(model)["total"], "batch": p.batch_size,
            "seq_len": data[0].inputs.shape[1], "median_seq_per_s": statistics.median(rates),
            "min": min(rates), "max": max(rates)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'preset':<18}{'params':>8}{'batch':>7}{'T':>5}{'seq/s (median)':>17}{'min':>9}{'max':>9}")
    for name in args.presets:
        r = measure(name, args.steps, args.repeats)
        print(f"{r['preset']:<18}{r['params']:>8}{r['batch']:>7}{r['seq_len']:>5}"
              f"{r['median_seq_per_s']:>17.0f}{r['min']:>9.0f}{r['max']:>9.0f}")


if __name__ == "__main__":
    main()
