"""qssm run SPEC: the simulator dry run of a job spec, scored against the exact forward."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from qssm import args as types
from qssm.app.inference import run_inference
from qssm.app.plan import check_plan, per_example_price, plan_for_run
from qssm.backends.registry import is_simulator
from qssm.commands import help_for
from qssm.errors import QssmError
from qssm.jobs.spec import load_spec
from qssm.paths import check_out_dir
from qssm.report import write_report


def register(sub) -> None:
    p = sub.add_parser("run", help=help_for("run"))
    p.add_argument("spec", help="job spec (TOML), see examples/")
    add_overrides(p, "run")
    p.add_argument("--cluster", type=types.cluster, help='run batches on Dask: "local:N" workers or a scheduler address tcp://host:8786')
    p.add_argument("--plan", action="store_true",
                   help="fixed shots: also plan them on the noise twin (qssm plan's recommendation and its price per "
                        "example; costs another 30-100%% of the run's time)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="directory for report.json and report.html")
    p.set_defaults(func=run)


def add_overrides(p, verb: str) -> None:
    """The spec overrides every spec command takes alike (`apply_overrides` applies them)."""
    p.add_argument("--backend", help="override [backend] name")
    p.add_argument("--shots", type=types.job_shots, help="override [backend] shots (or \"auto\")")
    p.add_argument("--n", type=types.examples, help=f"override [data] n: {verb} the first N test examples")


def apply_overrides(spec, args):
    changes = {k: v for k, v in (("name", args.backend), ("shots", args.shots),
                                 ("cluster", getattr(args, "cluster", None))) if v is not None}
    if changes:
        spec = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, **changes))
    if getattr(args, "n", None) is not None:
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, n=args.n))
    return spec


def run(args) -> int:
    if args.out is not None:  # --out "" too: refused, not read as "no report"
        check_out_dir(args.out)  # before any work: a bad --out fails now, not after the run
    spec = apply_overrides(load_spec(args.spec), args)
    if not is_simulator(spec.backend.name):
        raise QssmError(f"qssm run is a simulator dry run and {spec.backend.name} is a QPU: use `qssm submit "
                        f"{args.spec}` (cost preflight, durable job), or dry-run with --backend aer:fake_<device>")
    if args.plan:  # before the run: a plan that cannot be made is refused now, not after it
        check_plan(spec)
    report = run_inference(spec, progress=not args.json)
    if spec.backend.adaptive:  # what the preflight would price and budget for this job: its cap
        report["adaptive_cap"] = per_example_price(spec)
    elif args.plan and spec.backend.shots:
        report["shot_plan"] = plan_for_run(spec)
    if args.out:
        write_report(report, Path(args.out))
    if args.json:
        print(json.dumps(report))
    else:
        print(format_run(report))
        if args.out:
            print(f"report written to {args.out}/report.html and {args.out}/report.json")
    return 0


def cost_line(c: dict, where: str) -> str:
    """A dry run's price on the device it mimics, per example (jobs/preflight.py DeviceCost)."""
    qpu = f"{c['qpu_seconds_per_example']:,.2f} QPU s, " if c["qpu_seconds"] else ""
    date = f"; price as of {c['price']['date']}" if c.get("price") else ""
    return (f"  on the device   ${c['usd_per_example']:,.2f} per example {where} ({qpu}{c['shots_per_example']:,.0f} shots, "
            f"{c['tasks_per_example']:.2f} tasks/jobs per example; ${c['usd']:,.2f} for this run{date})")


