"""qssm report SPEC_OR_JOB --out DIR: the HTML + JSON report a user reads before (or after) spending QPU time.

For a spec: the dry run itself and transpilation per target. For a job id from the store: what the
store holds (the job's recorded summary, provenance and the transpilation of what it ran), rendered
without running anything. `--sweep` adds simulations: accuracy against shots on the exact simulator
and on the job's own device noise (`dm:` of its device, never the job's backend, which may be a paid
QPU), noisy dry runs per target, QLAM error against segment length.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from qssm import args as types
from qssm.app.auto import FRONTIER
from qssm.app.compile_report import compile_report
from qssm.app.inference import run as run_job_on
from qssm.app.job import Job, backend_for, load_quantum_model, prepare
from qssm.app.validate import validate
from qssm.backends.registry import noise_twin
from qssm.commands import help_for
from qssm.errors import QssmError
from qssm.jobs.spec import load_spec
from qssm.jobs.store import JobStore
from qssm.limits import MAX_SHOTS
from qssm.models.tasks import MAX_T, binomial_stderr, first_test_examples
from qssm.paths import check_out_dir
from qssm.pipeline.layout import device_layouts
from qssm.pipeline.provenance import now, provenance
from qssm.report import write_report

SPEC_TARGETS = "aer:fake_fez,aer:fake_torino,aer:fake_sherbrooke"


def register(sub) -> None:
    p = sub.add_parser("report", help=help_for("report"))
    p.add_argument("source", help="job spec (TOML) or job id")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--targets", type=types.names,
                   help=f"targets for the transpilation section (comma-separated; default for a spec: {SPEC_TARGETS}, "
                        "for a job: what it ran on, as recorded)")
    p.add_argument("--sweep", action="store_true",
                   help="also simulate: accuracy against shots (exact and dm: of the job's device), each target's "
                        "noise, QLAM segment lengths")
    p.add_argument("--shots", type=types.integers(1, MAX_SHOTS), default="250,1000,4000", help="shot counts for --sweep")
    p.add_argument("--segments", type=types.integers(1, MAX_T), default="2,4", help="QLAM segment lengths for --sweep")
    p.add_argument("--store", help="job store for a job id (default: $QSSM_STORE or the user data dir)")
    p.set_defaults(func=run)


def sweep_spec(spec, name: str, shots: int):
    """The job on a local simulator: `name` and `shots`, and no IBM runtime options (resilience level,
    twirling, dynamical decoupling), which only IBM backends take; readout / ZNE stay."""
    m = dataclasses.replace(spec.mitigation, resilience_level=-1, twirling=False, dynamical_decoupling=False)
    return dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name=name, shots=shots), mitigation=m)


def build_report(spec, targets: list[str] | None, shots: list[int], segments: list[int], base: dict | None = None,
                 sweep: bool = False) -> dict:
    """`base`: a stored job's report; nothing is run again (a QPU job would be paid twice) unless
    `sweep` asks for simulations, which run on the job's device noise, never on its backend."""
    model, _ = load_quantum_model(spec.checkpoint)
    # first: a bad target fails before any run
    rows = compile_report(spec, model, targets) if targets else None
    if base is None:
        with prepare(spec, model=model) as job:
            report = run_job_on(job).report
    else:
        report = dict(base)
    report["compile"] = rows if rows is not None else report.get("compiled", [])
    if "provenance" not in report:  # a job stored before runs recorded it: what the store still tells
        report["provenance"] = {**provenance(spec), "timestamp": None,
                                "note": "recorded by `qssm report`, not by the run: versions are the reporter's"}
    report["report_written"] = now()
    if rows is not None or "layouts" not in report:  # a run records its own device graph
        report["layouts"] = device_layouts(report["compile"])
    if model.splits:  # measured data shipped with qssm, not a simulation
        report["split_frontier"] = measured_frontier(spec.checkpoint)
    if not sweep:
        return report
    data = first_test_examples(model.cfg.task, spec.data.n, spec.data.seed, spec.data.T or None, spec.data.path or None)

    def run_inference(sweep, progress=False):  # the same model and examples on another simulator
        with backend_for(sweep) as backend:
            validate(sweep, backend, model)
            return run_job_on(Job(sweep, model, data, backend), progress=progress).report

    twin = noise_twin(spec.backend.name)
    runs = []
    for name in dict.fromkeys(["exact", twin]):
        for s in shots:
            r = run_inference(sweep_spec(spec, name, s), progress=False)
            runs.append({"backend": name, "shots": s, "accuracy": r["accuracy"], "accuracy_stderr": r["accuracy_stderr"],
                         "logit_error_mean": r["logit_error_mean"], "total_shots": r["total_shots"]})
    report["shots_sweep"] = runs
    noisy = []  # every target's device noise (its dm: twin) at the sweep's largest shot count
    for name in dict.fromkeys(noise_twin(t) for t in targets or []):
        if name == "exact":
            continue
        r = run_inference(sweep_spec(spec, name, shots[-1]), progress=False)
        noisy.append({"backend": name, "shots": shots[-1], "accuracy": r["accuracy"],
                      "accuracy_stderr": r["accuracy_stderr"], "logit_error_mean": r["logit_error_mean"],
                      "wall_seconds": r["wall_seconds"]})
    report["noisy_targets"] = noisy
    if model.splits:
        seg = []
        for k in segments:
            for s in (0, shots[-1]):
                split = dataclasses.replace(spec.split, segment=k, obp_steps=0)
                r = run_inference(dataclasses.replace(sweep_spec(spec, "exact", s), split=split), progress=False)
                seg.append({"segment": k, "shots": s, "accuracy": r["accuracy"],
                            "accuracy_stderr": binomial_stderr(r["accuracy"], r["n_examples"]),
                            "logit_error_mean": r["logit_error_mean"], "round_trips": r["round_trips"],
                            "purity": r.get("mean_segment_purity")})
        report["segment_sweep"] = seg
    return report


def measured_frontier(checkpoint_path: str) -> list[dict]:
    """The shipped measurements (bench/generate/qlam_split.py -> qssm/app/qlam_frontier.json) for every QLAM
    checkpoint, as the report's accuracy-against-cost section: this model's levers beside the others."""
    if not FRONTIER.exists():
        return []
    return json.loads(FRONTIER.read_text())


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
    targets = args.targets or (SPEC_TARGETS.split(",") if base is None else None)
    report = build_report(spec, targets, args.shots, args.segments, base, sweep=args.sweep)
    write_report(report, Path(args.out))
    print(f"report written to {args.out}/report.html and {args.out}/report.json")
    return 0
