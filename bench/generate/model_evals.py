"""Exact accuracy of checkpoints on their test split and on data seeds never used in training,
their noisy accuracy through the pipeline: bench/generate/model_evals.json, from which docs/tables.py builds
the README's accuracy tables and model card.

    python -m bench.generate.model_evals [--seeds 10007,20001,20002,20003] [--json bench/generate/model_evals.json]
                                [--noisy fake_fez] [--noisy-n 200] [--noisy-shots 4000] NAME...
    python -m bench.generate.model_evals --json bench/generate/model_evals.json --sweep 256:30001-30011 qmamba-haystack-varlen
    python docs/gen_readme.py --tables                 # the README's tables and model card from the JSON

For generated tasks (haystack, pattern) every seed draws n_test fresh sequences per length (1x, 2x,
4x, 8x the reference length task["T"]); training batches use seeds seed * 1_000_003 + step
(step < steps, so below 20,000 for every preset here) and the test split uses TEST_SEED = 10,007, so
seeds 20,001.. are unseen by training and by the tests. Image tasks have one fixed test split (the
seed does not apply) and are evaluated once; their standard error is binomial over the split.

--noisy DEVICE runs each quantum checkpoint as `qssm run` would on dm:DEVICE (the device's ISA
circuits, its noise, `--noisy-shots` per circuit, simulator seed 1) on the first --noisy-n test
examples (data seed 10007, the trained length) and records accuracy, exact accuracy and logit error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.harness import ROOT
from qssm.app.inference import run_inference
from qssm.jobs.spec import parse_spec
from qssm.models import checkpoint
from qssm.models.tasks import GENERATED, TEST_SEED, test_set
from qssm.models.train import accuracy, accuracy_by_depth, evaluate, predict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="checkpoint names under checkpoints/ (without .safetensors)")
    ap.add_argument("--seeds", default=f"{TEST_SEED},20001,20002,20003")
    ap.add_argument("--json", help="merge the results into this JSON file")
    ap.add_argument("--extra-lengths", default="256,512", help="generated tasks: also these T, on the last seed")
    ap.add_argument("--noisy", default="", help="also run quantum checkpoints on dm:DEVICE through the pipeline")
    ap.add_argument("--noisy-n", type=int, default=200)
    ap.add_argument("--noisy-shots", type=int, default=4000)
    ap.add_argument("--noisy-only", action="store_true", help="only the noisy runs (keep the exact results)")
    ap.add_argument("--sweep", default="", metavar="T:FIRST-LAST",
                    help="generated tasks: the exact accuracy at length T on each data seed FIRST..LAST (the README's "
                         "mean ± standard error), e.g. 256:30001-30011; only this, the other results are kept")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    if args.sweep:
        T, seeds = args.sweep.split(":")
        first, last = (int(x) for x in seeds.split("-"))
        for name in args.names:
            model, _ = checkpoint.load(ROOT / "checkpoints" / f"{name}.safetensors")
            out[name].setdefault("sweeps", {})[T] = sweep(model, int(T), range(first, last + 1))
            accs = list(out[name]["sweeps"][T]["seeds"].values())
            print(f"{name:24} T={T} seeds {first}-{last}: " + " ".join(f"{a:.3f}" for a in accs))
        names = []
    else:
        names = args.names
    for name in names:
        model, record = checkpoint.load(ROOT / "checkpoints" / f"{name}.safetensors")
        if args.noisy and getattr(model.cfg, "quantum", False):
            out.setdefault(name, {}).setdefault("noisy", {})[args.noisy] = noisy_run(name, args.noisy, args.noisy_n,
                                                                                      args.noisy_shots)
            r = out[name]["noisy"][args.noisy]
            print(f"{name:24} dm:{args.noisy} acc {r['accuracy']:.3f} exact {r['exact_accuracy']:.3f} "
                  f"logit err {r['logit_error_mean']:.3f} (n={r['n_examples']}, {r['shots']} shots, {r['wall_seconds']:.0f} s)")
        if args.noisy_only:
            continue
        generated = model.cfg.task["name"] in GENERATED
        seeds = [int(s) for s in args.seeds.split(",")] if generated else [TEST_SEED]
        keep = {k: v for k, v in out.get(name, {}).items() if k == "noisy"}
        out[name] = {"train": {k: record.get(k) for k in ("command", "train_seconds", "steps", "params")}, "seeds": {},
                     **keep}
        if record.get("noise_tuning"):
            out[name]["train"]["base"] = record["base"]["checkpoint"]
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
                    extra["by_depth"] = accuracy_by_depth((lg.argmax(-1) == b.targets).numpy(), b.meta["depth"])
                out[name].setdefault("extra_lengths", {})[str(T)] = extra
                print(f"{name:24} seed {seed:6} T={T}: {extra['accuracy']:.3f} (n={extra['n_examples']})"
                      + (" depth quartiles " + " ".join(f"{v:.3f}" for v in extra["by_depth"].values())
                         if "by_depth" in extra else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True))


def sweep(model, T: int, seeds) -> dict:
    """Exact accuracy at length T on data seeds no training batch or test uses."""
    out = {"n_examples": None, "seeds": {}}
    for seed in seeds:
        b = test_set(model.cfg.task, seed, T=T)
        out["seeds"][str(seed)] = accuracy(predict(model, b), b.targets)
        out["n_examples"] = len(b.targets)
    return out


def noisy_run(name: str, device: str, n: int, shots: int) -> dict:
    spec = parse_spec({"model": {"checkpoint": str(ROOT / "checkpoints" / f"{name}.safetensors")}, "data": {"n": n},
                       "backend": {"name": f"dm:{device}", "shots": shots, "seed_simulator": 1}})
    r = run_inference(spec, progress=False)
    return {k: r[k] for k in ("accuracy", "exact_accuracy", "logit_error_mean", "n_examples", "shots", "T",
                              "wall_seconds")}


if __name__ == "__main__":
    main()
