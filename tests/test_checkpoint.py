"""Checkpoints: round trip, and one-line errors with a non-zero exit for every kind of bad file."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from qssm.errors import QssmError
from qssm.models import checkpoint
from qssm.models.config import QMambaConfig
from qssm.models.registry import build_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(QMambaConfig(vocab_size=10, d_model=8, n_layers=1, n_qubits=3, q_budget=15,
                                     task={"name": "haystack", "T": 8, "n_values": 4, "n_fillers": 5}))
    path = tmp_path / "m.safetensors"
    checkpoint.save(model, path, {"note": "x"})
    return model, path


def test_round_trip(saved):
    model, path = saved
    loaded, record = checkpoint.load(path)
    assert record == {"note": "x"} and loaded.cfg == model.cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    tokens = torch.randint(0, 10, (2, 8))
    torch.testing.assert_close(model(tokens), loaded(tokens))


def cli_eval(path):
    return subprocess.run([sys.executable, "-m", "qssm.cli", "eval", str(path)], capture_output=True, text=True)


def corrupt_payload(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-40])


def mismatch_config(path):
    tensors = load_file(str(path))
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    cfg = json.loads(meta["config"])
    cfg["d_model"] = 12
    meta["config"] = json.dumps(cfg)
    save_file(tensors, str(path), metadata=meta)


def garbage(path):
    path.write_bytes(b"not a checkpoint at all")


@pytest.mark.parametrize("damage,needle", [
    (corrupt_payload, "corrupted"), (truncate, "unreadable"), (mismatch_config, "does not match its config"),
    (garbage, "unreadable"),
])
def test_bad_checkpoints_fail_with_one_line(saved, damage, needle):
    _, path = saved
    damage(path)
    with pytest.raises(QssmError, match=needle):
        checkpoint.load(path)
    proc = cli_eval(path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_missing_checkpoint(tmp_path):
    proc = cli_eval(tmp_path / "nope.safetensors")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_checkpoint_is_not_pickle(saved):
    _, path = saved
    assert path.read_bytes()[8:9] == b"{"  # safetensors: a JSON header, no pickle opcodes
