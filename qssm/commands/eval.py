"""qssm eval CHECKPOINT: accuracy on the checkpoint's own test split."""

from __future__ import annotations

import contextlib
import json

from qssm import args as types
from qssm.app.inference import evaluator_for
from qssm.commands import help_for
from qssm.models import checkpoint
from qssm.models.evaluator import ExactEvaluator
from qssm.models.tasks import TEST_SEED
from qssm.models.train import evaluate


def register(sub) -> None:
    p = sub.add_parser("eval", help=help_for("eval"))
    p.add_argument("checkpoint")
    p.add_argument("--backend", default="exact", help="evaluator backend (default: exact)")
    p.add_argument("--shots", type=types.shots, default=None, help="shots per circuit (default: exact values)")
    p.add_argument("--seed", type=types.seed, default=TEST_SEED, help="test-data seed for generated tasks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def make_evaluator(name: str, shots: int | None = None):
    if name == "exact" and not shots:
        return ExactEvaluator()
    return evaluator_for(name, shots=shots)


def run(args) -> int:
    model, record = checkpoint.load(args.checkpoint)
    with contextlib.closing(make_evaluator(args.backend, args.shots)) as ev:  # closes an IBM Session
        metrics = evaluate(model, model.cfg, ev, seed=args.seed)
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
