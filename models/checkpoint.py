"""Checkpoints: weights + config in one safetensors file, never unpickled.

Layout: tensors by state-dict name; metadata holds the config (JSON), the training record and a
SHA-256 over every tensor's name, dtype, shape and bytes, so corrupted payload bytes are caught
even where the safetensors header still parses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from qssm.errors import QssmError
from qssm.models.config import (
    ModelConfig,
    check_noise_tuning,
    config_from_dict,
    config_to_json,
)
from qssm.models.registry import build_model
from qssm.paths import check_in_file

FORMAT = "qssm-checkpoint-1"
# trained weights stay within a few units (the shipped ones below 4); far larger ones are damage, and
# overflow the float64 forward pass into nan logits (a 1e308 embedding) or nan circuit angles
MAX_ABS_WEIGHT = 1e6


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


_digest = digest  # the name tests used before it was public


def save(model: torch.nn.Module, path: str | Path, record: dict | None = None) -> None:
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "config": config_to_json(model.cfg),
        "record": json.dumps(record or {}, sort_keys=True),
        "sha256": digest(tensors),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # a shareable artefact, not a secret
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint behind


def read_metadata(path: str | Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise QssmError(_bad(path, e)) from None


def _bad(path, e) -> str:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"checkpoint {path} is unreadable ({reason}); re-download it or retrain with `qssm train`"


@dataclass(frozen=True)
class Checkpoint:
    model: torch.nn.Module  # eval mode
    record: dict  # the training record
    sha256: str  # content hash of every tensor (names, dtypes, shapes, bytes): the checkpoint's identity


def load(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Returns (model in eval mode, training record). Every failure is a one-line QssmError."""
    ckpt = read(path)
    return ckpt.model, ckpt.record


def read(path: str | Path) -> Checkpoint:
    """The checkpoint with its content hash (what the auto-split frontier is keyed by)."""
    path = check_in_file(path, "checkpoint", "list shipped ones with `ls checkpoints/`")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise QssmError(_bad(path, e)) from None
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise QssmError(f"checkpoint {path} is not a qssm checkpoint (format {meta.get('format')!r:.60})")
    odd = sorted(name for name, t in tensors.items() if t.dtype not in (torch.float32, torch.float64))
    if odd:
        raise QssmError(f"checkpoint {path} is not a qssm checkpoint: {odd[0]} is {tensors[odd[0]].dtype}, "
                        f"qssm saves float32 or float64")
    if digest(tensors) != meta.get("sha256"):
        raise QssmError(f"checkpoint {path} is corrupted (tensor checksum mismatch); re-download or retrain it")
    try:
        cfg: ModelConfig = config_from_dict(json.loads(meta["config"]))
    except (KeyError, json.JSONDecodeError, RecursionError) as e:
        raise QssmError(f"checkpoint {path} has no valid config ({e}); retrain it with `qssm train`") from None
    except QssmError as e:
        raise QssmError(f"checkpoint {path}: {e}; retrain it with `qssm train`") from None
    try:
        record = json.loads(meta.get("record", "{}"))
    except (json.JSONDecodeError, RecursionError):
        record = None
    if not isinstance(record, dict):
        raise QssmError(f"checkpoint {path} has no valid training record; retrain it with `qssm train`")
    if "noise_tuning" in record:
        try:
            check_noise_tuning(record["noise_tuning"])
        except QssmError as e:
            raise QssmError(f"checkpoint {path}: {e}; retrain it with `qssm train PRESET --noise DEVICE`") from None
    for name, t in tensors.items():  # nan/inf angles would reach Qiskit and the simulators
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise QssmError(f"checkpoint {path} has non-finite weights (nan or inf) in {name}; retrain it")
        if t.is_floating_point() and t.numel() and float(t.abs().max()) > MAX_ABS_WEIGHT:
            raise QssmError(f"checkpoint {path} has weights of magnitude {float(t.abs().max()):.3g} in {name}, "
                            f"past any trained model's (qssm refuses |w| > {MAX_ABS_WEIGHT:g}: the forward pass "
                            f"would overflow); retrain it")
    model = build_model(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise QssmError(
            f"checkpoint {path} does not match its config: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for name, t in expected.items():
        if t.shape != tensors[name].shape:
            raise QssmError(
                f"checkpoint {path} does not match its config: {name} has shape "
                f"{tuple(tensors[name].shape)}, config implies {tuple(t.shape)}"
            )
    model.load_state_dict(tensors)
    model.eval()
    return Checkpoint(model, record, meta["sha256"])
