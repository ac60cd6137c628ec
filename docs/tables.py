"""The README's accuracy tables and model card, built from stored JSON only, never from a fresh run:
docs/gen_readme.py writes each between `<!-- table: NAME ... -->` and `<!-- /table -->`, and
tests/test_readme.py fails when one differs from what the JSON gives. A number changes in the README
only by changing the JSON, which the bench script that measures it writes:

    bench/generate/model_evals.json       python -m bench.generate.model_evals NAME...      (exact and small noisy runs)
    bench/generate/paper_benchmarks.json  python -m bench.generate.paper_table              (the standard-split records)
    bench/experiments/paper_noise.json   python -m bench.experiments.paper_noise (QLAM on each device, 10k)

tests/test_stored_numbers.py (slow) re-measures a sample of these rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from qssm.models.registry import PRESETS, build_model, n_params, preset

ROOT = Path(__file__).resolve().parents[1]
EVALS = ROOT / "bench" / "generate" / "model_evals.json"
PAPER = ROOT / "bench" / "generate" / "paper_benchmarks.json"
NOISE = ROOT / "bench" / "experiments" / "paper_noise.json"
TEST_SEED = "10007"

# what a checkpoint name alone does not say
LABELS = {
    "ssm-haystack": "each circuit → classical n×n map",
    "qlam-digits": "359 images", "qlam-digits-chain": "CZ chain memory",
    "rnn-digits": "qubits → tanh RNN, same readout", "qlam-smnist": "1000 images of MNIST-5k",
    "qlam-smnist-chain": "CZ chain memory",
    "ssm-smnist": "qubits → tanh RNN, same readout, 27 heads: equal parameters",
    "rnn-smnist": "tanh RNN, d = 120", "gru-smnist": "GRU, d = 70",
}
BENCHMARKS = {"smnist-full": ("sMNIST", 92.6), "sfashion": ("sFashion-MNIST", 81.4), "scifar": ("sCIFAR-10", 53.6)}
MODELS = {"qlam": "QLAM (6 qubits, CZ chain)", "ssm": "classical SSM (QLAM, qubits → tanh RNN)",
          "gru": "GRU", "transformer": "transformer (2 layers, causal)"}
DEVICES = ("fake_fez", "fake_sherbrooke", "iqm_garnet")


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _label(name: str) -> str:
    return f"`{name}`" + (f" ({LABELS[name]})" if name in LABELS else "")


def _params(r: dict) -> str:
    p = r["train"]["params"]
    return f"{p['total']} ({p['quantum']})"


def _quantum(r: dict) -> bool:
    return bool(r["train"]["params"]["quantum"])


def _seconds(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def _mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


# ---- haystack and pattern: the test split and the range over unseen seeds, per length ----------


def _long_cell(r: dict, T: str, bold: bool) -> str:
    """T beyond the test lengths: the mean ± standard error over a seed sweep where one was run,
    else the one seed of extra_lengths."""
    sweep = r.get("sweeps", {}).get(T)
    if sweep:
        m, se = _mean_se(list(sweep["seeds"].values()))
        text = f"{m:.3f} ± {se:.3f}"
    else:
        text = f"{r['extra_lengths'][T]['accuracy']:.3f}"
    return f"**{text}**" if bold else text


def _train_lengths(name: str) -> str:
    task = PRESETS[name].config.task
    lo, hi = task.get("train_T", (task["T"], task["T"]))
    lengths = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return lengths + (", every position" if task.get("loss") == "every_position" else "")


def generated_task_table(names: list[str]) -> list[str]:
    evals = _load(EVALS)
    lines = ["| checkpoint | params (quantum) | train lengths | T=16 | T=32 | T=64 | T=128 | T=256 | train time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        r = evals[name]
        bold = _quantum(r)
        cells = []
        for T in ("16", "32", "64", "128"):
            own = r["seeds"][TEST_SEED]["by_length"][T]
            others = [s["by_length"][T] for k, s in r["seeds"].items() if k != TEST_SEED]
            lo, hi = min(others), max(others)
            spread = f"[{lo:.3f}]" if f"{lo:.3f}" == f"{hi:.3f}" else f"[{lo:.3f}–{hi:.3f}]"
            cells.append(f"{f'**{own:.3f}**' if bold else f'{own:.3f}'} {spread}")
        cells.append(_long_cell(r, "256", bold))
        lines.append(f"| {_label(name)} | {_params(r)} | {_train_lengths(name)} | " + " | ".join(cells)
                     + f" | {_seconds(r['train']['train_seconds'])} |")
    return lines


def haystack() -> list[str]:
    return generated_task_table(["qmamba-haystack", "ssm-haystack", "gru-haystack", "qmamba-haystack-varlen",
                                             "ssm-haystack-varlen", "gru-haystack-varlen"])


def pattern() -> list[str]:
    return generated_task_table(["qmamba-pattern", "ssm-pattern", "gru-pattern"])


def small_images() -> list[str]:
    """digits and the 14x14 MNIST subset: one test split each."""
    evals = _load(EVALS)
    lines = ["| checkpoint | params (quantum) | test accuracy (n) | train time |", "| --- | --- | --- | --- |"]
    for name in ["qlam-digits", "qlam-digits-chain", "rnn-digits", "gru-digits", "qlam-smnist", "qlam-smnist-chain",
                 "ssm-smnist", "rnn-smnist", "gru-smnist"]:
        r = evals[name]
        s = r["seeds"][TEST_SEED]
        acc = f"{s['accuracy']:.3f} ± {_binomial_se(s['accuracy'], s['n_examples']):.3f}"
        lines.append(f"| {_label(name)} | {_params(r)} | {f'**{acc}**' if _quantum(r) else acc} ({s['n_examples']}) | "
                     f"{_seconds(r['train']['train_seconds'])} |")
    return lines


# ---- the paper-style table: model x benchmark on the standard splits ----------------------------


def _noise_cell(v: dict | None) -> str:
    if v is None:
        return "not run"
    what = "all 10,000" if not v.get("subset", True) and v["n"] == 10_000 else f"**subset**: {v['n']:,} of 10,000"
    agree = f", {100 * v['agreement']:.1f}% same decisions" if "agreement" in v else ""
    return (f"{100 * v['accuracy']:.1f} ± {100 * v['se']:.1f} (exact {100 * v['exact_accuracy']:.1f} on the same "
            f"images{agree}; {what}; {v['shots']} shots per circuit)")


def paper() -> list[str]:
    results, noise = _load(PAPER), _load(NOISE)
    lines = [("| benchmark | model | params (quantum) | training: steps × batch (epochs), time | exact (n = 10,000) | "
              + " | ".join(f"`dm:{d}`" for d in DEVICES) + " | paper |"),
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in DEVICES) + " | --- |"]
    for bench, (title, paper_number) in BENCHMARKS.items():
        best = max((v["accuracy"] for k, v in results.items() if k.endswith(f"-{bench}")), default=None)
        for kind, label in MODELS.items():
            name = f"{kind}-{bench}"
            n = n_params(build_model(preset(name).config))
            params = f"{n['total']:,} ({n['quantum']})"
            paper_cell = f"{paper_number}" if kind == "qlam" else "–"
            r = results.get(name)
            if r is None:
                if kind == "qlam":
                    lines.append(f"| {title} | {label} | {params} | not trained: no data here | – | "
                                 + " | ".join("–" for _ in DEVICES) + f" | {paper_cell} |")
                continue
            acc = f"{100 * r['accuracy']:.1f} ± {100 * r['se']:.1f}"
            training = f"{r['steps']} × {r['batch_size']} ({r['epochs']:g}), {_seconds(r['train_seconds'])}"
            devices = [_noise_cell(noise.get(name, {}).get(d)) if kind == "qlam" else "– (no circuits)" for d in DEVICES]
            lines.append(f"| {title} | {label} | {params} | {training} | {f'**{acc}**' if r['accuracy'] == best else acc} | "
                         + " | ".join(devices) + f" | {paper_cell} |")
    lines.append("")
    for name, r in results.items():
        if r["curve"]:
            points = ", ".join(f"{p['step']}: {p['test_accuracy_first_1000']:.3f}" for p in r["curve"])
            lines.append(f"- `{name}` learning curve (step: accuracy on the first 1000 test images; training "
                         f"loss {r['curve'][0]['loss']:.3f} → {r['curve'][-1]['loss']:.3f}): {points}")
    return lines


# ---- the model card: every shipped checkpoint ----------------------------------------------------


def _baselines(name: str) -> str:
    """The preset's baselines, or those of a preset on the same task (qlam-digits-chain shares
    qlam-digits' RNN and GRU)."""
    if name not in PRESETS:
        return "–"
    own = PRESETS[name].baselines
    if not own and getattr(PRESETS[name].config, "quantum", False):
        task = PRESETS[name].config.task
        own = next((p.baselines for p in PRESETS.values() if p.baselines and p.config.task == task), ())
    return ", ".join(f"`{b}`" for b in own) or "–"


