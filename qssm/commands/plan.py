"""qssm plan SPEC: the dry run plans the shots (pipeline/shotplan.py). From the dm: engine's exact
noisy values, each example's chance that its decision at N shots per circuit differs from the
infinite-shot one; the curve over N, the smallest N meeting --confidence, and the floor."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from qssm import args as types
from qssm.app.plan import plan_spec
from qssm.commands import help_for
from qssm.jobs.spec import load_spec
from qssm.paths import check_out_dir
from qssm.report import write_report


def register(sub) -> None:
    p = sub.add_parser("plan", help=help_for("plan"))
    p.add_argument("spec", help="job spec (TOML), see examples/")
    p.add_argument("--backend", help="override [backend] name (a dm:<device>)")
    p.add_argument("--n", type=types.integer(1, 100_000), help="override [data] n (the first n test examples)")
    p.add_argument("--confidence", type=types.number(0.5, 0.999999), default=None,
                   help="target fraction of decisions equal to the infinite-shot ones (default: [backend] "
                        "confidence, 0.99)")
    p.add_argument("--max-shots", type=types.integer(1, 10_000_000), default=100_000,
                   help="largest shots per circuit considered (default 100000, or the device's limit if lower)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="directory for report.json and report.html (with the curve)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.out is not None:  # --out "" too: refused, not read as "no report"
        check_out_dir(args.out)
    spec = load_spec(args.spec)
    if args.backend is not None:  # --backend "" too: "unknown backend ''", not the spec's backend
        spec = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name=args.backend))
    if args.n:
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, n=args.n))
    confidence = args.confidence or spec.backend.confidence
    result = plan_spec(spec, confidence, args.max_shots)
    if args.out:
        write_report({"checkpoint": spec.checkpoint, "backend": result["backend"], "shot_plan": result}, Path(args.out))
    if args.json:
        print(json.dumps(result))
        return 0
    print(format_plan(result))
    return 0


def format_plan(r: dict) -> str:
    lines = [f"{r['checkpoint']} ({r['model']}) on {r['backend']}: {r['examples']} examples, "
             f"{r['circuits_per_example']:.1f} measured circuits per example",
             f"  infinite shots: accuracy {r['noisy_accuracy_infinite']:.3f} (exact {r['exact_accuracy']:.3f}, "
             f"agreement with exact {r['noisy_exact_agreement_infinite']:.3f})",
             "",
             f"  {'shots/circuit':>13}  {'shots/example':>13}  {'P(same as inf.)':>15}  {'P(same as exact)':>16}  "
             f"{'decisions moved':>15}  from"]
    for c in r["curve"]:
        lines.append(f"  {c['shots_per_circuit']:>13,}  {c['shots_per_example']:>13,.0f}  {c['agreement_noisy']:>15.4f}  "
                     f"{c['agreement_exact']:>16.4f}  {c['expected_flips']:>9.2f} ± {c['flip_sd']:.2f}  {c['method']}")
        if c["agreement_noisy"] >= 1 - 1e-9:
            break
    lines.append("")
    if r["recommended"]:
        rec = r["recommended"]
        lines.append(f"  recommended: shots = {rec['shots_per_circuit']} per circuit ({rec['shots_per_example']:,.0f} "
                     f"per example): {rec['agreement_noisy']:.4f} of decisions equal to the infinite-shot ones "
                     f"(target {r['confidence']})")
    else:
        lines.append(f"  no shot count up to the maximum meets {r['confidence']}: near-tied decisions; lower --confidence")
    lines.append("  (± is one run's spread: rows shared by examples move their decisions together)")
    lines.append(f"  floor (optimal per-example allocation, {r['confidence']}): mean {r['floor_mean']:,.0f}, "
                 f"median {r['floor_median']:,.0f} shots per example; adaptive shots: [backend] shots = \"auto\"")
    return "\n".join(lines)
