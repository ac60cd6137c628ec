"""Inference through the pipeline for a prepared job (qssm/app/job.py): the model's test inputs run on a backend, scored
against the exact torch forward. Returns plain data (a dict) that the CLI prints, the report renders
and the job store keeps; the run's statistics are its tracker's summary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial

import torch
from tqdm import tqdm

from qssm.app.job import Job, prepare
from qssm.app.pricing import DeviceCost, per_example
from qssm.app.validate import validate
from qssm.backends.registry import get_backend, paid_device
from qssm.errors import QssmError
from qssm.jobs.spec import BackendSpec, JobSpec
from qssm.models.tasks import binomial_stderr
from qssm.pipeline.adaptive import run_adaptive
from qssm.pipeline.adaptive import summary as adaptive_summary
from qssm.pipeline.build import build_pipeline, split_levers
from qssm.pipeline.delta import Recorder
from qssm.pipeline.delta import stderr as logit_stderr
from qssm.pipeline.evaluator import PipelineEvaluator
from qssm.pipeline.layout import device_layouts
from qssm.pipeline.mitigation import mitigation_report
from qssm.pipeline.provenance import provenance
from qssm.pipeline.stages import Dispatch, Pipeline
from qssm.pipeline.token_table import build_token_table


@dataclass
class Inference:
    """One run of a job: the logits the backend's measurements gave, their standard errors, the
    exact forward's, and the report (plain data the CLI prints, the report renders and the job store keeps)."""

    logits: torch.Tensor  # (examples, classes) at the scored position
    exact_logits: torch.Tensor
    targets: torch.Tensor
    report: dict
    errors: Callable[[], torch.Tensor] = field(repr=False)  # computes `stderr` when it is first read

    @cached_property
    def stderr(self) -> torch.Tensor:
        """(examples, classes): each measured value's shot noise carried to the logits (the delta method,
        pipeline/delta.py: a replay of the forward, so only when asked for); zero for exact values."""
        return self.errors()


def evaluator_for(name: str, shots: int | None = None, segment: int = 0, seed: int = 1,
                  backend=None) -> PipelineEvaluator:
    """A PipelineEvaluator on a named backend with default stages (for `qssm eval` and `generate`)."""
    backend = backend or get_backend(name, seed=seed)
    spec = JobSpec(checkpoint="", backend=BackendSpec(name=name, shots=shots or 0))
    validate(spec, backend)
    return PipelineEvaluator(build_pipeline(spec, backend), shots=shots, segment=segment)


def run_inference(spec: JobSpec, dispatch: Dispatch | None = None, pipeline: Pipeline | None = None,
                  progress: bool = True, backend=None, tracker=None, inspect=None) -> dict:
    """prepare + run for callers that hold a spec: the report. A backend created here is closed here."""
    owned = backend is None and pipeline is None
    job = prepare(spec, backend or (pipeline.backend if pipeline is not None else None))
    try:
        return run(job, dispatch, pipeline, progress, tracker, inspect).report
    finally:
        if owned:
            job.backend.close()


