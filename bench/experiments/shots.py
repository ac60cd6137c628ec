"""Shots from decisions, measured (issue 21): fixed shots per circuit against the dry-run plan's
recommendation, adaptive shots and the floor, on the dm: engine with sampling.

    OMP_NUM_THREADS=1 python -m bench.experiments.shots [--rows 0,1] [--n-qlam 359] [--n-qmamba 500] [--seeds 5]
                                                        [--strict] [--fixed-seeds K] [--json bench/experiments/shots.json]
    python -m bench.experiments.shots --rows 1,5 --adaptive-only 0.996   # add an adaptive confidence to stored rows
    python -m bench.experiments.shots --rows 0,2 --reprice   # fixed and plan columns' prices on today's pricing
    python -m bench.experiments.shots --table bench/experiments/shots.json [more.json ...]   # the saved rows' table

Per row (checkpoint, device): `qssm plan`'s oracle (exact noisy values, the curve, the floor and
the infinite-shot noisy decisions); full pipeline runs at fixed 4000 / 1000 / 250 / 64 / 16 shots
per circuit and at the plan's recommendation (seed 1); adaptive shots over `--seeds` simulator seeds
(the table shows seed 1; the confidence check pools them all). Every column: accuracy, agreement
with the exact forward, agreement with the infinite-shot noisy decisions, shots per example (mean /
median / p90 / max), and $ per example at Garnet's and IBM's prices: Garnet = the device snapshot's
per-task + per-shot price over the batches dispatched (backends/devices.py estimate_cost, one task
per batch), IBM = QPU seconds from backends/ibm.py's model (shots x (rep delay + the row's circuit
durations) + per-job overhead) at its list price. Fixed shots: every example pays the same.
--strict adds adaptive at confidence 1 - 2/n (the acceptance's own 2 moved examples); --fixed-seeds K
runs each fixed count at K seeds and checks the plan against their mean. The frontier table: the
floor's mean when the k hardest decisions are given up, against fixed 64's shots.
Two floors: the delta method's (pipeline/shotplan.py Sensitivity.floor, a lower bound where the
forward is linear in the noise) and the same allocation checked through the model by Monte Carlo
(checked_floor: what QMamba's recurrence adds at few shots).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from bench.harness import cpu_model, job_spec, run_job
from qssm.app.job import prepare
from qssm.app.plan import plan_spec
from qssm.backends import devices
from qssm.backends.registry import pricing_backend
from qssm.pipeline.shotplan import final_logits, oracle

ROWS = [("qlam-digits-chain", "dm:fake_fez"), ("qmamba-haystack-varlen", "dm:fake_fez"),
        ("qlam-digits-chain", "dm:iqm_garnet"), ("qmamba-haystack-varlen", "dm:iqm_garnet"),
        ("qlam-digits-chain-noisy-fez", "dm:fake_fez"), ("qmamba-haystack-varlen-noisy-fez", "dm:fake_fez")]
FIXED = [4000, 1000, 250, 64, 16]
CONFIDENCE = 0.99
PRICES = ("tasks_per_example", "garnet_usd_per_example", "ibm_qpu_seconds_per_example", "ibm_usd_per_example")


def spec_for(ck: str, backend: str, n: int, shots, seed: int = 1, confidence: float = CONFIDENCE):
    return job_spec(ck, backend, n, shots, data={"T": 64} if "haystack" in ck else None, seed_simulator=seed,
                    confidence=confidence)


def strict_confidence(n: int) -> float:
    """The confidence whose guarantee is the acceptance's own: at most 2 of n early-stopped
    decisions expected to move (1 - 2/n; 0.996 for 500 sequences). At the default 0.99 a run may
    move 1% of them, 5 of 500, which the 'within 2 examples of fixed 4000' criterion does not allow."""
    return round(1 - 2 / n, 4)


def adaptive_name(confidence: float) -> str:
    return "adaptive" if confidence == CONFIDENCE else f"adaptive @{confidence:g}"


def run_adaptive_seeds(ck: str, backend: str, n: int, seeds: int, infinite: list[int], confidence: float,
                       row: dict, save=lambda row: None) -> None:
    """Adaptive shots over `seeds` simulator seeds at `confidence`: seed 1's column, and the pooled
    check that early-stopped decisions move at most 1 - confidence (+ 3 s.e.) of the time."""
    name, wrong, stopped = adaptive_name(confidence), 0, 0
    for seed in range(1, seeds + 1):
        r = run(spec_for(ck, backend, n, "auto", seed, confidence))
        info = r["adaptive"]
        early = np.asarray(info["decided_examples"])
        differs = np.asarray(r["decisions"]) != np.asarray(infinite)
        wrong += int((differs & early).sum())
        stopped += int(early.sum())
        if seed == 1:
            row["columns"][name] = column(r, infinite, info["shots_per_example"])
            row["columns"][name].update(rounds=len(info["rounds"]), capped=info["capped"], confidence=confidence)
        per_seed = row.setdefault("adaptive_per_seed", {}).setdefault(str(confidence), [])
        per_seed[seed - 1:] = [{"seed": seed, "accuracy": r["accuracy"], "shots_mean": float(np.mean(info["shots_per_example"])),
                                "early_stopped": int(early.sum()), "differing": int((differs & early).sum())}]
        save(row)
        print(f"   {name} seed {seed}: acc {r['accuracy']:.3f}  agree(inf) {1 - differs.mean():.3f}  shots/example "
              f"{np.mean(info['shots_per_example']):,.0f}  early-stopped wrong {int((differs & early).sum())}/{int(early.sum())}"
              f"  {r['bench_seconds']:.0f} s", flush=True)
    alpha = 1 - confidence
    check = {"seeds": seeds, "early_stopped": stopped, "differing": wrong, "fraction": wrong / max(stopped, 1),
             "bound": alpha + 3 * math.sqrt(alpha * (1 - alpha) / max(stopped, 1)), "confidence": confidence}
    row.setdefault("confidence_checks", {})[str(confidence)] = check
    if confidence == CONFIDENCE:
        row["confidence_check"], row["adaptive_seeds_done"] = check, seeds


def floor_frontier(floor: list[float], n_max: int = 50) -> list[float]:
    """Mean floor shots per example when the k hardest decisions (the largest floors: near-ties)
    are given up, k = 0 .. n_max: what matching all but k infinite-shot decisions costs at least
    under optimal allocation."""
    f = np.sort(np.minimum(np.asarray(floor, dtype=float), 1e15))[::-1]
    return [float(f[k:].sum() / len(f)) for k in range(min(n_max, len(f) - 1) + 1)]


@functools.cache
def ibm_pricer():
    """backends/ibm.py's QPU-time model (estimate_cost: shots x (rep delay + the circuit's duration)
    + per-job overhead, the jobs dispatch would create) on a device it prices without credentials."""
    return pricing_backend("ibm:ibm_fez")


def prices(trips: list[list], n: int) -> dict:
    sent = [b for trip in trips for b in trip]
    shots = sum(b.executions * (b.shots or 0) for b in sent)
    ibm_cost = ibm_pricer().estimate_cost(trips)  # a round trip's batches share IBM jobs
    return {"tasks_per_example": len(sent) / n, "garnet_usd_per_example": devices.estimate_cost("iqm_garnet", len(sent), shots) / n,
            "ibm_qpu_seconds_per_example": ibm_cost["qpu_seconds"] / n, "ibm_usd_per_example": ibm_cost["usd"] / n}


def run(spec) -> dict:
    """One fixed-shot or adaptive run (harness.run_job), its report with the seconds it took and its
    price per example on Garnet and IBM from the batches dispatch sent."""
    trips = []
    r = run_job(spec, observers=[lambda e: trips.append(list(e.batches)) if e.stage == "dispatch" else None])
    report = dict(r.report, bench_seconds=r.seconds)
    report.update(prices(trips, report["n_examples"]))
    return report


def column(report: dict, infinite: list[int], per_example=None) -> dict:
    n = report["n_examples"]
    s = np.asarray(per_example if per_example is not None else [report["total_shots"] / n] * n, dtype=float)
    agree = np.asarray(report["decisions"]) == np.asarray(infinite)
    return {"accuracy": report["accuracy"], "agreement_exact": report["agreement"],
            "agreement_infinite": float(agree.mean()), "shots_mean": float(s.mean()),
            "shots_median": float(np.median(s)), "shots_p90": float(np.percentile(s, 90)), "shots_max": float(s.max()),
            "seconds": report["bench_seconds"], **{k: report[k] for k in PRICES}}


def check_plan(predicted: float, linear: float, flip_sd: float, draws: int, measured: float, n: int,
               runs: list[float] | None = None) -> dict:
    """Predicted against measured agreement. One run: its flips spread as the plan's draws say
    (flip_sd: rows shared by examples move them together), and never less than independent
    examples' Poisson spread, sqrt(expected flips) (16 draws estimate a spread loosely). Several
    seeds (`runs`, their agreements): their mean, with the spread they show between them (never
    below the Poisson one) over sqrt(seeds). Either way the prediction's own error is its spread
    over the square root of its draws, and half an example for discreteness."""
    poisson = (1 - predicted) * n
    mc = flip_sd**2 / draws if draws else 0.0  # draws = 0: the delta method's, no draws
    out = {"predicted": predicted, "predicted_linear": linear, "draws": draws, "flip_sd": flip_sd}
    if runs is not None and len(runs) > 1:
        measured = float(np.mean(runs))
        seen = float(np.std(runs, ddof=1)) * n
        se = math.sqrt(max(seen**2, poisson) / len(runs) + mc + 0.25) / n
        out.update(runs=[float(x) for x in runs], measured_flip_sd=seen)
    else:
        se = math.sqrt(max(flip_sd**2, poisson) + mc + 0.25) / n
    return {**out, "measured": measured, "se": se, "within_2se": abs(predicted - measured) <= 2 * se}


def recheck(row: dict) -> dict:
    """A stored row's plan checks and acceptance under check_plan (rows stored before it kept only se)."""
    n = row["n"]
    for k, v in row["plan_check"].items():
        draws = v.get("draws", 16)  # the plan's MC_DRAWS when the row was stored
        sd = v.get("flip_sd")
        if sd is None:
            sd = math.sqrt(max((v["se"] * n) ** 2 - 0.25, 0) / ((1 + 1 / draws) if draws else 1))
        row["plan_check"][k] = check_plan(v["predicted"], v["predicted_linear"], sd, draws, v["measured"], n,
                                          v.get("runs"))
    if has_adaptive(row):
        row["acceptance"] = acceptance(row, confidences_of(row)[0])
    return row