def _order(name: str) -> tuple:
    ranks = {"haystack": 0, "pattern": 1, "digits": 2, "smnist-full": 4, "smnist": 3, "sfashion": 5}
    family = next((r for f, r in ranks.items() if f in name), 9)  # smnist-full is looked for before smnist
    kind = next((i for i, k in enumerate(("qmamba", "qlam", "ssm", "rnn", "gru", "transformer")) if name.startswith(k)), 9)
    return (family, "varlen" in name, kind, name)


def _card_exact(r: dict) -> str:
    seeds = r["seeds"]
    if any("by_length" in s for s in seeds.values()):
        lengths = sorted({int(t) for s in seeds.values() for t in s.get("by_length", {})})
        cells = []
        for t in lengths:
            m, se = _mean_se([s["by_length"][str(t)] for s in seeds.values() if str(t) in s.get("by_length", {})])
            cells.append(f"T={t}: {m:.3f} ± {se:.3f}")
        for t, e in sorted(r.get("extra_lengths", {}).items(), key=lambda kv: int(kv[0])):
            sweep = r.get("sweeps", {}).get(t)
            if sweep:
                m, se = _mean_se(list(sweep["seeds"].values()))
                cells.append(f"T={t}: {m:.3f} ± {se:.3f}†")
            else:
                cells.append(f"T={t}: {e['accuracy']:.3f} ± {_binomial_se(e['accuracy'], e['n_examples']):.3f}\\*")
        return "<br>".join(cells) + f"<br>({len(seeds)} data seeds, n = {next(iter(seeds.values()))['n_examples']} each)"
    s = next(iter(seeds.values()))
    m, n = s["accuracy"], s["n_examples"]
    return f"{m:.3f} ± {_binomial_se(m, n):.3f}<br>(test split, n = {n}, binomial s.e.)"


