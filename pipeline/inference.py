"""Inference through the pipeline from a job spec: the model's test inputs run on a backend, scored
against the exact torch forward. Returns plain data (a dict) that the CLI prints, the report renders
and the job store keeps; the run's statistics are its tracker's summary.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from qssm.backends.registry import get_backend
from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec
from qssm.models import checkpoint
from qssm.models.tasks import Batch, test_set
from qssm.pipeline.build import build_pipeline
from qssm.pipeline.evaluator import PipelineEvaluator, n_segments
from qssm.pipeline.stages import Dispatch, Pipeline
from qssm.pipeline.token_table import build_token_table


def load_inputs(model, spec: JobSpec) -> Batch:
    task = model.cfg.task
    batch = test_set(task, spec.data.seed, T=spec.data.T or None)
    n = min(spec.data.n, len(batch.targets))
    inputs = batch.inputs[:n]
    if inputs.is_floating_point():
        inputs = inputs.double()
    return Batch(inputs, batch.targets[:n], {k: (v[:n] if hasattr(v, "__len__") else v) for k, v in batch.meta.items()})


def backend_for(spec: JobSpec):
    backend = get_backend(spec.backend.name, seed=spec.backend.seed_simulator)
    if spec.backend.cluster:
        from qssm.backends.cluster import ClusterBackend

        backend = ClusterBackend(backend, spec.backend.cluster)
    return backend


def evaluator_for(name: str, shots: int | None = None, segment: int = 0, seed: int = 1) -> PipelineEvaluator:
    """A PipelineEvaluator on a named backend with default stages (for `qssm eval` and `generate`)."""
    from qssm.jobs.preflight import validate
    from qssm.jobs.spec import BackendSpec

    backend = get_backend(name, seed=seed)
    spec = JobSpec(checkpoint="", backend=BackendSpec(name=name, shots=shots or 0))
    validate(spec, backend)
    return PipelineEvaluator(build_pipeline(spec, backend), shots=shots, segment=segment)


def _model(spec: JobSpec):
    model, _ = checkpoint.load(spec.checkpoint)
    if not getattr(model.cfg, "quantum", False):
        raise QssmError(f"{spec.checkpoint} is a classical baseline; run a quantum checkpoint on a backend")
    return model


@torch.no_grad()
def run_inference(spec: JobSpec, dispatch: Dispatch | None = None, pipeline: Pipeline | None = None,
                  progress: bool = True, backend=None, tracker=None, inspect=None) -> dict:
    """`inspect(evaluator)`, if given, sees the QLAM/QMamba evaluator before it runs (benchmarks
    keep the hand-off estimates with it)."""
    model = _model(spec)
    owned = backend is None and pipeline is None  # created here: closed here (sessions, cluster clients)
    backend = backend or (pipeline.backend if pipeline is not None else None) or backend_for(spec)
    try:
        return _run(spec, model, backend, dispatch, pipeline, progress, tracker, inspect)
    finally:
        if owned:
            backend.close()


@torch.no_grad()
def _run(spec, model, backend, dispatch, pipeline, progress, tracker, inspect) -> dict:
    from qssm.jobs.preflight import validate

    if pipeline is None:
        validate(spec, backend, model)
        pipeline = build_pipeline(spec, backend, dispatch, model=model, tracker=tracker)
    tracker = pipeline.tracker
    model = model.double()
    data = load_inputs(model, spec)
    shots = spec.backend.shots or None
    kind = model.cfg.kind
    started = time.perf_counter()

    # QPU execution mode by the job's shape: a recurrence of several dependent round trips keeps a
    # Session (no re-queueing between them); a single round trip is a Batch of independent jobs
    choice = None
    if kind == "qlam" and spec.split.auto:  # segment / obp_steps = "auto": chosen per target (pipeline/auto.py)
        from qssm.pipeline.auto import resolve_split

        spec, choice = resolve_split(spec, model, backend)
    trips = model.cfg.n_layers if kind == "qmamba" else n_segments(data.inputs.shape[1], spec.split.segment)
    backend.set_mode(spec.backend.mode, round_trips=trips)
    table = None
    if kind == "qmamba":
        # layer 1 depends on the token id only: measure it once for the vocabulary (one round trip)
        table = build_token_table(model, PipelineEvaluator(pipeline, shots=shots, counter="table_round_trips"),
                                  backend=backend.name)
    handoff, obp = split_levers(spec.split)
    ev = PipelineEvaluator(pipeline, shots=shots, segment=spec.split.segment, token_table=table, handoff=handoff,
                           obp=obp)
    expected = (model.cfg.n_layers - (table is not None)) if kind == "qmamba" else trips
    ev.progress = _progress(expected, progress)
    if inspect is not None:
        inspect(ev)

    start = time.perf_counter()
    exact_out = model(data.inputs)
    tracker.time("exact_reference", time.perf_counter() - start)
    out = model(data.inputs, ev)
    ev.progress.close()
    wall = time.perf_counter() - started

    exact_last = exact_out[:, -1] if exact_out.dim() == 3 else exact_out
    last = out[:, -1] if out.dim() == 3 else out
    err = (last - exact_last).abs()
    report = {
        "checkpoint": spec.checkpoint,
        "model": kind,
        "task": model.cfg.task["name"],
        "backend": backend.name,
        "calibration": backend.calibration,
        "shots": shots or 0,
        "n_examples": len(data.targets),
        "T": int(data.inputs.shape[1]),
        "segment": spec.split.segment if kind == "qlam" else None,
        **({"split": _split_summary(spec.split)} if kind == "qlam" else {}),
        **({"split_choice": choice} if choice else {}),
        "accuracy": _acc(last, data.targets),
        "exact_accuracy": _acc(exact_last, data.targets),
        "agreement": float((last.argmax(-1) == exact_last.argmax(-1)).double().mean()),
        "logit_error_max": float(err.max()),
        "logit_error_mean": float(err.mean()),
        "wall_seconds": wall,
        **tracker.summary(),
    }
    from qssm.pipeline.mitigation import mitigation_report

    if mitigation := mitigation_report(pipeline):
        report["mitigation"] = mitigation
    if getattr(pipeline, "layout_report", None):
        report["layout_choice"] = pipeline.layout_report
    if out.dim() == 3:  # QMamba: error of every position's logits, for the report's plot
        report["logit_error_by_position"] = (out - exact_out).abs().mean(dim=(0, 2)).tolist()
    if kind == "qmamba" and "depth" in data.meta:
        correct = (last.argmax(-1) == data.targets).numpy()
        bins = np.minimum((np.asarray(data.meta["depth"]) * 4).astype(int), 3)
        report["accuracy_by_depth"] = {f"q{q + 1}": float(correct[bins == q].mean()) if (bins == q).any() else None
                                       for q in range(4)}
    return report


def split_levers(split):
    """[split] -> the QLAM hand-off (pipeline/handoff.py) and back-propagation (pipeline/obp.py) settings."""
    from qssm.pipeline.handoff import Handoff
    from qssm.pipeline.obp import OBP

    handoff = Handoff(split.tomography, split.prep, split.prep_layers, split.shadow_bases, split.shadow_groups,
                      split.purify, split.mixture, purify_readout=split.purify_readout)
    obp = OBP(split.obp_steps, split.obp_max_weight, split.obp_tol) if split.obp_steps else None
    return handoff, obp


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
    from tqdm import tqdm

    return tqdm(total=total, desc="round trips", unit="trip", leave=False)


def shot_band(p: float, n: int, k: float = 3.0) -> float:
    """k standard errors of an accuracy p measured on n examples (for comparing runs)."""
    return k * math.sqrt(max(p * (1 - p), 1.0 / n) / n)
