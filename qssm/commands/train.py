"""qssm train PRESET: train a model (and its baselines) and write a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from qssm import args as types
from qssm.models import checkpoint
from qssm.models.registry import PRESETS, preset
from qssm.models.train import train
from qssm.paths import check_out_dir


def register(sub) -> None:
    p = sub.add_parser("train", help="train a preset model and write its checkpoint")
    p.add_argument("preset", choices=list(PRESETS), help="model preset")
    p.add_argument("--out", default="checkpoints", help="directory for <preset>.safetensors")
    p.add_argument("--steps", type=types.integer(1, 10_000_000), help="override the preset's step count")
    p.add_argument("--baselines", action="store_true", help="also train the preset's classical baselines")
    p.add_argument("--json", action="store_true", help="print the training records as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    check_out_dir(args.out)
    names = [args.preset] + (list(preset(args.preset).baselines) if args.baselines else [])
    records = {}
    for name in names:
        model, record = train(preset(name), steps=args.steps)
        record["preset"] = name
        record["command"] = f"qssm train {name}" + (f" --steps {args.steps}" if args.steps else "")
        path = Path(args.out) / f"{name}.safetensors"
        checkpoint.save(model, path, record)
        records[name] = record
        if not args.json:
            m = record["metrics"]
            print(f"{name}: test accuracy {m['accuracy']:.3f} on {m['n_examples']} examples, "
                  f"{record['params']['total']} params ({record['params']['quantum']} quantum), "
                  f"{record['train_seconds']} s -> {path}")
    if args.json:
        print(json.dumps(records, indent=2))
    return 0