@torch.no_grad()
def run(job: Job, dispatch: Dispatch | None = None, pipeline: Pipeline | None = None, progress: bool = True,
        tracker=None, inspect=None) -> Inference:
    """The job's test examples through its pipeline, scored against the exact forward. `inspect(evaluator)`,
    if given, sees the evaluator before it runs (benchmarks keep the hand-off estimates with it)."""
    spec, model, data, backend = job.spec, job.model, job.data, job.backend
    if pipeline is None:
        pipeline = build_pipeline(spec, backend, dispatch, model=model, tracker=tracker)
    tracker = pipeline.tracker
    device = paid_device(backend.name)
    if device and device != backend.name:  # a dry run: what it would have cost on the device it mimics
        priced = DeviceCost(device)
        pipeline.observe(priced)
    shots = spec.backend.circuit_shots or None
    adaptive = spec.backend.adaptive
    started = time.perf_counter()
    # the reference first: weights that overflow give nan logits here, and nan circuit angles on the
    # backend, so they are refused before anything is dispatched (nan never scores)
    start = time.perf_counter()
    exact_out = model(data.inputs)
    tracker.time("exact_reference", time.perf_counter() - start)
    _check_finite(exact_out, spec, "the exact forward pass")

    # QPU execution mode by the job's shape: a recurrence of several dependent round trips keeps a
    # Session (no re-queueing between them); a single round trip is a Batch of independent jobs
    trips = job.round_trips
    backend.set_mode(spec.backend.mode, round_trips=trips)
    table = None
    # circuits that depend on the token id only: measured once for the vocabulary (adaptive rounds
    # measure the distinct tokens of each round instead)
    if model.token_table and not adaptive:
        table = build_token_table(model, PipelineEvaluator(pipeline, shots=shots, counter="table_round_trips"),
                                  backend=backend.name)
    handoff, obp = split_levers(spec.split)
    ev = PipelineEvaluator(pipeline, shots=shots, segment=spec.split.segment, token_table=table, handoff=handoff,
                           obp=obp)
    ev.progress = _progress(trips - (table is not None), progress)
    if inspect is not None:
        inspect(ev)

    info = None
    if adaptive:  # decision-aware shots: rounds until every example is decided (pipeline/adaptive.py)
        out, info = run_adaptive(model, data.inputs, pipeline, spec.backend)
    else:
        recorder = Recorder(ev)
        out = model(data.inputs, recorder)
    ev.progress.close()
    _check_finite(out, spec, f"the run on {backend.name}")
    wall = time.perf_counter() - started

    exact_last = exact_out[:, -1] if exact_out.dim() == 3 else exact_out
    last = out[:, -1] if out.dim() == 3 else out
    if info:  # the adaptive rounds' own, each example's from its last round
        stderr = partial(torch.clone, info.pop("logit_stderr"))
    else:
        stderr = partial(logit_stderr, model, data.inputs, recorder, last)
    err = (last - exact_last).abs()
    report = {
        "checkpoint": spec.checkpoint,
        "model": model.cfg.kind,
        "task": model.cfg.task["name"],
        "backend": backend.name,
        "cluster": spec.backend.cluster or None,  # where the simulator batches ran: local:N or a scheduler
        "calibration": backend.calibration,
        "shots": "auto" if adaptive else (shots or 0),
        # exact noisy values without readout error: the limit a sampled run (and `qssm plan`) has differs
        "readout_left_out": not adaptive and not shots and backend.capabilities.exact_without_readout,
        "n_examples": len(data.targets),
        "T": int(data.inputs.shape[1]),
        "segment": spec.split.segment if model.splits else None,
        **({"split": _split_summary(spec.split)} if model.splits else {}),
        **({"split_choice": job.split_choice} if job.split_choice else {}),
        "accuracy": _acc(last, data.targets),
        "accuracy_stderr": binomial_stderr(_acc(last, data.targets), len(data.targets)),
        "exact_accuracy": _acc(exact_last, data.targets),
        "exact_accuracy_stderr": binomial_stderr(_acc(exact_last, data.targets), len(data.targets)),
        "agreement": float((last.argmax(-1) == exact_last.argmax(-1)).double().mean()),
        "decisions": last.argmax(-1).tolist(),
        "logit_error_max": float(err.max()),
        "logit_error_mean": float(err.mean()),
        "wall_seconds": wall,
        **tracker.summary(),
    }
    if info:  # shots per example: each measured row's shots x circuits shared by the examples using it
        report.update(adaptive_summary(info), adaptive=info)
    n = len(data.targets)
    report.update(per_example({"shots": report["total_shots"], "executions": report["executions"]}, n))
    if device and device != backend.name:
        report["on_device"] = priced.summary(n)
        report.update({f"{k}_per_example": report["on_device"][f"{k}_per_example"] for k in ("usd", "qpu_seconds", "tasks")})
    elif device:  # a QPU job: what its results say it cost
        report.update(usd_per_example=report["cost_usd"] / max(1, n), price=backend.price())
    if mitigation := mitigation_report(pipeline):
        report["mitigation"] = mitigation
    if getattr(pipeline, "layout_report", None):
        report["layout_choice"] = pipeline.layout_report
    stage = next((s for s in pipeline.stages if s.name == "compile"), None)  # a replaced stage may lack a cache
    compiled = stage.cache.rows() if getattr(stage, "cache", None) is not None else []
    if compiled:  # what each template became on the target: the report shows it without transpiling
        report["compiled"] = compiled
        report["layouts"] = device_layouts(compiled, {backend.name: backend.target})
    report["provenance"] = provenance(spec, job.checkpoint_hash or None)  # the hash prepare read
    if out.dim() == 3:  # a logit per position: the error at every position, for the report's plot
        report["logit_error_by_position"] = (out - exact_out).abs().mean(dim=(0, 2)).tolist()
    report.update(model.report_extras(last, data.targets, data.meta))
    return Inference(last, exact_last, data.targets, report, stderr)


def _check_finite(logits: torch.Tensor, spec: JobSpec, where: str) -> None:
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=-1).sum())
        raise QssmError(f"{spec.checkpoint}: {where} gave non-finite logits (nan or inf) at {bad} positions: its "
                        f"weights overflow; retrain the model (nothing was scored)")


def _split_summary(split) -> dict:
    keys = ["segment", "tomography", "prep", "purify", "purify_readout", "obp_steps"]
    out = {k: getattr(split, k) for k in keys}
    if split.prep == "shallow":
        out["prep_layers"] = split.prep_layers
    if split.tomography == "shadows":
        out["shadow_bases"] = split.shadow_bases
    return out


def _acc(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float((logits.argmax(-1) == targets).double().mean())


class _NoProgress:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoProgress()

    return tqdm(total=total, desc="round trips", unit="trip", leave=False)


def shot_band(p: float, n: int, k: float = 3.0) -> float:
    """k standard errors of an accuracy p measured on n examples (for comparing runs)."""
    return k * math.sqrt(max(p * (1 - p), 1.0 / n) / n)
