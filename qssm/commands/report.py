"""qssm report SPEC_OR_JOB --out DIR: the HTML + JSON report a user reads before spending QPU time.

For a spec: transpilation per target, the run itself, accuracy against shots (ideal and the spec's
backend), logit error against token position, QLAM error against segment length. For a job id from
the store: the job's recorded summary, with its spec's transpilation report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from qssm import args as types
from qssm.app.auto import FRONTIER, split_choice
from qssm.app.compile_report import compile_report
from qssm.app.inference import run_inference
from qssm.backends.registry import device_coordinates, get_backend, is_simulator
from qssm.commands import help_for
from qssm.errors import QssmError
from qssm.jobs.spec import load_spec
from qssm.jobs.store import JobStore
from qssm.limits import MAX_SHOTS
from qssm.models import checkpoint
from qssm.models.tasks import MAX_T
from qssm.paths import check_out_dir
from qssm.pipeline.compile import CompileOptions
from qssm.report import write_report


def register(sub) -> None:
    p = sub.add_parser("report", help=help_for("report"))
    p.add_argument("source", help="job spec (TOML) or job id")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--targets", type=types.names, default="aer:fake_fez,aer:fake_torino,aer:fake_sherbrooke",
                   help="targets for the transpilation section (comma-separated)")
    p.add_argument("--shots", type=types.integers(1, MAX_SHOTS), default="250,1000,4000", help="shot counts for the accuracy-against-shots sweep")
    p.add_argument("--segments", type=types.integers(1, MAX_T), default="2,4", help="QLAM segment lengths to sweep")
    p.add_argument("--store", help="job store for a job id (default: $QSSM_STORE or the user data dir)")
    p.set_defaults(func=run)



def _with(spec, **backend):
    return dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, **backend))


def build_report(spec, targets: list[str], shots: list[int], segments: list[int], base: dict | None = None) -> dict:
    """`base`: a stored job's report; the job is not run again (a QPU job would be paid twice),
    and its backend joins the shot sweep only if it is a simulator."""
    model, _ = checkpoint.load(spec.checkpoint)
    options = CompileOptions(spec.backend.optimization_level, spec.backend.seed_transpiler)
    rows = compile_report(model, targets, options)  # first: a bad target fails before the runs
    report = dict(base) if base is not None else run_inference(spec)
    report["compile"] = rows
    sweep = []
    # the exact reference simulator and, if it is a simulator, the spec's own backend
    for name in dict.fromkeys(["exact"] + ([spec.backend.name] if is_simulator(spec.backend.name) else [])):
        for s in shots:
            r = run_inference(_with(spec, name=name, shots=s), progress=False)
            p, n = r["accuracy"], r["n_examples"]
            sweep.append({"backend": name, "shots": s, "accuracy": p, "accuracy_stderr": math.sqrt(p * (1 - p) / n),
                          "logit_error_mean": r["logit_error_mean"], "total_shots": r["total_shots"]})
    report["shots_sweep"] = sweep
    noisy = []  # every simulated device's noise at the sweep's largest shot count
    for name in targets:
        if not is_simulator(name) or get_backend(name).target is None:
            continue
        r = run_inference(_with(spec, name=name, shots=shots[-1]), progress=False)
        noisy.append({"backend": name, "shots": shots[-1], "accuracy": r["accuracy"],
                      "logit_error_mean": r["logit_error_mean"], "wall_seconds": r["wall_seconds"]})
    report["noisy_targets"] = noisy
    report["layouts"] = device_layouts(report["compile"])
    if model.splits:
        seg = []
        for k in segments:
            for s in (0, shots[-1]):
                split = dataclasses.replace(spec.split, segment=k)
                r = run_inference(dataclasses.replace(_with(spec, name="exact", shots=s), split=split), progress=False)
                seg.append({"segment": k, "shots": s, "accuracy": r["accuracy"], "logit_error_mean": r["logit_error_mean"],
                            "round_trips": r["round_trips"], "purity": r.get("mean_segment_purity")})
        report["segment_sweep"] = seg
        report["split_frontier"] = measured_frontier(spec.checkpoint)
        if spec.split.auto:
            report["split_choice"] = [split_choice(spec, model, get_backend(t), options=options) for t in targets
                                      if get_backend(t).target is not None]
    return report


def measured_frontier(checkpoint_path: str) -> list[dict]:
    """The shipped measurements (bench/qlam_split.py -> qssm/app/qlam_frontier.json) for every QLAM
    checkpoint, as the report's accuracy-against-cost section: this model's levers beside the others."""
    if not FRONTIER.exists():
        return []
    return json.loads(FRONTIER.read_text())


def device_layouts(compile_rows: list[dict]) -> list[dict]:
    """Per target: the device coupling graph and the physical qubits each template landed on."""
    out = []
    for name in dict.fromkeys(r["target"] for r in compile_rows):
        target = get_backend(name).target
        if target is None:
            continue
        edges = sorted({tuple(sorted(e)) for e in target.build_coupling_map().get_edges()})
        used = sorted({q for r in compile_rows if r["target"] == name for q in (r.get("layout") or [])})
        out.append({"target": name, "num_qubits": target.num_qubits, "edges": [list(e) for e in edges], "used": used,
                    "coordinates": device_coordinates(name)})
    return out


def run(args) -> int:
    check_out_dir(args.out)
    source = Path(args.source)
    base = None
    if source.suffix == ".toml" or source.exists():
        spec = load_spec(source)
    else:
        if not types.JOB_ID.fullmatch(args.source):
            raise QssmError(f"{args.source!r:.60} is neither a spec file nor a job id; give a spec (TOML) or a "
                            f"job id from `qssm status`")
        store = JobStore(args.store, create=False)
        job = store.job(args.source)
        if job["status"] != "done":
            raise QssmError(f"job {args.source} is {job['status']}; report on it once `qssm status` says done")
        spec, base = store.job_spec(args.source), job["report"]
    report = build_report(spec, args.targets, args.shots, args.segments, base)
    write_report(report, Path(args.out))
    print(f"report written to {args.out}/report.html and {args.out}/report.json")
    return 0
