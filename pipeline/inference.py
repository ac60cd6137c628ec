"""Inference through the pipeline from a job spec: the model's test inputs run on a backend, scored
against the exact torch forward. Returns plain data (a dict) that the CLI prints, the report renders
and the job store keeps.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from qssm.backends.registry import get_backend
from qssm.jobs.spec import JobSpec
from qssm.models import checkpoint
from qssm.models.tasks import Batch, test_set
from qssm.pipeline.compile import CompileOptions
from qssm.pipeline.evaluator import PipelineEvaluator, n_segments
from qssm.pipeline.runner import Dispatch, Runner
from qssm.pipeline.token_table import build_token_table
from qssm.errors import QssmError


def load_inputs(model, spec: JobSpec) -> Batch:
    task = model.cfg.task
    batch = test_set(task, spec.data.seed, T=spec.data.T or None)
    n = min(spec.data.n, len(batch.targets))
    inputs = batch.inputs[:n]
    if inputs.is_floating_point():
        inputs = inputs.double()
    return Batch(inputs, batch.targets[:n], {k: (v[:n] if hasattr(v, "__len__") else v) for k, v in batch.meta.items()})


def build_runner(spec: JobSpec, dispatch: Dispatch | None = None, backend=None, initial_layout=None) -> Runner:
    backend = backend or get_backend(spec.backend.name, seed=spec.backend.seed_simulator)
    shots = spec.backend.shots or None
    if shots is None and not backend.exact_capable:
        raise QssmError(f"backend {backend.name} samples: set [backend] shots > 0 (e.g. shots = 4000)")
    if shots and backend.max_shots and shots > backend.max_shots:
        raise QssmError(f"{shots} shots exceed {backend.name}'s limit of {backend.max_shots}; lower [backend] shots")
    if spec.backend.layout not in ("default", "noise_aware"):
        raise QssmError(f'backend.layout must be "default" or "noise_aware", got {spec.backend.layout!r}')
    layout_info = None
    if spec.backend.layout == "noise_aware" and initial_layout is None and backend.target is not None:
        # one layout for all templates: QMamba's and QLAM's templates share one width per model;
        # kept only if its estimated success beats the default layout's (else the default stays)
        from qssm.circuits.templates import model_templates
        from qssm.models import checkpoint
        from qssm.pipeline.layout import layout_report

        model, _ = checkpoint.load(spec.checkpoint)
        circuits = [t.circuit for t in model_templates(model)]
        widths = {c.num_qubits for c in circuits}
        if len(widths) != 1:
            raise QssmError(f"noise_aware layout needs templates of one width, got {sorted(widths)}; "
                            'set [backend] layout = "default"')
        if circuits[0].num_qubits <= backend.target.num_qubits:
            layout_info = layout_report(backend.target, circuits, spec.backend.optimization_level,
                                        spec.backend.seed_transpiler)
            better = layout_info["noise_aware_success"] >= layout_info["default_success"]
            layout_info["used"] = "noise_aware" if better else "default"
            if better:
                initial_layout = layout_info["noise_aware_layout"]
    options = CompileOptions(spec.backend.optimization_level, spec.backend.seed_transpiler, initial_layout)
    m = spec.mitigation
    passthrough = {"resilience_level": m.resilience_level, "twirling": m.twirling,
                   "dynamical_decoupling": m.dynamical_decoupling}
    if m.resilience_level >= 0 or m.twirling or m.dynamical_decoupling:
        if not isinstance(getattr(backend, "options", None), dict) or not backend.name.startswith("ibm:"):
            raise QssmError(f"[mitigation] resilience_level, twirling and dynamical_decoupling are IBM runtime "
                            f"options; {backend.name} does not take them: remove them or use an ibm: backend")
        backend.options.update({k: v for k, v in passthrough.items() if k != "resilience_level" or v >= 0})
    mitigation = None
    if m.readout or m.zne:
        from qssm.pipeline.mitigation import Mitigation

        mitigation = Mitigation.from_spec(m, backend, shots)
    runner = Runner(backend, options, spec.split.cutting, spec.split.max_overhead, dispatch, mitigation)
    runner.layout_report = layout_info  # default vs noise-aware estimated success, or None
    return runner


def evaluator_for(name: str, shots: int | None = None, segment: int = 0, seed: int = 1) -> PipelineEvaluator:
    """A PipelineEvaluator on a named backend with default compile options (for `qssm eval`)."""
    runner = Runner(get_backend(name, seed=seed))
    return PipelineEvaluator(runner, shots=shots, segment=segment)


@torch.no_grad()
def run_inference(spec: JobSpec, dispatch: Dispatch | None = None, runner: Runner | None = None,
                  progress: bool = True) -> dict:
    model, record = checkpoint.load(spec.checkpoint)
    if not getattr(model.cfg, "quantum", False):
        raise QssmError(f"{spec.checkpoint} is a classical baseline; run a quantum checkpoint on a backend")
    model = model.double()
    data = load_inputs(model, spec)
    runner = runner or build_runner(spec, dispatch)
    shots = spec.backend.shots or None
    kind = model.cfg.kind
    started = time.perf_counter()

    # QPU execution mode by the job's shape: a recurrence of several dependent round trips keeps a
    # Session (no re-queueing between them); a single round trip is a Batch of independent jobs
    trips = model.cfg.n_layers if kind == "qmamba" else n_segments(data.inputs.shape[1], spec.split.segment)
    if hasattr(runner.backend, "iterative"):
        runner.backend.iterative = trips > 1
    table_trips = 0
    table = None
    if kind == "qmamba":
        # layer 1 depends on the token id only: measure it once for the vocabulary (one round trip)
        table_eval = PipelineEvaluator(runner, shots=shots)
        table = build_token_table(model, table_eval, backend=runner.backend.name)
        table_trips = table_eval.round_trips
    ev = PipelineEvaluator(runner, shots=shots, segment=spec.split.segment, token_table=table)
    expected_trips = (model.cfg.n_layers - (table is not None)) if kind == "qmamba" else n_segments(
        data.inputs.shape[1], spec.split.segment)
    ev.progress = _progress(expected_trips, progress)

    exact_out = model(data.inputs)
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
        "backend": runner.backend.name,
        "calibration": runner.backend.calibration,
        "shots": shots or 0,
        "n_examples": len(data.targets),
        "T": int(data.inputs.shape[1]),
        "segment": spec.split.segment if kind == "qlam" else None,
        "accuracy": _acc(last, data.targets),
        "exact_accuracy": _acc(exact_last, data.targets),
        "agreement": float((last.argmax(-1) == exact_last.argmax(-1)).double().mean()),
        "logit_error_max": float(err.max()),
        "logit_error_mean": float(err.mean()),
        "round_trips": ev.round_trips,
        "token_table_round_trips": table_trips,
        "transpile_calls": runner.transpile_calls,
        "wall_seconds": wall,
        **{f"pipeline_{k}": v for k, v in ev.stats.as_dict().items() if k not in ("round_trips", "seconds")},
        "seconds_compile": runner.stats.seconds_compile,
        "seconds_dispatch": runner.stats.seconds_dispatch,
        "cost_usd": runner.stats.cost_usd,
        "cut_batches": runner.stats.cut_batches,
    }
    if runner.mitigation is not None:
        report["mitigation"] = runner.mitigation.report_rows()
    if getattr(runner, "layout_report", None):
        report["layout_choice"] = runner.layout_report
    if out.dim() == 3:  # QMamba: error of every position's logits, for the report's plot
        report["logit_error_by_position"] = (out - exact_out).abs().mean(dim=(0, 2)).tolist()
    if kind == "qmamba" and "depth" in data.meta:
        correct = (last.argmax(-1) == data.targets).numpy()
        bins = np.minimum((np.asarray(data.meta["depth"]) * 4).astype(int), 3)
        report["accuracy_by_depth"] = {f"q{q + 1}": float(correct[bins == q].mean()) if (bins == q).any() else None
                                       for q in range(4)}
    return report


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