def one_row(ck: str, backend: str, n: int, seeds: int, save=lambda row: None,
            confidences: tuple[float, ...] = (CONFIDENCE,), fixed_seeds: int = 1) -> dict:
    print(f"== {ck} on {backend}, n = {n}", flush=True)
    start = time.perf_counter()
    plan = plan_spec(spec_for(ck, backend, n, 1000), CONFIDENCE, at_shots=FIXED, check_floor=True)
    plan_seconds = time.perf_counter() - start
    infinite = plan["decisions"]
    curve = {c["shots_per_circuit"]: c for c in plan["curve"]}
    row = {"checkpoint": ck, "backend": backend, "n": n, "plan_seconds": plan_seconds,
           "exact_accuracy": plan["exact_accuracy"], "noisy_accuracy_infinite": plan["noisy_accuracy_infinite"],
           "noisy_exact_agreement_infinite": plan["noisy_exact_agreement_infinite"],
           "circuits_per_example": plan["circuits_per_example"], "columns": {}, "plan_check": {}}
    rec = plan["recommended_shots_per_circuit"]
    if rec:
        curve[rec] = plan["recommended"]
    for shots in FIXED + ([rec] if rec else []):
        reports = [run(spec_for(ck, backend, n, shots, seed)) for seed in range(1, fixed_seeds + 1)]
        r = reports[0]
        name = f"plan ({shots})" if shots == rec and shots not in FIXED else f"fixed {shots}"
        row["columns"][name] = column(r, infinite)
        pred = curve[shots]
        runs = [float(np.mean(np.asarray(x["decisions"]) == np.asarray(infinite))) for x in reports]
        draws = plan["mc_draws"] if pred.get("method", "").startswith("monte carlo") else 0
        check = check_plan(pred["agreement_noisy"], pred["agreement_noisy_linear"], pred["flip_sd"], draws, runs[0], n,
                           runs if fixed_seeds > 1 else None)
        row["plan_check"][str(shots)] = check
        save(row)
        print(f"   {name:>14}: acc {r['accuracy']:.3f}  agree(inf) {check['measured']:.3f} ({len(runs)} seeds)  "
              f"predicted {pred['agreement_noisy']:.3f}  shots/example {r['total_shots'] / n:,.0f}  {r['bench_seconds']:.0f} s",
              flush=True)
    if rec:
        row["columns"]["plan"] = row["columns"].get(f"fixed {rec}") or row["columns"][f"plan ({rec})"]
        row["recommended_shots_per_circuit"] = rec
    row["decisions_infinite"] = list(infinite)
    for confidence in confidences:
        run_adaptive_seeds(ck, backend, n, seeds, infinite, confidence, row, save)
    floor = np.minimum(np.asarray(plan["floor_shots_per_example"]), 1e15)
    row["columns"]["floor"] = {"accuracy": plan["noisy_accuracy_infinite"], "agreement_exact": plan["noisy_exact_agreement_infinite"],
                               "agreement_infinite": 1.0, "shots_mean": float(floor.mean()),
                               "shots_median": float(np.median(floor)), "shots_p90": float(np.percentile(floor, 90)),
                               "shots_max": float(floor.max()),
                               "garnet_usd_per_example": float(floor.mean()) * devices.load_device("iqm_garnet")["pricing"]["per_shot_usd"]}
    row["floor_shots_per_example"] = [float(x) for x in floor]
    checked = np.minimum(np.asarray(plan["floor_checked_shots_per_example"]), 1e15)
    row["columns"]["floor (model check)"] = {**row["columns"]["floor"], "shots_mean": float(checked.mean()),
                                             "shots_median": float(np.median(checked)),
                                             "shots_p90": float(np.percentile(checked, 90)), "shots_max": float(checked.max()),
                                             "garnet_usd_per_example": float(checked.mean()) * devices.load_device("iqm_garnet")["pricing"]["per_shot_usd"]}
    row["acceptance"] = acceptance(row)
    return row


