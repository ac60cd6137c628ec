"""A training run's resume file: model weights, Adam's moments, the step reached, the elapsed
seconds, the RNG state and the learning curve so far, in one safetensors file (tensors + JSON
metadata; never unpickled). `models/train.py train(resume=...)` writes it every few hundred steps
and continues from it, so a long run survives a stopped session."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from qssm.errors import QssmError

FORMAT = "qssm-resume-1"


def save(path: Path, recipe: dict, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
         seconds: float, ema: float, curve: list[dict]) -> None:
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state = opt.state_dict()
    for idx, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).clone().contiguous()
    tensors["rng"] = torch.get_rng_state()
    meta = {"format": FORMAT, "recipe": json.dumps(recipe, sort_keys=True), "step": str(step),
            "seconds": repr(seconds), "ema": repr(ema), "curve": json.dumps(curve),
            "param_groups": json.dumps(state["param_groups"])}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a stop mid-write leaves the previous resume point


def load(path: Path, recipe: dict, model: torch.nn.Module, opt: torch.optim.Optimizer,
         sched) -> tuple[int, float, float, list[dict]]:
    """Restores model, optimizer, schedule position and RNG in place; returns (step, seconds, ema, curve)."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise QssmError(f"resume file {path} is unreadable ({str(e).splitlines()[0]}); delete it to start over") from None
    if meta.get("format") != FORMAT:
        raise QssmError(f"{path} is not a qssm resume file; delete it to start over")
    if json.loads(meta["recipe"]) != json.loads(json.dumps(recipe, sort_keys=True)):
        raise QssmError(f"resume file {path} was written by another recipe (config, steps, lr, batch or seed); "
                        "delete it to start over")
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    slots: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            slots.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": slots, "param_groups": json.loads(meta["param_groups"])})
    step = int(meta["step"])
    sched.last_epoch = step  # the one-cycle rate is a function of the step count alone
    torch.set_rng_state(tensors["rng"])
    return step, float(meta["seconds"]), float(meta["ema"]), json.loads(meta["curve"])
