"""qssm run SPEC: the simulator dry run of a job spec, scored against the exact forward."""

from __future__ import annotations

import json
from pathlib import Path

from qssm.jobs.spec import load_spec


def register(sub) -> None:
    p = sub.add_parser("run", help="dry-run a job spec on a simulator backend and score it against exact")
    p.add_argument("spec", help="job spec (TOML), see examples/")
    p.add_argument("--backend", help="override [backend] name")
    p.add_argument("--shots", type=int, help="override [backend] shots")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="directory for report.json and report.html")
    p.set_defaults(func=run)


def apply_overrides(spec, args):
    import dataclasses

    changes = {k: v for k, v in (("name", args.backend), ("shots", args.shots)) if v is not None}
    if changes:
        spec = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, **changes))
    return spec


def run(args) -> int:
    from qssm.pipeline.inference import run_inference

    from qssm.backends.registry import is_simulator
    from qssm.errors import QssmError

    spec = apply_overrides(load_spec(args.spec), args)
    if spec.backend.name.startswith(("ibm:", "braket:")) and not is_simulator(spec.backend.name):
        raise QssmError(f"qssm run is a simulator dry run and {spec.backend.name} is a QPU: use `qssm submit "
                        f"{args.spec}` (cost preflight, durable job), or dry-run with --backend aer:fake_<device>")
    report = run_inference(spec, progress=not args.json)
    if args.out:
        from qssm.report import write_report

        write_report(report, Path(args.out))
    if args.json:
        print(json.dumps(report))
    else:
        print(format_run(report))
        if args.out:
            print(f"report written to {args.out}/report.html and {args.out}/report.json")
    return 0


def format_run(r: dict) -> str:
    shots = f"{r['shots']} shots" if r["shots"] else "exact expectation values"
    lines = [
        f"{r['checkpoint']} ({r['model']}, {r['task']}) on {r['backend']}, {shots}",
        f"  accuracy        {r['accuracy']:.3f}   (exact {r['exact_accuracy']:.3f}, agreement {r['agreement']:.3f}) on {r['n_examples']} examples, T={r['T']}",
        f"  logit error     max {r['logit_error_max']:.2e}   mean {r['logit_error_mean']:.2e}",
        f"  round trips     {r['round_trips']} (+{r['token_table_round_trips']} token table)   transpile calls {r['transpile_calls']}",
        f"  bindings        {r['pipeline_bindings']} distinct of {r['pipeline_requested_rows']} requested, {r['pipeline_batches']} batches"
        + (f", {r['pipeline_table_hits']} token-table hits" if r.get("pipeline_table_hits") else ""),
        f"  circuit shots   {r['pipeline_circuits_shots']:,}",
        f"  wall time       {r['wall_seconds']:.1f} s (compile {r['seconds_compile']:.1f} s, dispatch {r['seconds_dispatch']:.1f} s)",
    ]
    if r.get("mean_segment_purity") is not None and r.get("pipeline_mean_segment_purity") is not None:
        lines.append(f"  segment purity  {r['pipeline_mean_segment_purity']:.3f}")
    return "\n".join(lines)