def acceptance(row: dict, confidence: float = CONFIDENCE) -> dict:
    """Issue 21's criteria for the row's adaptive column at `confidence` (the floors are the 0.99
    plan's: a stricter confidence's floor is higher, so its ratios here are upper bounds)."""
    c, n = row["columns"], row["n"]
    a, f4000, f64, fl = c[adaptive_name(confidence)], c["fixed 4000"], c["fixed 64"], c["floor"]
    check = confidence_check(row, confidence)
    se = math.sqrt(f4000["accuracy"] * (1 - f4000["accuracy"]) / n)
    return {"accuracy_vs_4000": abs(a["accuracy"] - f4000["accuracy"]) <= max(2 / n, se) + 1e-12,
            "mean_below_fixed_64": a["shots_mean"] < f64["shots_mean"],
            "mean_within_3x_floor": a["shots_mean"] <= 3 * fl["shots_mean"],
            "median_within_3x_floor": a["shots_median"] <= 3 * fl["shots_median"],
            **({"mean_within_3x_checked_floor": a["shots_mean"] <= 3 * c["floor (model check)"]["shots_mean"],
                "median_within_3x_checked_floor": a["shots_median"] <= 3 * c["floor (model check)"]["shots_median"]}
               if "floor (model check)" in c else {}),  # rows stored before the check have one floor
            "plan_within_2se": all(v["within_2se"] for v in row["plan_check"].values()),
            "confidence_honoured": check["fraction"] <= check["bound"]}


