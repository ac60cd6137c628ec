"""What the bench scripts share (bench/__init__.py): the repository's paths, one job run through
the pipeline as `qssm run` runs it, timing, and the results table.

Timings are medians over repeats after one warm-up; machines are noisy, so only ratios measured
side by side in one run are quoted. Every measurement runs with torch.set_num_threads(1).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import qiskit
import torch

from qssm.app.inference import run
from qssm.app.job import Job, prepare
from qssm.jobs.spec import JobSpec, parse_spec
from qssm.models.statevector import default_device
from qssm.pipeline.build import build_pipeline
from qssm.pipeline.stages import Event, Pipeline

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "qmamba-haystack.safetensors"


# ---- one job through the pipeline -------------------------------------------------------------


def checkpoint_path(name: str | Path) -> Path:
    """A shipped checkpoint by name (checkpoints/NAME.safetensors); a path is kept as given."""
    return Path(name) if str(name).endswith(".safetensors") else ROOT / "checkpoints" / f"{name}.safetensors"


def job_spec(checkpoint: str | Path, backend: str, n: int, shots: int | str = 0, *, data: dict | None = None,
             split: dict | None = None, mitigation: dict | None = None, **backend_fields) -> JobSpec:
    """The spec a job file would give: [data] n (plus `data`: seed, T), [backend] name and shots
    (plus `backend_fields`: seed_simulator, seed_transpiler, cluster, layout, ...), [split], [mitigation]."""
    return parse_spec({"model": {"checkpoint": str(checkpoint_path(checkpoint))}, "data": {"n": n, **(data or {})},
                       "backend": {"name": backend, "shots": shots, **backend_fields},
                       "split": split or {}, "mitigation": mitigation or {}})


@dataclass
class Run:
    report: dict  # the report `qssm run` prints: accuracy (and its standard error), agreement, logit errors, ...
    seconds: float  # wall clock of the whole run, checkpoint read included
    pipeline: Pipeline  # after the run: its tracker, layout report, mitigation settings
    job: Job  # the prepared job (closed): its resolved spec, float64 model and test examples


def run_job(spec: JobSpec, observers: Sequence[Callable[[Event], None]] = (), inspect=None,
            progress: bool = False) -> Run:
    """One job as `qssm run` runs it: prepared once (checkpoint read, checks, split resolved), its
    test examples through the pipeline with `observers` watching every stage, scored against the
    exact forward. `inspect(evaluator)` sees the evaluator before it runs. The backend is closed."""
    start = time.perf_counter()
    with prepare(spec) as job:
        pipeline = build_pipeline(job.spec, job.backend, model=job.model)
        for fn in observers:
            pipeline.observe(fn)
        report = run(job, pipeline=pipeline, progress=progress, inspect=inspect).report
    return Run(report, time.perf_counter() - start, pipeline, job)


# ---- timing ---------------------------------------------------------------------------------


def times(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


# ---- the results table ----------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. `ratio` is comparison / qssm (a speedup) unless `ratio_def` says
    otherwise; `goal` is the threshold the ratio is checked against (None: informational)."""

    key: str  # "a1", "b", ...
    what: str
    qssm: float  # seconds (or a count when unit == "trips")
    other: float
    unit: str  # "s" | "s/binding" | "trips"
    ratio: float
    ratio_def: str  # e.g. "naive/qssm"
    goal: str = ""  # e.g. ">= 100"; "" = no goal
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def cells(self) -> list[str]:
        show = (lambda v: f"{v:g}") if self.unit == "trips" else fmt_seconds
        suffix = "" if self.unit in ("s", "trips") else f" /{self.unit.split('/')[-1]}"
        met = "" if self.met is None else ("met" if self.met else "NOT met")
        return [self.key, self.what, show(self.qssm) + suffix, show(self.other) + suffix,
                f"{self.ratio:.3g}x {self.ratio_def}", f"{self.goal} {met}".strip()]


def check(ratio: float, goal: str) -> bool | None:
    if not goal:
        return None
    op, value = goal.split()
    return {">=": ratio >= float(value), "<=": ratio <= float(value), "==": math.isclose(ratio, float(value))}[op]


def render(rows: list[Row], env: dict) -> str:
    head = ["row", "measurement", "qssm", "comparison", "ratio", "goal"]
    body = [r.cells() for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [f"qssm bench  {env['date']}  {env['cpu']}  torch {env['torch']} on {env.get('device', 'cpu')}, "
           f"{env['threads']} thread(s) (torch.set_num_threads(1) for every measurement)  mode: {env['mode']}  "
           f"load average at start {env.get('load_average')}",
           line(head), line(["-" * w for w in widths])]
    out += [line(c) for c in body]
    notes = [f"  {r.key}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["notes:"] + notes
    return "\n".join(out)


def cpu_model() -> str:
    """The CPU's model name, as every bench table names the machine it ran on."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        cpu = ""
    return cpu or platform.processor() or platform.machine()


def environment(mode: str) -> dict:
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
            "python": platform.python_version(), "torch": torch.__version__, "qiskit": qiskit.__version__,
            "threads": torch.get_num_threads(), "mode": mode, "device": str(default_device()),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def as_json(rows: list[Row], env: dict, settings: dict) -> dict:
    return {"environment": env, "settings": settings, "rows": [asdict(r) for r in rows]}
