"""qssm compile SPEC: the transpilation report per target, before spending QPU time."""

from __future__ import annotations

import dataclasses
import json

from qssm import args as types
from qssm.app.compile_report import target_report
from qssm.commands import help_for
from qssm.commands.estimate import price
from qssm.errors import QssmError
from qssm.jobs.spec import load_spec
from qssm.models import checkpoint


def register(sub) -> None:
    p = sub.add_parser("compile", help=help_for("compile"))
    p.add_argument("spec", help="job spec (TOML)")
    p.add_argument("--targets", type=types.names, help="comma-separated backends to compare (default: the spec's backend)")
    p.add_argument("--no-cuts", action="store_true", help="skip the with-cuts columns")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    spec = load_spec(args.spec)
    model, _ = checkpoint.load(spec.checkpoint)
    targets = args.targets or [spec.backend.name]
    reports = [target_report(spec, model, t, cuts=not args.no_cuts) for t in targets]
    rows = [r for rep in reports for r in rep["rows"]]
    choices = [rep["split_choice"] for rep in reports if rep["split_choice"]]
    costs = costs_per_example(spec, targets)
    if args.json:
        print(json.dumps({"checkpoint": spec.checkpoint, "optimization_level": spec.backend.optimization_level,
                          "layout": spec.backend.layout, "targets": targets, "templates": rows,
                          "layout_choice": {rep["target"]: rep["layout_choice"] for rep in reports if rep["layout_choice"]},
                          **({"split_choice": choices} if choices else {}), "cost_per_example": costs}))
        return 0
    print(f"{spec.checkpoint}: optimization level {spec.backend.optimization_level}, layout {spec.backend.layout}, "
          f"cutting {spec.split.cutting} (max_overhead {spec.split.max_overhead:g})")
    head = (f"{'target':<22}{'template':<18}{'qubits':<20}{'depth':>6}{'2q':>6}{'swaps':>6}{'dur us':>8}"
            f"{'P(success)':>11}" + ("" if args.no_cuts else f"{'cuts':>6}{'overhead':>10}{'swaps cut':>10}") + "  decision")
    print(head)
    for r in rows:
        print(f"{r['target']:<22}{r['template']:<18}{','.join(map(str, r['layout'])):<20}{r['depth']:>6}"
              f"{r['two_qubit']:>6}{_s(r.get('swaps')):>6}{_s(r.get('duration_us'), '.1f'):>8}"
              f"{r['success_probability']:>11.3f}"
              + ("" if args.no_cuts else f"{_s(r.get('cuts')):>6}{_s(r.get('sampling_overhead'), '.3g'):>10}"
                                         f"{_s(r.get('swaps_cut')):>10}") + f"  {r['cut_decision']}")
    for rep in reports:
        if rep["layout_choice"]:
            lc = rep["layout_choice"]
            print(f"\nlayout = noise_aware on {rep['target']}: used {lc['used']} (estimated success "
                  f"{lc['noise_aware_success']:.3f} noise-aware on {lc['noise_aware_layout']}, "
                  f"{lc['default_success']:.3f} default)")
    for c in choices:
        print_choice(c)
    print_costs(spec, costs)
    return 0


def costs_per_example(spec, targets) -> list[dict]:
    """The spec's job priced on each target as `qssm estimate` prices it (a simulator: on the device
    whose noise it runs), per example; a target that refuses the spec gets its reason."""
    out = []
    for t in targets:
        try:
            e = price(dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name=t)), expected=False)
        except QssmError as err:
            out.append({"target": t, "error": str(err)})
            continue
        c = e.get("on_device") or e
        out.append({"target": t, "device": c.get("device") or (t if e["price"] else None), "examples": e["examples"],
                    "shots_per_circuit": e["shots_per_circuit"],
                    **{k: c[k] for k in ("usd_per_example", "qpu_seconds_per_example", "shots_per_example",
                                         "tasks_per_example")}})
    return out


def print_costs(spec, costs: list[dict]) -> None:
    print(f"\ncost per example ({spec.data.n} examples, {spec.backend.shots} shots per circuit; a simulator at the "
          "price of the device whose noise it runs; `qssm estimate` for details)")
    print(f"  {'target':<22}{'priced as':<22}{'usd/example':>12}{'QPU s/example':>15}{'shots/example':>15}{'tasks/example':>15}")
    for c in costs:
        if "error" in c:
            print(f"  {c['target']:<22}-  {c['error'][:100]}")
            continue
        print(f"  {c['target']:<22}{c['device'] or 'free (no device)':<22}{c['usd_per_example']:>12,.2f}{c['qpu_seconds_per_example']:>15,.2f}"
              f"{c['shots_per_example']:>15,.0f}{c['tasks_per_example']:>15.2f}")


def print_choice(c: dict) -> None:
    print(f"\nsplit = auto on {c['target']}: segment {c['chosen']['segment']}, obp_steps {c['chosen']['obp_steps']}")
    print(f"  {'segment':>8}{'obp':>5}{'2q max':>8}{'P(success)':>12}{'predicted':>11}{'circuits/img':>14}{'shots/img':>12}  predicted from")
    for r in c["candidates"]:
        mark = " <-" if (r["segment"], r["obp_steps"]) == (c["chosen"]["segment"], c["chosen"]["obp_steps"]) else ""
        print(f"  {r['segment']:>8}{r['obp_steps']:>5}{r['max_two_qubit']:>8}{r['success_estimate']:>12.3f}"
              f"{r['predicted_accuracy']:>11.3f}{r['circuits_per_image']:>14,}{r['shots_per_image']:>12,}  {r['basis']}{mark}")
    print(f"  why: {c['why']}")


def _s(v, fmt: str = "") -> str:
    return "-" if v is None else format(v, fmt)
