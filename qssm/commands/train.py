"""qssm train PRESET: train a model (and its baselines) and write a checkpoint.

qssm train PRESET --noise DEVICE fine-tunes the preset's trained checkpoint against DEVICE's noise
(pipeline/noisy_train.py `finetune_noisy`) and writes <preset>-noisy-<device>.safetensors.

Checkpoints go to ./trained/ unless --out says otherwise: the shipped checkpoints/ are replaced only
by an explicit `--out checkpoints`, and an existing file only with --force (checked before training)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from qssm import args as types
from qssm.backends.registry import get_backend
from qssm.commands import help_for
from qssm.errors import QssmError
from qssm.models import checkpoint
from qssm.models.registry import PRESETS, noise_tuning, noisy_name, preset
from qssm.models.train import train
from qssm.paths import check_out_dir
from qssm.pipeline.noisy_train import finetune_noisy

DEFAULT_OUT = "trained"


def register(sub) -> None:
    p = sub.add_parser("train", help=help_for("train"))
    p.add_argument("preset", choices=list(PRESETS), help="model preset")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"directory for <preset>.safetensors (default ./{DEFAULT_OUT}/; the shipped checkpoints "
                        "are replaced only with an explicit --out checkpoints)")
    p.add_argument("--force", action="store_true", help="overwrite checkpoints that already exist in --out")
    p.add_argument("--steps", type=types.integer(1, 10_000_000), help="override the preset's step count")
    p.add_argument("--baselines", action="store_true", help="also train the preset's classical baselines")
    p.add_argument("--noise", metavar="DEVICE",
                   help="fine-tune the preset's checkpoint against a device's noise (fake_fez, dm:fake_fez, ...)")
    p.add_argument("--init", help="with --noise: the checkpoint to start from (default checkpoints/PRESET.safetensors)")
    p.add_argument("--json", action="store_true", help="print the training records as JSON")
    p.set_defaults(func=run)


def _refuse_empty(args) -> None:
    for flag in ("noise", "init"):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            raise QssmError(f"--{flag} is empty; give a value or leave the option out")


def _check_overwrite(args, names: list[str]) -> None:
    """Before any training: an existing checkpoint in --out is replaced only with --force."""
    existing = [str(Path(args.out) / f"{n}.safetensors") for n in names if (Path(args.out) / f"{n}.safetensors").exists()]
    if existing and not args.force:
        raise QssmError(f"{existing[0]} exists" + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
                        + "; pass --force to overwrite it, or write elsewhere with --out DIR")


def run(args) -> int:
    _refuse_empty(args)
    check_out_dir(args.out)
    if args.noise is not None:
        return _noise(args)
    if args.init is not None:
        raise QssmError("--init only applies with --noise DEVICE")
    names = [args.preset] + (list(preset(args.preset).baselines) if args.baselines else [])
    _check_overwrite(args, names)
    records = {}
    for name in names:
        # a long run saves a resume point beside its checkpoint and continues from it when re-run
        resume = Path(args.out) / f".{name}.resume.safetensors"
        model, record = train(preset(name), steps=args.steps, progress=not args.json, resume=resume)
        record["preset"] = name
        record["command"] = f"qssm train {name}" + (f" --steps {args.steps}" if args.steps else "")
        path = Path(args.out) / f"{name}.safetensors"
        checkpoint.save(model, path, record)
        resume.unlink(missing_ok=True)
        records[name] = record
        if not args.json:
            m = record["metrics"]
            print(f"{name}: test accuracy {m['accuracy']:.3f} on {m['n_examples']} examples, "
                  f"{record['params']['total']} params ({record['params']['quantum']} quantum), "
                  f"{record['train_seconds']} s -> {path}")
    if args.json:
        print(json.dumps(records, indent=2))
    return 0


def _noise(args) -> int:
    device = args.noise.removeprefix("dm:")
    if args.baselines:
        raise QssmError("--noise fine-tunes one quantum checkpoint; drop --baselines")
    tuning = noise_tuning(args.preset, device)
    get_backend(f"dm:{device}")  # an unknown device fails here, in one line
    if args.steps:
        tuning = dataclasses.replace(tuning, steps=args.steps)
    init = args.init or f"checkpoints/{args.preset}.safetensors"
    model, base = checkpoint.load(init)
    if base.get("noise_tuning"):
        raise QssmError(f"{init} is already noise-tuned; start from the noise-free checkpoint")
    name = noisy_name(args.preset, device)
    _check_overwrite(args, [name])
    model, record = finetune_noisy(model, tuning, progress=not args.json)
    record["preset"] = args.preset
    record["base"] = {"checkpoint": init, "sha256": checkpoint.read_metadata(init).get("sha256"),
                      "metrics": base.get("metrics"), "command": base.get("command")}
    record["command"] = (f"qssm train {args.preset} --noise {device}" + (f" --steps {args.steps}" if args.steps else "")
                         + (f" --init {args.init}" if args.init else ""))
    path = Path(args.out) / f"{name}.safetensors"
    checkpoint.save(model, path, record)
    if args.json:
        print(json.dumps({name: record}, indent=2))
    else:
        m, nm = record["metrics"], record["noisy_metrics"]
        print(f"{name}: exact test accuracy {m['accuracy']:.3f}; on {device} (noisy mean, first {nm['n_examples']}): "
              f"accuracy {nm['accuracy']:.3f}, logit error {nm['logit_error_mean']:.3f}; "
              f"{record['train_seconds']} s -> {path}")
    return 0
