"""qssm eval CHECKPOINT: accuracy on the checkpoint's own test split."""

from __future__ import annotations

import contextlib
import json

from qssm import args as types
from qssm.app.inference import evaluator_for
from qssm.app.preflight import paid_run
from qssm.backends.registry import get_backend
from qssm.commands import help_for
from qssm.jobs.spec import BackendSpec, DataSpec, JobSpec
from qssm.models import checkpoint
from qssm.models.evaluator import ExactEvaluator
from qssm.models.tasks import TEST_SEED
from qssm.models.train import evaluate
from qssm.pipeline.evaluator import PipelineEvaluator


def register(sub) -> None:
    p = sub.add_parser("eval", help=help_for("eval"))
    p.add_argument("checkpoint")
    p.add_argument("--backend", default="exact", help="evaluator backend (default: exact)")
    p.add_argument("--shots", type=types.shots, default=None, help="shots per circuit (default: exact values)")
    p.add_argument("--seed", type=types.seed, default=TEST_SEED, help="test-data seed for generated tasks")
    p.add_argument("--n", type=types.examples, help="the first N examples of each test set (default: all)")
    p.add_argument("--yes", action="store_true", help="on a paid backend: spend the price the preflight prints")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def make_evaluator(name: str, shots: int | None = None, model=None, paid=None):
    """The evaluator for `name`; `paid(spec, backend, model)` is the preflight a backend that may
    cost money passes first (qssm/app/preflight.py paid_run)."""
    if name == "exact" and not shots:
        return ExactEvaluator()
    backend = get_backend(name, seed=1)
    if paid is not None:
        paid(JobSpec(checkpoint="", data=DataSpec(n=1), backend=BackendSpec(name=name, shots=shots or 0)), backend, model)
    return evaluator_for(name, shots=shots, backend=backend)


def run(args) -> int:
    model, record = checkpoint.load(args.checkpoint)

    def workload(pipeline) -> int:  # what the eval sends, planned on the exact recorder
        return evaluate(model, model.cfg, PipelineEvaluator(pipeline), seed=args.seed, n=args.n)["examples_run"]

    def paid(spec, backend, model):
        est = paid_run(spec, backend, model, workload, args.yes, "eval")
        if est and not args.json:
            print(f"estimated ${est['usd']:,.2f}, {est['qpu_seconds']:,.0f} QPU s for {est['examples']} examples")

    with contextlib.closing(make_evaluator(args.backend, args.shots, model, paid)) as ev:  # closes an IBM Session
        metrics = evaluate(model, model.cfg, ev, seed=args.seed, n=args.n)
    metrics.update(checkpoint=args.checkpoint, backend=args.backend, model=model.cfg.kind)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{args.checkpoint} ({model.cfg.kind}, task {model.cfg.task['name']}) on {args.backend}")
    print(f"  accuracy {metrics['accuracy']:.4f} on {metrics['n_examples']} test examples")
    for key in ("by_length", "by_depth"):
        if key in metrics:
            print(f"  {key}: " + ", ".join(f"{k}: {v:.3f}" for k, v in metrics[key].items()))
    for T, d in metrics.get("by_depth_length", {}).items():
        print(f"  by_depth at T={T}: " + ", ".join(f"{k}: {v:.3f}" for k, v in d.items()))
    return 0
