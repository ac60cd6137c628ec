"""qssm estimate SPEC: what `qssm submit` would charge, per job and per example, without credentials
and without recording anything (the same preflight: qssm/app/preflight.py `estimate`)."""

from __future__ import annotations

import json

from qssm.app.preflight import price_spec
from qssm.commands import help_for
from qssm.commands.run import add_overrides, apply_overrides
from qssm.jobs.spec import load_spec


def register(sub) -> None:
    p = sub.add_parser("estimate", help=help_for("estimate"))
    p.add_argument("spec", help="job spec (TOML)")
    add_overrides(p, "price")  # as run and submit take them: "auto" shots are priced at their cap
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def price(spec, expected: bool = True) -> dict:
    """The preflight's checks (all but credentials) and its estimate, with the spec's budget."""
    return price_spec(spec, expected)


def run(args) -> int:
    spec = apply_overrides(load_spec(args.spec), args)
    est = price(spec)
    print(json.dumps(est) if args.json else format_estimate(est))
    return 0


def price_line(p: dict | None) -> str:
    if not p:
        return "free (simulator)"
    if "usd_per_qpu_second" in p:
        what = f"${p['usd_per_qpu_second'] * 60:g} per QPU minute"
    else:
        what = f"${p['per_task_usd']:g} per task + ${p['per_shot_usd']:g} per shot"
    return f"{what} ({p['source']}, as of {p['date']})"


def cost_rows(e: dict) -> list[str]:
    rows = [("USD", e["usd"], e["usd_per_example"], ",.2f"), ("QPU seconds", e["qpu_seconds"],
                                                             e["qpu_seconds_per_example"], ",.2f"),
            ("shots", e["shots"], e["shots_per_example"], ",.0f"), ("tasks/jobs", e["tasks"], e["tasks_per_example"], ",.2f"),
            ("executions", e["executions"], e["executions_per_example"], ",.0f")]
    out = [f"  {'':<13}{'total':>14}{'per example':>14}"]
    out += [f"  {label:<13}{format(total, fmt):>14}{format(each, fmt):>14}" for label, total, each, fmt in rows]
    return out


def expected_lines(e: dict) -> list[str]:
    """An adaptive job: the cap (what the budget holds) and the expected cost (qssm/app/expected.py)."""
    paid = e.get("on_device") or e
    lines = [(f"adaptive shots: the table prices the cap, {paid['shots_per_example']:,.0f} shots per example "
              f"(${paid['usd_per_example']:,.2f} per example); the budget holds the larger of the cap and the expected cost")]
    x = e.get("expected") or {}
    if not x.get("available"):
        return lines + [f"  expected cost: not derived ({x.get('why', 'no noise twin')})"]
    lines.append(f"  expected: ${x['usd_per_example']:,.2f} ± {x['usd_stderr'] / max(1, x['examples']):,.2f} per example, "
                 f"{x['shots_per_example']:,.0f} ± {x['shots_per_example_stderr']:,.0f} shots, {x['tasks_per_example']:.2f} "
                 f"tasks/jobs per example; ${x['usd']:,.2f} ± {x['usd_stderr']:,.2f} for the job")
    lines.append(f"  derived from {x['derivation']}")
    if x["usd"] > paid["usd"]:
        lines.append(f"  the expected cost exceeds the cap's price: the rounds sent {x['tasks']:.0f} tasks/jobs where the "
                     f"cap prices one round's {paid['tasks']:.0f}; the budget holds the larger")
        lines.append("  each task/job pays the provider's fixed overhead, so fixed shots may cost less here: "
                     "`qssm plan SPEC` recommends the fewest fixed shots per circuit for the same confidence")
    return lines


def format_estimate(e: dict) -> str:
    shots = f"{e['shots_per_circuit']} shots per circuit" if e["shots_per_circuit"] else "exact values"
    lines = [f"{e['checkpoint']} on {e['backend']}: {e['examples']} examples, {shots}, {e['round_trips']} round trips, "
             f"{e['batches']} batches, {e['executions']:,} executions"]
    if e["price"]:
        lines += [*cost_rows(e), f"  price: {price_line(e['price'])}"]
    else:
        lines.append("  free (simulator)")
    if dev := e.get("on_device"):
        lines += [f"on {dev['device']}, the device whose noise {e['backend']} runs:", *cost_rows(dev),
                  f"  price: {price_line(dev['price'])}"]
    if e.get("adaptive"):
        lines += expected_lines(e)
    limits = [f"{k} = {v:g}" for k, v in e["budget"].items() if v]
    if limits:
        verdict = "within budget" if e["within_budget"] else "OVER budget: submit refuses it unless --yes"
        lines.append(f"budget: {', '.join(limits)}: {verdict}")
    return "\n".join(lines)
