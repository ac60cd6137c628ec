"""Exact accuracy of checkpoints on their test split and on data seeds never used in training,
their noisy accuracy through the pipeline, and the README's model card built from the results.

    python -m bench.generate.model_evals [--seeds 10007,20001,20002,20003] [--json bench/generate/model_evals.json]
                                         [--noisy fake_fez] [--noisy-n 200] [--noisy-shots 4000] NAME...
    python -m bench.generate.model_evals --card README.md      # rewrite the model card from the JSON

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
import math
import re
import time
from pathlib import Path

import torch

from bench.harness import ROOT
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
    ap.add_argument("--card", help="rewrite the model card between the markers in this markdown file from --json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    if args.card:
        write_card(Path(args.card), out)
        return
    for name in args.names:
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


def noisy_run(name: str, device: str, n: int, shots: int) -> dict:
    from qssm.app.inference import run_inference
    from qssm.jobs.spec import parse_spec

    spec = parse_spec({"model": {"checkpoint": str(ROOT / "checkpoints" / f"{name}.safetensors")}, "data": {"n": n},
                       "backend": {"name": f"dm:{device}", "shots": shots, "seed_simulator": 1}})
    r = run_inference(spec, progress=False)
    return {k: r[k] for k in ("accuracy", "exact_accuracy", "logit_error_mean", "n_examples", "shots", "T",
                              "wall_seconds")}


# ---- the model card ------------------------------------------------------------------------------

CARD_BEGIN, CARD_END = "<!-- model-card: generated by python -m bench.generate.model_evals --card; do not edit -->", "<!-- /model-card -->"


def _mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def _acc_cell(m: float, se: float) -> str:
    return f"{m:.3f} ± {se:.3f}"


def _baselines(name: str) -> str:
    """The preset's baselines, or those of a preset on the same task (qlam-digits-chain shares
    qlam-digits' RNN and GRU)."""
    from qssm.models.registry import PRESETS

    if name not in PRESETS:
        return "–"
    own = PRESETS[name].baselines
    if not own and getattr(PRESETS[name].config, "quantum", False):
        task = PRESETS[name].config.task
        own = next((p.baselines for p in PRESETS.values() if p.baselines and p.config.task == task), ())
    return ", ".join(f"`{b}`" for b in own) or "–"


def card_rows(results: dict) -> list[str]:
    """One markdown row per checkpoint: parameters (quantum / classical), exact accuracy per length
    (mean ± standard error over the data seeds) or on the image split (± binomial standard error),
    noisy accuracy on dm:fake_fez, train command and time, baselines."""
    lines = ["| checkpoint | params: quantum / classical | exact accuracy | noisy on `dm:fake_fez` (n, shots): accuracy / exact / logit error | train command | train s | baselines |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in sorted(results, key=_order):
        r = results[name]
        if "seeds" not in r:
            continue
        p = r["train"]["params"] or {}
        params = f"{p.get('quantum', 0)} / {p.get('total', 0) - p.get('quantum', 0)}"
        seeds = r["seeds"]
        if any("by_length" in s for s in seeds.values()):
            lengths = sorted({int(t) for s in seeds.values() for t in s.get("by_length", {})})
            cells = []
            for t in lengths:
                m, se = _mean_se([s["by_length"][str(t)] for s in seeds.values() if str(t) in s.get("by_length", {})])
                cells.append(f"T={t}: {_acc_cell(m, se)}")
            for t, e in sorted(r.get("extra_lengths", {}).items(), key=lambda kv: int(kv[0])):
                se = math.sqrt(e["accuracy"] * (1 - e["accuracy"]) / e["n_examples"])
                cells.append(f"T={t}: {_acc_cell(e['accuracy'], se)}\\*")
            exact = "<br>".join(cells) + f"<br>({len(seeds)} data seeds, n = {next(iter(seeds.values()))['n_examples']} each)"
        else:
            s = next(iter(seeds.values()))
            m, n = s["accuracy"], s["n_examples"]
            exact = f"{_acc_cell(m, math.sqrt(m * (1 - m) / n))}<br>(test split, n = {n}, binomial s.e.)"
        noisy = r.get("noisy", {}).get("fake_fez")
        if noisy:
            noisy_cell = (f"{noisy['accuracy']:.3f} / {noisy['exact_accuracy']:.3f} / {noisy['logit_error_mean']:.2f} "
                          f"(n = {noisy['n_examples']}, {noisy['shots']} shots)")
        else:
            noisy_cell = "not run" if p.get("quantum") else "– (no circuits)"
        command = r["train"].get("command") or f"qssm train {name}"
        base = r["train"].get("base")
        baselines = f"base `{Path(base).stem}`" if base else _baselines(name)
        lines.append(f"| `{name}` | {params} | {exact} | {noisy_cell} | `{command}` | {r['train'].get('train_seconds')} | {baselines} |")
    return lines


def _order(name: str) -> tuple:
    family = next((i for i, f in enumerate(("haystack", "pattern", "digits", "smnist")) if f in name), 9)
    kind = next((i for i, k in enumerate(("qmamba", "qlam", "ssm", "rnn", "gru")) if name.startswith(k)), 9)
    return (family, "varlen" in name, kind, name)


def write_card(path: Path, results: dict) -> None:
    text = path.read_text()
    table = "\n".join([CARD_BEGIN, *card_rows(results), CARD_END])
    if CARD_BEGIN in text:
        text = re.sub(re.escape(CARD_BEGIN) + ".*?" + re.escape(CARD_END), lambda _: table, text, flags=re.S)
    else:
        raise SystemExit(f"{path} has no model-card markers; add the line {CARD_BEGIN!r} and {CARD_END!r}")
    path.write_text(text)
    print(f"model card: {len(results)} checkpoints -> {path}")


if __name__ == "__main__":
    main()