def format_run(r: dict) -> str:
    shots = (f"{r['shots']} shots" if r["shots"] != "auto" else "adaptive shots") if r["shots"] else "exact expectation values"
    if r.get("readout_left_out"):
        shots += " (readout error left out; sampled runs and `qssm plan` include it)"
    extras = [f"{r[k]} {label}" for k, label in (("cut_batches", "batches cut"), ("zne_circuits", "ZNE circuits"),
                                                  ("calibration_circuits", "calibration circuits")) if r.get(k)]
    seconds = r.get("seconds", {})
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(seconds.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    cluster = f" (Dask cluster {r['cluster']})" if r.get("cluster") else ""
    lines = [
        f"{r['checkpoint']} ({r['model']}, {r['task']}) on {r['backend']}{cluster}, {shots}",
        f"  accuracy        {_pm(r, 'accuracy')}   (exact {_pm(r, 'exact_accuracy')}, agreement {r['agreement']:.3f}) "
        f"on {r['n_examples']} examples, T={r['T']}",
        f"  logit error     max {r['logit_error_max']:.2e}   mean {r['logit_error_mean']:.2e}",
        f"  round trips     {r['round_trips']} (+{r['table_round_trips']} token table)   transpile calls {r['transpile_calls']}",
        f"  bindings        {r['bindings']} distinct of {r['requested_rows']} requested, {r['batches']} batches"
        + (f", {r['table_hits']} token-table hits" if r.get("table_hits") else ""),
        f"  circuits        {r['executions']:,} executions, {r['total_shots']:,} shots" if r["shots"] else
        f"  circuits        {r['executions']:,} executions",
        f"  wall time       {r['wall_seconds']:.1f} s" + (f" ({stages})" if stages else ""),
    ]
    if extras:
        lines.insert(6, "  split/mitigate  " + ", ".join(extras))
    if r.get("on_device"):
        lines.append(cost_line(r["on_device"], f"on {r['on_device']['device']}"))
    elif r.get("price"):
        lines.append(f"  cost            ${r['cost_usd']:,.2f}, ${r['usd_per_example']:,.2f} per example "
                     f"({r['shots_per_example']:,.0f} shots per example)")
    if r.get("resubmitted_batches"):
        lines.append(f"  resubmitted     {r['resubmitted_batches']} in-flight batches: their jobs died with the killed "
                     "process (local simulators keep no jobs across processes)")
    if r.get("adaptive"):
        lines.append(f"  adaptive shots  {r['adaptive_rounds']} rounds, {r['adaptive_decided']} decided at confidence "
                     f"{r['adaptive']['confidence']}, {r['adaptive_capped']} capped; shots per example mean "
                     f"{r['shots_per_example_mean']:,.0f}, median {r['shots_per_example_median']:,.0f}, "
                     f"max {r['shots_per_example_max']:,.0f}")
    if r.get("adaptive_cap"):
        c = r["adaptive_cap"]
        lines.append(f"  adaptive cap    ${c['usd_per_example']:,.2f} per example on {c['device']} "
                     f"({c['shots_per_example']:,.0f} shots): what the preflight prices and the budget holds")
    if r.get("shot_plan", {}).get("line"):
        lines.append("  " + r["shot_plan"]["line"])
    if r.get("split_choice"):
        c = r["split_choice"]
        lines.append(f"  split (auto)    segment {c['chosen']['segment']}, obp_steps {c['chosen']['obp_steps']}: {c['why']}")
    if r.get("mean_segment_purity") is not None:
        lines.append(f"  segment purity  {r['mean_segment_purity']:.3f}")
    if r.get("mean_prep_fidelity") is not None:
        lines.append(f"  prep fidelity   mean {r['mean_prep_fidelity']:.4f}   min {r['min_prep_fidelity']:.4f}")
    if r.get("obp_truncation_bound") is not None:
        lines.append(f"  OBP             {r['obp_terms']} Pauli terms measured, truncation bound {r['obp_truncation_bound']:.3g}")
    return "\n".join(lines)


def _pm(r: dict, key: str) -> str:
    """An accuracy with its binomial standard error, where the report has one."""
    se = r.get(f"{key}_stderr")
    return f"{r[key]:.3f}" + ("" if se is None else f" ± {se:.3f}")