def model_card() -> list[str]:
    """One row per shipped checkpoint: parameters (quantum / classical), exact accuracy per length
    (mean ± standard error over the data seeds) or on the test split (± binomial standard error),
    noisy accuracy on dm:fake_fez, train command and time, baselines."""
    evals, paper_rows, noise = _load(EVALS), _load(PAPER), _load(NOISE)
    rows = dict(evals)
    for name, r in paper_rows.items():  # the standard splits: their records, 10,000 test images
        rows[name] = {"train": {"command": r["command"], "train_seconds": r["train_seconds"], "params": r["params"]},
                      "seeds": {TEST_SEED: {"accuracy": r["accuracy"], "n_examples": r["n"]}}}
        if "fake_fez" in noise.get(name, {}):
            v = noise[name]["fake_fez"]
            rows[name]["noisy"] = {"fake_fez": {"accuracy": v["accuracy"], "exact_accuracy": v["exact_accuracy"],
                                                "logit_error_mean": v["logit_error_mean"], "n_examples": v["n"],
                                                "shots": v["shots"]}}
    lines = [("| checkpoint | params: quantum / classical | exact accuracy | noisy on `dm:fake_fez` (n, shots): "
              "accuracy / exact / logit error | train command | train s | baselines |"),
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in sorted(rows, key=_order):
        r = rows[name]
        p = r["train"]["params"]
        noisy = r.get("noisy", {}).get("fake_fez")
        if noisy:
            noisy_cell = (f"{noisy['accuracy']:.3f} / {noisy['exact_accuracy']:.3f} / {noisy['logit_error_mean']:.2f} "
                          f"(n = {noisy['n_examples']}, {noisy['shots']} shots)")
        else:
            noisy_cell = "not run" if p["quantum"] else "– (no circuits)"
        base = r["train"].get("base")
        baselines = f"base `{Path(base).stem}`" if base else _baselines(name)
        command = r["train"].get("command") or f"qssm train {name}"
        lines.append(f"| `{name}` | {p['quantum']} / {p['total'] - p['quantum']} | {_card_exact(r)} | {noisy_cell} | "
                     f"`{command}` | {r['train']['train_seconds']} | {baselines} |")
    return lines


TABLES = {"haystack": haystack, "pattern": pattern, "small-images": small_images, "paper": paper,
          "model-card": model_card}
