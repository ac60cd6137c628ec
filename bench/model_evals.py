"""Exact accuracy of checkpoints on their test split and on data seeds never used in training.

    python bench/model_evals.py [--seeds 10007,20001,20002,20003] [--json bench/model_evals.json] NAME...

For generated tasks (haystack, pattern) every seed draws n_test fresh sequences per length (1x, 2x,
4x, 8x the reference length task["T"]); training batches use seeds seed * 1_000_003 + step
(step < steps, so below 20,000 for every preset here) and the test split uses TEST_SEED = 10,007, so
seeds 20,001.. are unseen by training and by the tests. Image tasks have one fixed test split (the
seed does not apply) and are evaluated once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from qssm.models import checkpoint
from qssm.models.tasks import GENERATED, TEST_SEED, test_set
from qssm.models.train import _by_depth, accuracy, evaluate, predict

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="+", help="checkpoint names under checkpoints/ (without .safetensors)")
    ap.add_argument("--seeds", default=f"{TEST_SEED},20001,20002,20003")
    ap.add_argument("--json", help="merge the results into this JSON file")
    ap.add_argument("--extra-lengths", default="256,512", help="generated tasks: also these T, on the last seed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    for name in args.names:
        model, record = checkpoint.load(ROOT / "checkpoints" / f"{name}.safetensors")
        generated = model.cfg.task["name"] in GENERATED
        seeds = [int(s) for s in args.seeds.split(",")] if generated else [TEST_SEED]
        out[name] = {"train": {k: record.get(k) for k in ("command", "train_seconds", "steps", "params")}, "seeds": {}}
        for seed in seeds:
            start = time.perf_counter()
            m = evaluate(model, model.cfg, seed=seed)
            m["eval_seconds"] = round(time.perf_counter() - start, 1)
            out[name]["seeds"][str(seed)] = m
            lengths = " ".join(f"T={k}:{v:.3f}" for k, v in m.get("by_length", {}).items())
            print(f"{name:24} seed {seed:6} acc {m['accuracy']:.4f} (n={m['n_examples']}) {lengths}")
            for T, d in m.get("by_depth_length", {}).items():
                print(f"{'':24} depth quartiles T={T}: " + " ".join(f"{v:.3f}" for v in d.values()))
        if generated and args.extra_lengths:
            seed = seeds[-1]
            for T in (int(t) for t in args.extra_lengths.split(",")):
                b = test_set(model.cfg.task, seed, T=T)
                lg = predict(model, b)
                extra = {"seed": seed, "n_examples": len(b.targets), "accuracy": accuracy(lg, b.targets)}
                if "depth" in b.meta:
                    extra["by_depth"] = _by_depth((lg.argmax(-1) == b.targets).numpy(), b.meta["depth"])
                out[name].setdefault("extra_lengths", {})[str(T)] = extra
                print(f"{name:24} seed {seed:6} T={T}: {extra['accuracy']:.3f} (n={extra['n_examples']})"
                      + (" depth quartiles " + " ".join(f"{v:.3f}" for v in extra["by_depth"].values())
                         if "by_depth" in extra else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