def confidence_check(row: dict, confidence: float) -> dict:
    """The row's pooled early-stop check at `confidence` (rows stored before several confidences
    kept only the default's)."""
    return row.get("confidence_checks", {}).get(str(confidence)) or row["confidence_check"]


def confidences_of(row: dict) -> list[float]:
    """The confidences the row has adaptive runs at, the default first (QMamba's fake_fez rows run
    only at 1 - 2/n: 0.99 lets 5 of 500 stops move, more than the accuracy criterion's 2)."""
    return sorted((float(k) for k in row.get("confidence_checks", {str(CONFIDENCE): None})), key=lambda c: c != CONFIDENCE)


def has_adaptive(row: dict) -> bool:
    return any(adaptive_name(c) in row["columns"] for c in confidences_of(row))


def table(rows: list[dict]) -> str:
    lines = [("| model | device | column | accuracy | agree exact | agree ∞-shot | shots/example mean / median / p90 / max | "
             "$/example Garnet | $/example IBM |"), "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        order = ([f"fixed {s}" for s in FIXED] + ["plan"] + [adaptive_name(c) for c in confidences_of(row)]
                 + ["floor", "floor (model check)"])
        for name in order:
            col = row["columns"].get(name)
            if col is None:
                continue
            label = f"plan ({row.get('recommended_shots_per_circuit')})" if name == "plan" else name
            ibm_usd = f"{col['ibm_usd_per_example']:.2f}" if "ibm_usd_per_example" in col else "–"
            lines.append(f"| {row['checkpoint']} | {row['backend']}{' ' + row['note'] if row.get('note') else ''} | {label} | {col['accuracy']:.3f} | {col['agreement_exact']:.3f} | "
                         f"{col['agreement_infinite']:.3f} | {col['shots_mean']:,.0f} / {col['shots_median']:,.0f} / "
                         f"{col['shots_p90']:,.0f} / {col['shots_max']:,.0f} | {col['garnet_usd_per_example']:.2f} | {ibm_usd} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> str:
    """Issue 21's acceptance per row and adaptive confidence, from the stored row (a row without
    adaptive runs says so)."""
    mark = {True: "✓", False: "✗"}
    lines = [("| row | adaptive accuracy vs fixed 4000 | adaptive mean shots < fixed 64 | adaptive / floor, median "
             "(delta method; model check) | plan within 2 s.e. (predicted / measured) | early-stopped decisions that moved (seeds) |"),
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        c = row["columns"]
        if not has_adaptive(row):
            lines.append(f"| {row['checkpoint']}, {row['backend'].split(':')[1]} | not run | | | | |")
            continue
        misses = [f"{k}: {v['predicted']:.3f} / {v['measured']:.3f}" for k, v in row["plan_check"].items() if not v["within_2se"]]
        plan = "all ✓" if not misses else "✗ " + ", ".join(misses)
        for conf in confidences_of(row):
            ok, a = acceptance(row, conf), c[adaptive_name(conf)]
            fl, ck = c["floor"]["shots_median"], c.get("floor (model check)", {}).get("shots_median")
            ratios = f"{a['shots_median'] / max(fl, 1e-9):.1f}x {mark[ok['median_within_3x_floor']]}"
            if ck is not None:
                ratios += f"; {a['shots_median'] / max(ck, 1e-9):.1f}x {mark[ok['median_within_3x_checked_floor']]}"
            cc = confidence_check(row, conf)
            label = f"{row['checkpoint']}, {row['backend'].split(':')[1]}{' ' + row['note'] if row.get('note') else ''}"
            lines.append(f"| {label}, confidence {conf:g} | {a['accuracy']:.3f} vs {c['fixed 4000']['accuracy']:.3f} "
                         f"{mark[ok['accuracy_vs_4000']]} | {a['shots_mean']:,.0f} vs {c['fixed 64']['shots_mean']:,.0f} "
                         f"{mark[ok['mean_below_fixed_64']]} | {ratios} | {plan} | {cc['differing']} of {cc['early_stopped']:,} "
                         f"({cc['seeds']}) {mark[ok['confidence_honoured']]} |")
    return "\n".join(lines)


def frontier(rows: list[dict]) -> str:
    """Where 'accuracy within 2 of fixed 4000' and 'fewer shots than fixed 64' cannot both hold: the
    floor's mean shots when the k hardest decisions are given up, k = what fixed 4000 itself moves + 2."""
    lines = [("| row | decisions fixed 4000 moves | floor mean, all decisions | floor mean, all but the k hardest (k) | "
             "fixed 64 mean | both criteria reachable |"), "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if "floor_shots_per_example" not in row:  # rows stored before the floors were kept
            continue
        c, f = row["columns"], floor_frontier(row["floor_shots_per_example"])
        moved = round((1 - c["fixed 4000"]["agreement_infinite"]) * row["n"])
        k = min(moved + 2, len(f) - 1)
        f64 = c["fixed 64"]["shots_mean"]
        lines.append(f"| {row['checkpoint']}, {row['backend'].split(':')[1]} | {moved} | {f[0]:,.0f} | {f[k]:,.0f} ({k}) | "
                     f"{f64:,.0f} | {'yes' if f[k] < f64 else 'no: the floor alone costs more'} |")
    return "\n".join(lines)


def infinite_decisions(spec) -> list[int]:
    """The plan's infinite-shot noisy decisions without the plan: its oracle forward (expected counts
    on the dm: engine, so readout errors included; a shots = 0 run's exact expectation values leave
    them out, as Aer's estimator does)."""
    with prepare(spec) as job:
        logits, _ = oracle(job.spec, job.model, job.data, job.backend)
    return final_logits(logits).argmax(-1).tolist()


def adaptive_only(path: Path, which: list[tuple[str, str]], confidence: float, seeds: int) -> None:
    """Add (or redo) the adaptive column at `confidence` on stored rows, leaving their plan, fixed
    and floor columns as measured. The infinite-shot decisions are the stored ones, or the plan's
    oracle's (infinite_decisions)."""
    data = json.loads(path.read_text())
    for row in data["rows"]:
        if (row["checkpoint"], row["backend"]) not in which:
            continue
        ck, backend, n = row["checkpoint"], row["backend"], row["n"]
        print(f"== {ck} on {backend}, n = {n}: adaptive at confidence {confidence}", flush=True)
        infinite = row.get("decisions_infinite") or infinite_decisions(spec_for(ck, backend, n, 0))
        row["decisions_infinite"] = list(infinite)
        if "confidence_checks" not in row:  # rows stored before several confidences
            row["confidence_checks"] = {str(CONFIDENCE): row["confidence_check"]}

        def save(partial):
            path.write_text(json.dumps(data, indent=1))

        run_adaptive_seeds(ck, backend, n, seeds, infinite, confidence, row, save)
        row["acceptance"] = acceptance(row, confidences_of(row)[0])
        row.setdefault("notes", []).append(f"{adaptive_name(confidence)}: {seeds} seeds added by --adaptive-only")
        save(row)
        print({c: acceptance(row, c) for c in confidences_of(row)}, flush=True)


def reprice(path: Path, which: list[tuple[str, str]]) -> None:
    """The fixed and plan columns' prices again, on today's pricing model (what dispatch sends, e.g.
    IBM's packs): each run is repeated at its stored seed (1) and must reproduce its stored accuracy
    and agreements, so only the prices change."""
    data = json.loads(path.read_text())
    for row in data["rows"]:
        if (row["checkpoint"], row["backend"]) not in which:
            continue
        for name, col in row["columns"].items():
            if not name.startswith(("fixed ", "plan (")):
                continue
            r = run(spec_for(row["checkpoint"], row["backend"], row["n"], int(name.split()[-1].strip("()"))))
            again = column(r, row["decisions_infinite"])
            same = all(abs(again[k] - col[k]) < 1e-12 for k in ("accuracy", "agreement_exact", "agreement_infinite"))
            if not same:
                raise SystemExit(f"{row['checkpoint']} {row['backend']} {name}: the rerun differs from the stored run")
            print(f"{row['checkpoint']} {row['backend']} {name}: IBM ${col.get('ibm_usd_per_example', 0):.2f} -> "
                  f"${again['ibm_usd_per_example']:.2f} per example", flush=True)
            col.update({k: again[k] for k in PRICES})
            if name == f"plan ({row.get('recommended_shots_per_circuit')})":
                row["columns"]["plan"] = col
        path.write_text(json.dumps(data, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="0,1,2,3", help="indices into ROWS")
    ap.add_argument("--n-qlam", type=int, default=359)
    ap.add_argument("--n-qmamba", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--fixed-seeds", type=int, default=1,
                    help="simulator seeds per fixed shot count: the plan check compares with their mean (their spread as its error)")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "shots.json"))
    ap.add_argument("--table", nargs="+", help="print the table of saved results and stop")
    ap.add_argument("--part", choices=("columns", "acceptance", "frontier"),
                    help="with --table: only that markdown table (the README's)")
    ap.add_argument("--strict", action="store_true",
                    help="adaptive also at confidence 1 - 2/n (strict_confidence), beside the default 0.99")
    ap.add_argument("--adaptive-only", type=float, metavar="CONFIDENCE",
                    help="rerun only the adaptive seeds at CONFIDENCE on --rows already stored in --json (their "
                         "infinite-shot decisions stored, or from the plan's oracle forward) and update those rows in place")
    ap.add_argument("--reprice", action="store_true",
                    help="redo the fixed and plan columns' prices of --rows stored in --json (reruns that must match)")
    args = ap.parse_args()
    if args.reprice:
        reprice(Path(args.json), [ROWS[int(x)] for x in args.rows.split(",")])
        return
    if args.table:
        rows = [recheck(r) for f in args.table for r in json.loads(Path(f).read_text())["rows"]]
        if args.part:
            print({"columns": table, "acceptance": verdicts, "frontier": frontier}[args.part](rows))
            return
        print(table(rows))
        print()
        print(verdicts(rows))
        print()
        print(frontier(rows))
        for r in rows:
            print(r["checkpoint"], r["backend"], r.get("acceptance"), r.get("confidence_check"))
        return
    if args.adaptive_only:
        adaptive_only(Path(args.json), [ROWS[int(x)] for x in args.rows.split(",")], args.adaptive_only, args.seeds)
        return
    out = {"cpu": cpu_model(), "confidence": CONFIDENCE, "rows": []}
    print(f"CPU: {out['cpu']}", flush=True)
    for i in (int(x) for x in args.rows.split(",")):
        ck, backend = ROWS[i]
        def save(partial, done=out["rows"][:]):  # after every run: a killed bench keeps what it finished
            Path(args.json).write_text(json.dumps({**out, "rows": done + [partial]}, indent=1))

        n = args.n_qmamba if "qmamba" in ck else args.n_qlam
        row = one_row(ck, backend, n, args.seeds, save,
                      (CONFIDENCE, strict_confidence(n)) if args.strict else (CONFIDENCE,), args.fixed_seeds)
        out["rows"].append(row)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(row["acceptance"], row["confidence_check"], flush=True)
    print(table(out["rows"]))


if __name__ == "__main__":
    main()
