"""Malformed input, as one table. Every case is exactly one stderr line `qssm: error: ...` naming the
problem and the fix, exit code 2, no traceback, and every file the command could touch (the job
store, specs, checkpoints, output directories) byte-for-byte unchanged, with nothing created.

Cases run in-process through qssm.cli.main (fast); a few run as their own process, to show that no
traceback reaches the terminal either. Running as root, permissions cannot make a file unreadable
or read-only, so those cases use a write-only procfs file and the immutable attribute instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from qssm.cli import main
from qssm.errors import QssmError
from qssm.jobs.store import JobStore
from qssm.models import checkpoint

ROOT = Path(__file__).resolve().parents[1]
CKPTS = ROOT / "checkpoints"
HAYSTACK = CKPTS / "qmamba-haystack.safetensors"
QLAM = CKPTS / "qlam-digits.safetensors"
GRU = CKPTS / "gru-haystack.safetensors"
UNREADABLE = Path("/proc/sys/vm/compact_memory")  # write-only, even for root


# -- the world every case starts from ---------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store holding a finished job and a queued one (exact backend, 2 sequences: seconds)."""
    from qssm.app.durable import create_job, run_job
    from qssm.jobs.spec import parse_spec

    d = tmp_path_factory.mktemp("world")
    store = JobStore(d / "jobs.sqlite")
    spec = parse_spec({"model": {"checkpoint": str(HAYSTACK)}, "data": {"n": 2}}, "world")
    done, _ = create_job(store, spec)
    run_job(store, done)
    queued, _ = create_job(store, spec)
    store.close()
    from qssm.backends.registry import get_backend

    get_backend("aer:fake_fez")  # imports qiskit-aer once, so the 5 s bound below times the commands alone
    return {"store": d / "jobs.sqlite", "done": done, "queued": queued}


@pytest.fixture
def env(world, tmp_path, monkeypatch):
    store = tmp_path / "jobs.sqlite"
    shutil.copy(world["store"], store)
    monkeypatch.setenv("QSSM_STORE", str(store))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "ok.toml").write_text(f'[model]\ncheckpoint = "{HAYSTACK}"\n[data]\nn = 2\n')
    return {"tmp": str(tmp_path), "store": str(store), "done": world["done"], "queued": world["queued"],
            "ck": str(HAYSTACK), "qlam": str(QLAM), "gru": str(GRU), "ok": str(tmp_path / "ok.toml")}


def snapshot(tmp: Path) -> dict:
    """Every file and directory under tmp and the shipped checkpoints, with a hash of each file.
    A store's -wal counts (a write that a connection still open has not checkpointed into the
    file), its -shm index does not."""
    out = {}
    for p in sorted([*Path(tmp).rglob("*"), *CKPTS.iterdir()]):
        if p.name.endswith("-shm") or (p.name.endswith("-wal") and p.stat().st_size == 0):
            continue
        out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


HANG_SECONDS = 5.0  # a refusal is immediate; over this it is a hang (local:-3 used to take 595 s)


def one_line_error(env, capsys, argv: list[str], needle: str) -> str:
    before = snapshot(env["tmp"])
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in out + err, err
    assert code == 2, (code, err, out[-500:])
    assert len(lines) == 1 and lines[0].startswith("qssm: error: "), err
    assert needle.lower() in lines[0].lower(), lines[0]
    assert snapshot(env["tmp"]) == before, "a file changed or appeared"
    assert seconds < HANG_SECONDS, f"took {seconds:.1f} s"
    return lines[0]


# -- helpers that build bad files ---------------------------------------------------------------------
def spec(body: str, ck: str = "{ck}"):
    """A spec file: the checkpoint line, then `body`."""
    def setup(env):
        path = Path(env["tmp"]) / "spec.toml"
        path.write_text(f'[model]\ncheckpoint = "{ck.format(**env)}"\n' + body.format(**env))
        return {"spec": str(path)}
    return setup


def raw_spec(data: bytes | str):
    """A spec file with exactly this content (text is formatted with the case's paths)."""
    def setup(env):
        path = Path(env["tmp"]) / "spec.toml"
        path.write_bytes(data if isinstance(data, bytes) else data.format(**env).encode())
        return {"spec": str(path)}
    return setup


def craft(base: Path = HAYSTACK, cfg=None, tensors=None, meta=None):
    """A checkpoint from a shipped one with its config, tensors or metadata changed, re-signed (the
    tensor checksum is recomputed) so that the change itself is what load has to catch."""
    def setup(env):
        t = load_file(str(base))
        with safe_open(str(base), framework="pt") as f:
            m = dict(f.metadata())
        if cfg is not None:
            c = json.loads(m["config"])
            cfg(c)
            m["config"] = json.dumps(c)
        if tensors is not None:
            tensors(t)
        m["sha256"] = checkpoint._digest({k: v for k, v in t.items() if v.dtype != torch.bfloat16})
        if meta is not None:
            meta(m)
        path = Path(env["tmp"]) / "bad.safetensors"
        save_file(t, str(path), metadata=m)
        return {"bad": str(path)}
    return setup


def bad_file(data: bytes | None = None, edit=None):
    """A checkpoint file with given bytes, or a shipped one's bytes edited."""
    def setup(env):
        path = Path(env["tmp"]) / "bad.safetensors"
        path.write_bytes(data if data is not None else edit(bytearray(HAYSTACK.read_bytes())))
        return {"bad": str(path)}
    return setup


def setcfg(key, value, where=None):
    def f(c):
        (c if where is None else c[where])[key] = value
    return f


def delcfg(key, where=None):
    def f(c):
        del (c if where is None else c[where])[key]
    return f


def huge(name, value=1e308):
    """Every weight in float64 and one tensor filled with a finite but overflowing value."""
    def f(t):
        t.update({k: v.double() for k, v in t.items()})
        t[name].fill_(value)
    return f


def poke(name, value):
    def f(t):
        t[name].view(-1)[0] = value
    return f


def sqlite_file(*statements: str):
    """A store path holding another application's SQLite database."""
    def setup(env):
        path = Path(env["tmp"]) / "other.sqlite"
        db = sqlite3.connect(path)
        for s in statements:
            db.execute(s)
        db.commit()
        db.close()
        return {"bad": str(path)}
    return setup


def store_bytes(edit):
    def setup(env):
        path = Path(env["tmp"]) / "bad.sqlite"
        path.write_bytes(edit(Path(env["store"]).read_bytes()))
        return {"bad": str(path)}
    return setup


def store_sql(*statements: str):
    """The case's own store with rows changed behind qssm's back ({done}, {queued} are job ids)."""
    def setup(env):
        db = sqlite3.connect(env["store"])
        for s in statements:
            db.execute(s.format(**env))
        db.commit()
        db.close()
        return {}
    return setup


def dangling(name: str):
    """A symlink at {tmp}/name to a file that does not exist."""
    def setup(env):
        (Path(env["tmp"]) / name).symlink_to(Path(env["tmp"]) / "gone")
        return {}
    return setup


def unmarked_store(env):
    """A store as an older qssm wrote it: qssm's (version 1) tables and a job, but no marker."""
    from qssm.jobs.store import SCHEMA

    path = Path(env["tmp"]) / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace("acknowledged INTEGER DEFAULT 0,", ""))
    db.execute("INSERT INTO jobs (id, created, updated, status, backend, spec) VALUES ('j1', 1, 1, 'done', 'exact', '{{}}')")
    db.commit()
    db.close()
    return {"bad": str(path)}


def existing_checkpoint(name: str):
    """An output directory that already holds {name}.safetensors."""
    def setup(env):
        d = Path(env["tmp"]) / "trained"
        d.mkdir()
        shutil.copy(GRU, d / f"{name}.safetensors")
        return {"dir": str(d)}
    return setup


def npy(a: np.ndarray, pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=pickle)
    return buf.getvalue()


def npz(**arrays) -> bytes:
    """A result blob as the store writes it (one .npz of values, stderr and counts_i)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def planted_blob(column: str, blob: bytes):
    """A finished batch of the done job with a bad array, and the job marked running again (as a
    crash would leave it), so `qssm resume` has to read the batch."""
    def setup(env):
        db = sqlite3.connect(env["store"])
        key = db.execute("SELECT key FROM batches WHERE job_id = ? LIMIT 1", (env["done"],)).fetchone()[0]
        db.execute(f'UPDATE batches SET "{column}" = ? WHERE job_id = ? AND key = ?', (blob, env["done"], key))
        db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (env["done"],))
        db.commit()
        db.close()
        return {}
    return setup


def out_file(env):
    path = Path(env["tmp"]) / "file.txt"
    path.write_text("not a directory\n")
    return {"file": str(path)}


def directory(env):
    path = Path(env["tmp"]) / "adir"
    path.mkdir()
    return {"dir": str(path)}


# -- the table ----------------------------------------------------------------------------------------
SUBMIT = "submit {spec} --wait --store {store}"
EVAL = "eval {bad}"
RESUME = "resume {done} --store {store}"
NAN_FIELDS = [("split", "max_overhead"), ("budget", "max_cost_usd"), ("budget", "max_qpu_seconds")]

CASES = [
    # spec contents: every number finite and in range, every field of its type
    *[(f"spec-{s}-{k}-{v}", SUBMIT, f"{s}.{k} must be a finite number", spec(f"[{s}]\n{k} = {v}\n"))
      for s, k in NAN_FIELDS for v in ("nan", "inf", "-inf")],
    ("spec-n-zero", SUBMIT, "data.n must be 1..100000", spec("[data]\nn = 0\n")),
    ("spec-n-negative", SUBMIT, "data.n must be 1..100000", spec("[data]\nn = -5\n")),
    ("spec-n-huge", SUBMIT, "data.n must be 1..100000", spec("[data]\nn = 1000000000000\n")),
    ("spec-n-float", SUBMIT, "data.n must be int", spec("[data]\nn = 1.5\n")),
    ("spec-n-bool", SUBMIT, "data.n must be int", spec("[data]\nn = true\n")),
    ("spec-T-huge", SUBMIT, "data.T must be 0..4096", spec("[data]\nT = 1000000000\n")),
    ("spec-T-negative", SUBMIT, "data.T must be 0..4096", spec("[data]\nT = -1\n")),
    ("spec-T-string", SUBMIT, "data.T must be int", spec('[data]\nT = "16"\n')),
    ("spec-T-below-haystack", SUBMIT, "data.T must be 0 (the trained length) or 4..4096", spec("[data]\nn = 1\nT = 2\n")),
    ("spec-seed-negative", SUBMIT, "data.seed must be 0..", spec("[data]\nseed = -1\n")),
    ("spec-shots-negative", SUBMIT, "backend.shots must be 0..", spec("[backend]\nshots = -1\n")),
    ("spec-shots-huge", SUBMIT, "backend.shots must be 0..100000000", spec("[backend]\nshots = 1000000000000\n")),
    ("spec-shots-string", SUBMIT, "backend.shots must be int", spec('[backend]\nshots = "100"\n')),
    ("spec-shots-over-device", SUBMIT, "exceed", spec('[backend]\nname = "aer:fake_fez"\nshots = 10000000\n')),
    ("spec-shots-zero-sampler", SUBMIT, "shots > 0", spec('[backend]\nname = "ibm:fake_fez"\n')),
    ("spec-opt-level-high", SUBMIT, "optimization_level must be 0..3", spec("[backend]\noptimization_level = 4\n")),
    ("spec-opt-level-negative", SUBMIT, "optimization_level must be 0..3", spec("[backend]\noptimization_level = -1\n")),
    ("spec-seed-transpiler", SUBMIT, "seed_transpiler must be 0..", spec("[backend]\nseed_transpiler = -7\n")),
    ("spec-seed-simulator", SUBMIT, "seed_simulator must be 0..", spec("[backend]\nseed_simulator = -7\n")),
    ("spec-backend-empty", SUBMIT, "unknown backend", spec('[backend]\nname = ""\n')),
    ("spec-backend-int", SUBMIT, "backend.name must be str", spec("[backend]\nname = 7\n")),
    ("spec-backend-unknown", SUBMIT, "unknown backend", spec('[backend]\nname = "quantinuum"\n')),
    ("spec-backend-aer-device", SUBMIT, "unknown ibm device snapshot", spec('[backend]\nname = "aer:fake_nowhere"\nshots = 10\n')),
    ("spec-backend-braket-empty", SUBMIT, "unknown backend", spec('[backend]\nname = "braket:"\n')),
    ("spec-layout", SUBMIT, "backend.layout must be one of default, noise_aware", spec('[backend]\nlayout = "random"\n')),
    ("spec-segment-negative", SUBMIT, "split.segment must be 0..4096", spec("[split]\nsegment = -1\n")),
    ("spec-segment-huge", SUBMIT, "split.segment must be 0..4096", spec("[split]\nsegment = 100000\n")),
    ("spec-segment-word", SUBMIT, 'split.segment must be int or "auto"', spec('[split]\nsegment = "autox"\n')),
    ("spec-overhead-negative", SUBMIT, "split.max_overhead must be >= 0", spec("[split]\nmax_overhead = -1.0\n")),
    ("spec-cutting", SUBMIT, "split.cutting must be one of", spec('[split]\ncutting = "always"\n')),
    ("spec-cutting-int", SUBMIT, "split.cutting must be str", spec("[split]\ncutting = 3\n")),
    ("spec-resilience-99", SUBMIT, "resilience_level must be -1..2", spec("[mitigation]\nresilience_level = 99\n")),
    ("spec-resilience-3", SUBMIT, "resilience_level must be -1..2", spec("[mitigation]\nresilience_level = 3\n")),
    ("spec-resilience-negative", SUBMIT, "resilience_level must be -1..2", spec("[mitigation]\nresilience_level = -2\n")),
    ("spec-resilience-not-ibm", SUBMIT, "ibm runtime options", spec("[mitigation]\nresilience_level = 1\n")),
    ("spec-readout-shots", SUBMIT, "readout_shots must be 0..", spec("[mitigation]\nreadout_shots = -10\n")),
    ("spec-zne-scales-garbage", SUBMIT, "zne_scales must list odd integers", spec('[mitigation]\nzne_scales = "a,b"\n')),
    ("spec-zne-scales-even", SUBMIT, "zne_scales needs", spec('[mitigation]\nzne_scales = "2,4"\n')),
    ("spec-zne-scales-one", SUBMIT, "zne_scales needs", spec('[mitigation]\nzne_scales = "1"\n')),
    ("spec-extrapolation", SUBMIT, "extrapolation must be one of richardson, linear", spec('[mitigation]\nextrapolation = "cubic"\n')),
    ("spec-zne-int", SUBMIT, "mitigation.zne must be bool", spec("[mitigation]\nzne = 1\n")),
    ("spec-readout-method", SUBMIT, 'mitigation.readout must be bool or "mthree"', spec('[mitigation]\nreadout = "m3"\n')),
    ("spec-mthree-on-braket", SUBMIT, 'readout = "mthree" runs on ibm: and aer: targets, not braket:local_dm',
     spec('[backend]\nname = "braket:local_dm"\nshots = 100\n[mitigation]\nreadout = "mthree"\n')),
    ("spec-mthree-exact", SUBMIT, "readout needs sampled results", spec('[mitigation]\nreadout = "mthree"\n')),
    ("spec-budget-negative", SUBMIT, "max_cost_usd must be >= 0", spec("[budget]\nmax_cost_usd = -1\n")),
    ("spec-budget-string", SUBMIT, "max_cost_usd must be float", spec('[budget]\nmax_cost_usd = "5"\n')),
    ("spec-qpu-seconds-negative", SUBMIT, "max_qpu_seconds must be >= 0", spec("[budget]\nmax_qpu_seconds = -1\n")),
    ("spec-section-not-table", SUBMIT, "[data] must be a table", raw_spec('data = [1, 2]\n[model]\ncheckpoint = "{ck}"\n')),
    ("spec-array-of-tables", SUBMIT, "[backend] must be a table", spec("[[backend]]\nname = \"exact\"\n")),
    ("spec-unknown-section", SUBMIT, "unknown section", spec("[extra]\nx = 1\n")),
    ("spec-unknown-key", SUBMIT, "unknown key data.size", spec("[data]\nsize = 1\n")),
    ("spec-no-model", SUBMIT, "missing [model]", raw_spec(b"[data]\nn = 2\n")),
    ("spec-empty", SUBMIT, "missing [model]", raw_spec(b"")),
    ("spec-model-int", SUBMIT, "missing [model]", raw_spec(b"[model]\ncheckpoint = 5\n")),
    ("spec-model-extra", SUBMIT, "unknown key(s) in [model]", spec("x = 1\n")),
    ("spec-ckpt-empty", SUBMIT, "checkpoint path is empty", spec("", ck="")),
    ("spec-ckpt-missing", SUBMIT, "does not exist", spec("", ck="{tmp}/nope.safetensors")),
    ("spec-ckpt-directory", SUBMIT, "is a directory, not a file", spec("", ck="{tmp}")),
    ("spec-ckpt-devnull", SUBMIT, "is a character device", spec("", ck="/dev/null")),
    ("spec-ckpt-garbage", SUBMIT, "unreadable", spec("", ck="{ok}")),
    ("spec-toml-syntax", SUBMIT, "not valid TOML", spec("[data\n")),
    ("spec-toml-duplicate", SUBMIT, "not valid TOML", spec("[data]\nn = 1\nn = 2\n")),
    ("spec-binary", SUBMIT, "not valid TOML", raw_spec(b"\x00\x01\x02binary")),
    ("spec-not-utf8", SUBMIT, "not UTF-8", raw_spec(b'[model]\ncheckpoint = "\xff\xfe"\n')),
    # spec files
    ("specfile-missing", "submit {tmp}/missing.toml --store {store}", "does not exist", None),
    ("specfile-directory", "submit {tmp} --store {store}", "is a directory, not a file", None),
    ("specfile-devnull", "submit /dev/null --store {store}", "is a character device", None),
    ("specfile-empty-path", 'submit "" --store {store}', "spec file path is empty", None),
    ("specfile-long-name", "submit {tmp}/" + "x" * 300 + ".toml --store {store}", "not a usable path", None),
    ("specfile-compile-directory", "compile {tmp}", "is a directory", None),
    ("specfile-compile-devnull", "compile /dev/null", "is a character device", None),
    ("specfile-run-directory", "run {tmp}", "is a directory", None),
    ("specfile-report-devnull", "report /dev/null --out {tmp}/out", "is a character device", None),
    ("specfile-report-missing", "report {tmp}/missing.toml --out {tmp}/out", "does not exist", None),
    # checkpoints: the file
    ("ckpt-missing", "eval {tmp}/nope.safetensors", "does not exist", None),
    ("ckpt-directory", "eval {tmp}", "is a directory, not a file", None),
    ("ckpt-devnull", "eval /dev/null", "is a character device", None),
    ("ckpt-empty-path", 'eval ""', "checkpoint path is empty", None),
    ("ckpt-random-bytes", EVAL, "unreadable", bad_file(os.urandom(4096))),
    ("ckpt-empty-file", EVAL, "unreadable", bad_file(b"")),
    ("ckpt-truncated", EVAL, "unreadable", bad_file(edit=lambda b: bytes(b[: len(b) // 2]))),
    ("ckpt-payload-flipped", EVAL, "checksum mismatch", bad_file(edit=lambda b: bytes(b[:-5] + bytes([b[-5] ^ 0xFF]) + b[-4:]))),
    ("ckpt-no-format", EVAL, "not a qssm checkpoint", craft(meta=lambda m: m.pop("format"))),
    ("ckpt-other-format", EVAL, "not a qssm checkpoint", craft(meta=lambda m: m.update(format="other-1"))),
    ("ckpt-no-config", EVAL, "no valid config", craft(meta=lambda m: m.pop("config"))),
    ("ckpt-config-not-json", EVAL, "no valid config", craft(meta=lambda m: m.update(config="{nope"))),
    ("ckpt-config-deep-json", EVAL, "no valid config", craft(meta=lambda m: m.update(config="[" * 100_000))),
    ("ckpt-config-list", EVAL, "config must be a json object", craft(meta=lambda m: m.update(config="[1, 2]"))),
    ("ckpt-record-not-json", EVAL, "no valid training record", craft(meta=lambda m: m.update(record="{nope"))),
    ("ckpt-record-list", EVAL, "no valid training record", craft(meta=lambda m: m.update(record="[1]"))),
    ("ckpt-noise-tuning-list", EVAL, "noise_tuning must be a table",
     craft(meta=lambda m: m.update(record='{"noise_tuning": [1]}'))),
    ("ckpt-noise-tuning-unknown", EVAL, "unknown noise_tuning fields ['bogus']",
     craft(meta=lambda m: m.update(record='{"noise_tuning": {"bogus": 1}}'))),
    ("ckpt-noise-tuning-shots", EVAL, "noise_tuning shots must be 0..",
     craft(meta=lambda m: m.update(record='{"noise_tuning": {"shots": -4}}'))),
    ("ckpt-noise-tuning-lr", EVAL, "noise_tuning lr must be a number",
     craft(meta=lambda m: m.update(record='{"noise_tuning": {"lr": "fast"}}'))),
    ("ckpt-noise-tuning-device", EVAL, "noise_tuning device must be a device name",
     craft(meta=lambda m: m.update(record='{"noise_tuning": {"device": "../../etc"}}'))),
    ("ckpt-int-tensor", EVAL, "is torch.int64", craft(tensors=lambda t: t.update(extra=torch.zeros(2, dtype=torch.int64)))),
    ("ckpt-bf16-tensor", EVAL, "is torch.bfloat16", craft(tensors=lambda t: t.update(head_bias=t["head.bias"].bfloat16()))),
    ("ckpt-extra-tensor", EVAL, "does not match its config", craft(tensors=lambda t: t.update(extra=torch.zeros(2)))),
    ("ckpt-missing-tensor", EVAL, "does not match its config", craft(tensors=lambda t: t.pop("head.bias"))),
    ("ckpt-wrong-shape", EVAL, "does not match its config", craft(cfg=setcfg("d_model", 12))),
    # checkpoints: weights
    ("ckpt-nan-qweight", EVAL, "non-finite weights", craft(tensors=poke("layers.0.qweights.A", float("nan")))),
    ("ckpt-inf-embed", EVAL, "non-finite weights", craft(tensors=poke("embed.weight", float("inf")))),
    ("ckpt-neginf-head", EVAL, "non-finite weights", craft(tensors=poke("head.bias", float("-inf")))),
    ("ckpt-nan-qlam", "eval {bad}", "non-finite weights", craft(QLAM, tensors=poke("w", float("nan")))),
    ("ckpt-nan-export", "export {bad} --out {tmp}/out", "non-finite weights", craft(tensors=poke("layers.1.qweights.C", float("nan")))),
    ("ckpt-nan-generate", "generate {bad} --prompt 1,2", "non-finite weights", craft(tensors=poke("layers.0.qweights.B", float("nan")))),
    ("ckpt-nan-compile", "compile {spec}", "non-finite weights",
     lambda env: {**craft(tensors=poke("layers.0.qweights.A", float("nan")))(env), **spec("", ck="{tmp}/bad.safetensors")(env)}),
    ("ckpt-nan-submit", SUBMIT, "non-finite weights",
     lambda env: {**craft(tensors=poke("layers.0.qweights.A", float("nan")))(env), **spec("", ck="{tmp}/bad.safetensors")(env)}),
    # checkpoints: finite weights that overflow the forward pass into nan logits or nan angles
    ("ckpt-huge-embed", EVAL, "weights of magnitude 1e+308 in embed.weight", craft(tensors=huge("embed.weight"))),
    ("ckpt-huge-f32-qweight", EVAL, "weights of magnitude", craft(tensors=poke("layers.0.qweights.A", 3e38))),
    ("ckpt-huge-qlam", EVAL, "weights of magnitude", craft(QLAM, tensors=huge("w", 1e200))),
    *[(f"ckpt-huge-{tensor}-{backend}", "run {spec}", "weights of magnitude",
       lambda env, tensor=tensor, backend=backend: {
           **craft(tensors=huge(tensor))(env),
           **spec(f'[backend]\nname = "{backend}"\nshots = 100\n[data]\nn = 2\n', ck="{tmp}/bad.safetensors")(env)})
      for tensor in ("embed.weight", "head.weight") for backend in ("exact", "dm:fake_fez", "aer:fake_fez")],
    ("ckpt-huge-submit", SUBMIT, "weights of magnitude",
     lambda env: {**craft(tensors=huge("layers.0.out_proj.weight"))(env), **spec("", ck="{tmp}/bad.safetensors")(env)}),
    # checkpoints: config fields
    ("cfg-n-qubits-string", EVAL, "n_qubits must be an integer", craft(cfg=setcfg("n_qubits", "four"))),
    ("cfg-n-qubits-float", EVAL, "n_qubits must be an integer", craft(cfg=setcfg("n_qubits", 3.5))),
    ("cfg-n-qubits-huge", EVAL, "n_qubits must be 1..12", craft(cfg=setcfg("n_qubits", 40))),
    ("cfg-vocab-negative", EVAL, "vocab_size must be 1..", craft(cfg=setcfg("vocab_size", -3))),
    ("cfg-vocab-small", EVAL, "smaller than task haystack's 16 tokens", craft(cfg=setcfg("vocab_size", 10))),
    ("cfg-d-model-zero", EVAL, "d_model must be 1..", craft(cfg=setcfg("d_model", 0))),
    ("cfg-layers-huge", EVAL, "n_layers must be 1..64", craft(cfg=setcfg("n_layers", 10**9))),
    ("cfg-budget-negative", EVAL, "q_budget must be 0..", craft(cfg=setcfg("q_budget", -1))),
    ("cfg-budget-huge", EVAL, "q_budget must be 0..", craft(cfg=setcfg("q_budget", 10**12))),
    ("cfg-reupload-zero", EVAL, "reupload must be 1..", craft(cfg=setcfg("reupload", 0))),
    ("cfg-rotations-bad", EVAL, "rotations must be a list", craft(cfg=setcfg("rotations", ["rq"]))),
    ("cfg-rotations-string", EVAL, "rotations must be a list", craft(cfg=setcfg("rotations", "rz"))),
    ("cfg-rotations-empty", EVAL, "rotations must be a list", craft(cfg=setcfg("rotations", []))),
    ("cfg-entangler", EVAL, "entangler must be one of", craft(cfg=setcfg("entangler", "swap"))),
    ("cfg-readout-norm", EVAL, "readout_norm must be one of", craft(QLAM, cfg=setcfg("readout_norm", "batch"))),
    ("cfg-readout-norm-gain-missing", EVAL, "missing ['readout_gain']", craft(QLAM, cfg=setcfg("readout_norm", "rms"))),
    ("ckpt-noise-tuning-norm", EVAL, "noise_tuning readout_norm must be one of",
     craft(meta=lambda m: m.update(record='{"noise_tuning": {"readout_norm": "batch"}}'))),
    ("ckpt-noise-tuning-target", EVAL, "noise_tuning target must be one of",
     craft(meta=lambda m: m.update(record='{"noise_tuning": {"target": "oracle"}}'))),
    ("ckpt-noise-tuning-tune", EVAL, "noise_tuning tune must be one of",
     craft(meta=lambda m: m.update(record='{"noise_tuning": {"tune": "encoder"}}'))),
    ("cfg-quantum-string", EVAL, "quantum must be true or false", craft(cfg=setcfg("quantum", "yes"))),
    ("cfg-alpha-nan", EVAL, "alpha_init must be", craft(cfg=setcfg("alpha_init", float("nan")))),
    ("cfg-alpha-string", EVAL, "alpha_init must be a number", craft(cfg=setcfg("alpha_init", "half"))),
    ("cfg-kind-missing", EVAL, "unknown model kind", craft(cfg=delcfg("kind"))),
    ("cfg-kind-unknown", EVAL, "unknown model kind", craft(cfg=setcfg("kind", "perceiver"))),
    ("cfg-unknown-field", EVAL, "unknown qmamba config fields", craft(cfg=setcfg("dropout", 0.1))),
    ("cfg-required-missing", EVAL, "qmamba config is missing ['vocab_size']", craft(cfg=delcfg("vocab_size"))),
    ("cfg-task-string", EVAL, "task must be a table", craft(cfg=setcfg("task", "haystack"))),
    ("cfg-task-missing", EVAL, "unknown task none", craft(cfg=delcfg("task"))),
    ("cfg-task-no-name", EVAL, "unknown task", craft(cfg=delcfg("name", "task"))),
    ("cfg-task-unknown", EVAL, "unknown task 'sorting'", craft(cfg=setcfg("name", "sorting", "task"))),
    ("cfg-task-T-float", EVAL, "task T must be int", craft(cfg=setcfg("T", 1e7, "task"))),
    ("cfg-task-T-huge", EVAL, "task T must be 4..4096", craft(cfg=setcfg("T", 10_000_000, "task"))),
    ("cfg-task-T-missing", EVAL, "missing ['T']", craft(cfg=delcfg("T", "task"))),
    ("cfg-task-values-negative", EVAL, "task n_values must be 1..", craft(cfg=setcfg("n_values", -1, "task"))),
    ("cfg-task-fillers-string", EVAL, "task n_fillers must be int", craft(cfg=setcfg("n_fillers", "7", "task"))),
    ("cfg-task-n-test-huge", EVAL, "task n_test must be 1..100000", craft(cfg=setcfg("n_test", 10**9, "task"))),
    ("cfg-task-distractors", EVAL, "task distractors must be bool", craft(cfg=setcfg("distractors", "yes", "task"))),
    ("cfg-task-unknown-key", EVAL, "unknown haystack task keys", craft(cfg=setcfg("noise", 0.1, "task"))),
    ("cfg-qmamba-on-images", EVAL, "reads token ids", craft(cfg=setcfg("task", {"name": "digits"}))),
    ("cfg-qlam-input-dim", EVAL, "input_dim 5 does not match", craft(QLAM, cfg=setcfg("input_dim", 5))),
    ("cfg-qlam-classes", EVAL, "has 5 outputs", craft(QLAM, cfg=setcfg("n_classes", 5))),
    ("cfg-qlam-on-tokens", EVAL, "reads feature rows",
     craft(QLAM, cfg=setcfg("task", {"name": "haystack", "T": 8, "n_values": 4, "n_fillers": 3}))),
    ("cfg-qlam-digit-tokens", EVAL, "task tokens must be one of rows, pixels", craft(QLAM, cfg=setcfg("tokens", "columns", "task"))),
    ("cfg-qlam-heads", EVAL, "n_heads must be 1..", craft(QLAM, cfg=setcfg("n_heads", 0))),
    ("cfg-smnist-size", EVAL, "task size must be one of 28, 14", craft(QLAM, cfg=setcfg("task", {"name": "smnist", "size": 7}))),
    ("cfg-gru-no-input", EVAL, "exactly one of vocab_size", craft(GRU, cfg=setcfg("vocab_size", 0))),
    ("cfg-gru-hidden", EVAL, "d_hidden must be 1..", craft(GRU, cfg=setcfg("d_hidden", -4))),
    # stores that are not qssm's, or are damaged: refused, and left as they were
    ("store-foreign-jobs-table", "status --store {bad}", "not a qssm store",
     sqlite_file("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)", "INSERT INTO jobs VALUES (1, 'mine')")),
    ("store-foreign-submit", "submit {ok} --store {bad}", "not a qssm store",
     sqlite_file("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)")),
    ("store-foreign-results", "results {done} --store {bad}", "not a qssm store", sqlite_file("CREATE TABLE notes (t TEXT)")),
    ("store-foreign-app-id", "status --store {bad}", "another application's", sqlite_file("PRAGMA application_id = 42", "CREATE TABLE t (x)")),
    ("store-empty-sqlite", "status --store {bad}", "other tables (none)", sqlite_file("PRAGMA user_version = 3")),
    ("store-random-bytes", "status --store {bad}", "not a qssm store", store_bytes(lambda b: os.urandom(8192))),
    ("store-empty-file", "status --store {bad}", "is an empty file", store_bytes(lambda b: b"")),
    ("store-text-file", "status --store {bad}", "not an SQLite database", store_bytes(lambda b: b"hello\n" * 100)),
    ("store-truncated-4k", "status --store {bad}", "store is corrupt", store_bytes(lambda b: b[:4096])),
    ("store-truncated-resume", "resume {done} --store {bad}", "store is corrupt", store_bytes(lambda b: b[:4096])),
    ("store-page-garbage", "status {done} --store {bad}", "store is corrupt",
     store_bytes(lambda b: b[:4096] + bytes(4096) + b[8192:])),
    ("store-future-version", "status --store {store}", "newer than this qssm", store_sql("PRAGMA user_version = 99")),
    ("store-tables-missing", "status --store {store}", "lacks qssm's tables", store_sql("DROP TABLE cache")),
    ("store-directory", "status --store {tmp}", "is a directory", None),
    ("store-devnull", "status --store /dev/null", "is a character device", None),
    ("store-empty-path", 'status --store ""', "store path is empty", None),
    ("store-missing-status", "status --store {tmp}/none.sqlite", "no job store at", None),
    ("store-missing-deep", "status --store {tmp}/a/b/c/jobs.sqlite", "no job store at", None),
    ("store-missing-results", "results {done} --store {tmp}/none.sqlite", "no job store at", None),
    ("store-missing-resume", "resume {done} --store {tmp}/none.sqlite", "no job store at", None),
    ("store-missing-cancel", "cancel {done} --store {tmp}/none.sqlite", "no job store at", None),
    ("store-under-file-submit", "submit {ok} --store {ck}/jobs.sqlite", "cannot create a job store", None),
    # a store path that is a symlink to nothing, and a store an older qssm wrote (never marked by a read)
    ("store-dangling-status", "status --store {tmp}/link.sqlite", "is a symlink to", dangling("link.sqlite")),
    ("store-dangling-submit", "submit {ok} --store {tmp}/link.sqlite", "is a symlink to", dangling("link.sqlite")),
    ("store-dangling-results", "results {done} --store {tmp}/link.sqlite", "is a symlink to", dangling("link.sqlite")),
    ("store-dangling-adopt", "store adopt {tmp}/link.sqlite", "is a symlink to", dangling("link.sqlite")),
    ("specfile-dangling", "submit {tmp}/link.toml --store {store}", "is a symlink to", dangling("link.toml")),
    ("ckpt-dangling", "eval {tmp}/link.safetensors", "is a symlink to", dangling("link.safetensors")),
    ("out-run-dangling", "run {ok} --out {tmp}/link", "is a symlink to", dangling("link")),
    ("out-train-dangling", "train gru-haystack --out {tmp}/link", "is a symlink to", dangling("link")),
    ("store-unmarked-status", "status --store {bad}", "qssm store adopt", unmarked_store),
    ("store-unmarked-results", "results j1 --store {bad}", "qssm store adopt", unmarked_store),
    ("store-unmarked-submit", "submit {ok} --store {bad}", "qssm store adopt", unmarked_store),
    ("store-adopt-foreign", "store adopt {bad}", "not a qssm store", sqlite_file("CREATE TABLE notes (t TEXT)")),
    ("store-adopt-missing", "store adopt {tmp}/none.sqlite", "no job store at", None),
    ("store-adopt-empty", 'store adopt ""', "store path is empty", None),
    ("store-adopt-no-path", "store adopt", "required: path", None),
    ("store-no-action", "store", "required: ACTION", None),
    # a newline (or another control character) in a path: one line, the path escaped
    ("newline-specfile", "submit '{tmp}/a\nb.toml' --store {store}", "control character", None),
    ("newline-run-spec", "run '{tmp}/a\nb.toml'", "control character", None),
    ("newline-store", "status --store '{tmp}/a\nb.sqlite'", "control character", None),
    ("newline-store-submit", "submit {ok} --store '{tmp}/a\nb.sqlite'", "control character", None),
    ("newline-run-out", "run {ok} --out '{tmp}/o\nut'", "control character", None),
    ("newline-train-out", "train gru-haystack --out '{tmp}/o\nut'", "control character", None),
    ("newline-eval-ckpt", "eval '{tmp}/a\nb.safetensors'", "control character", None),
    ("newline-spec-ckpt", SUBMIT, "control character", spec("", ck="{tmp}/a\\nb.safetensors")),
    ("tab-store", "status --store '{tmp}/a\tb.sqlite'", "control character", None),
    ("store-report-job-missing-store", "report {done} --store {tmp}/none.sqlite --out {tmp}/out", "no job store at", None),
    # stores with a malformed record: "store is corrupt", in one line, before anything is written
    ("blob-object-dtype", RESUME, "store is corrupt",
     planted_blob("values", npy(np.array([[1, "a", None]], dtype=object), pickle=True))),
    ("blob-truncated", RESUME, "store is corrupt", planted_blob("values", npy(np.zeros((4, 4)))[:-8])),
    ("blob-pickle", RESUME, "store is corrupt", planted_blob("values", b"\x80\x04K\x01.")),
    ("blob-one-dimensional", RESUME, "expected a 2-d numeric array",
     planted_blob("values", npz(values=np.zeros(4), stderr=np.zeros(4)))),
    ("blob-strings", RESUME, "expected a 2-d numeric array", planted_blob("values", npz(counts_0=np.array([["a"]])))),
    ("blob-shape-mismatch", RESUME, "do not match",
     planted_blob("values", npz(values=np.zeros((2, 2)), stderr=np.zeros((1, 1))))),
    ("blob-counts-gap", RESUME, "unexpected arrays", planted_blob("values", npz(counts_1=np.zeros((2, 4))))),
    ("blob-null", RESUME, "store is corrupt", planted_blob("values", None)),
    ("blob-meta-not-json", RESUME, "store is corrupt", planted_blob("meta", b"{nope")),
    ("row-spec-not-json", "status {done} --store {store}", "store is corrupt",
     store_sql("UPDATE jobs SET spec = '{{nope' WHERE id = '{done}'")),
    ("row-report-not-json", "results {done} --store {store}", "store is corrupt",
     store_sql("UPDATE jobs SET report = '[1' WHERE id = '{done}'")),
    ("row-report-list", "results {done} --store {store}", "not a json object",
     store_sql("UPDATE jobs SET report = '[1]' WHERE id = '{done}'")),
    ("row-status-unknown", "status --store {store}", "store is corrupt",
     store_sql("UPDATE jobs SET status = 'exploded' WHERE id = '{done}'")),
    ("row-handle-status", "status {done} --store {store}", "store is corrupt",
     store_sql("UPDATE batches SET handle = '[1' WHERE job_id = '{done}'")),
    ("row-handle-not-json", RESUME, "store is corrupt",
     store_sql("UPDATE batches SET handle = '{{' WHERE job_id = '{done}'", "UPDATE jobs SET status = 'running' WHERE id = '{done}'")),
    # every column qssm reads back, of the wrong type or NULL: one "store is corrupt" line, no traceback
    *[(f"row-job-{col}-{kind}", cmd, "store is corrupt", store_sql(f"UPDATE jobs SET {col} = {value} WHERE id = '{{done}}'"))
      for col, kind, value, cmd in [
          ("heartbeat", "text", "'soon'", "status --store {store}"),
          ("heartbeat", "text-one", "'soon'", "status {done} --store {store}"),
          ("created", "text", "'yesterday'", "status --store {store}"),
          ("created", "null", "NULL", "status {done} --store {store}"),
          ("updated", "text", "'later'", "status --store {store}"),
          ("updated", "blob", "x'00'", "status {done} --store {store}"),
          ("backend", "null", "NULL", "status --store {store}"),
          ("backend", "blob", "x'00'", "status {done} --store {store}"),
          ("owner", "blob", "x'01'", "status {done} --store {store}"),
          ("error", "blob", "x'02'", "status {done} --store {store}"),
          ("source", "blob", "x'ff'", "results {done} --store {store}"),
          ("status", "null", "NULL", "status --store {store}"),
      ]],
    ("row-report-empty", "results {done} --store {store}", "store is corrupt",
     store_sql("UPDATE jobs SET report = '{{}}' WHERE id = '{done}'")),
    ("row-report-empty-json", "results {done} --json --store {store}", "store is corrupt",
     store_sql("UPDATE jobs SET report = '{{}}' WHERE id = '{done}'")),
    ("row-report-accuracy-text", "results {done} --store {store}", "store is corrupt",
     store_sql("""UPDATE jobs SET report = json_set(report, '$.accuracy', 'high') WHERE id = '{done}'""")),
    *[(f"row-batch-{col}-{kind}", "status {done} --store {store}", "store is corrupt",
       store_sql(f"UPDATE batches SET {col} = {value} WHERE job_id = '{{done}}'"))
      for col, kind, value in [("key", "null", "NULL"), ("wave", "text", "'first'"), ("position", "real", "1.5"),
                               ("status", "unknown", "'paused'"), ("attempts", "text", "'many'"),
                               ("cost_usd", "text", "'free'"), ("handle", "blob", "x'03'"), ("error", "blob", "x'04'"),
                               ("claimed", "text", "'then'")]],
    ("row-batch-handle-types", "status {done} --store {store}", "store is corrupt",
     store_sql("""UPDATE batches SET handle = '{{"backend": 1, "job_ids": 5, "meta": {{}}}}' WHERE job_id = '{done}'""")),
    ("row-batch-wave-text-resume", RESUME, "store is corrupt",
     store_sql("UPDATE batches SET wave = 'first' WHERE job_id = '{done}'", "UPDATE jobs SET status = 'running' WHERE id = '{done}'")),
    # job ids
    ("id-empty-status", 'status "" --store {store}', "is not a job id", None),
    ("id-empty-results", 'results "" --store {store}', "is not a job id", None),
    ("id-empty-cancel", 'cancel "" --store {store}', "is not a job id", None),
    ("id-empty-resume", 'resume "" --store {store}', "is not a job id", None),
    ("id-path", "status ../../etc/passwd --store {store}", "is not a job id", None),
    ("id-sql", "status \"x'; DROP TABLE jobs;--\" --store {store}", "is not a job id", None),
    ("id-long", "status " + "a" * 200 + " --store {store}", "is not a job id", None),
    ("id-unknown-status", "status 20990101-000000-ffffff --store {store}", "no job '20990101-000000-ffffff'", None),
    ("id-unknown-results", "results 20990101-000000-ffffff --store {store}", "no job", None),
    ("id-unknown-cancel", "cancel 20990101-000000-ffffff --store {store}", "no job", None),
    ("id-unknown-resume", "resume 20990101-000000-ffffff --store {store}", "no job", None),
    ("id-results-queued", "results {queued} --store {store}", "no results yet", None),
    ("id-cancel-done", "cancel {done} --store {store}", "already done", None),
    # a refused resume leaves the store as it was: the queued job neither runs nor stalls
    ("resume-stored-ckpt-missing", "resume {queued} --store {store}", "does not exist",
     store_sql("""UPDATE jobs SET spec = '{{"model": {{"checkpoint": "{tmp}/gone.safetensors"}}}}' WHERE id = '{queued}'""")),
    ("resume-stored-cluster", "resume {queued} --store {store}", "backend.cluster",
     store_sql("""UPDATE jobs SET spec = '{{"model": {{"checkpoint": "{ck}"}}, "backend": {{"cluster": "local:-3"}}}}'
                  WHERE id = '{queued}'""")),
    ("resume-stored-n-over-task", "resume {queued} --store {store}", "haystack has 1000 test examples",
     store_sql("""UPDATE jobs SET spec = '{{"model": {{"checkpoint": "{ck}"}}, "data": {{"n": 5000}}}}'
                  WHERE id = '{queued}'""")),
    ("resume-stored-backend", "resume {queued} --store {store}", "unknown backend",
     store_sql("""UPDATE jobs SET spec = '{{"model": {{"checkpoint": "{ck}"}}, "backend": {{"name": "nowhere"}}}}'
                  WHERE id = '{queued}'""")),
    ("id-report-queued", "report {queued} --store {store} --out {tmp}/out", "report on it once", None),
    ("id-report-garbage", "report 'no such thing' --out {tmp}/out", "neither a spec file nor a job id", None),
    # command-line arguments
    ("arg-generate-n-negative", "generate {ck} --prompt 1,2 -n -1", "argument -n/--new: must be 1..4096", None),
    ("arg-generate-n-zero", "generate {ck} --prompt 1,2 -n 0", "must be 1..4096", None),
    ("arg-generate-n-huge", "generate {ck} --prompt 1,2 -n 100000", "must be 1..4096", None),
    ("arg-generate-n-word", "generate {ck} --prompt 1,2 -n many", "must be an integer", None),
    ("arg-generate-shots-negative", "generate {ck} --prompt 1,2 --shots -5", "--shots: must be 0..", None),
    ("arg-generate-shots-float", "generate {ck} --prompt 1,2 --shots 1e3", "must be an integer", None),
    ("arg-generate-temperature-negative", "generate {ck} --prompt 1 --temperature -1", "--temperature", None),
    ("arg-generate-temperature-nan", "generate {ck} --prompt 1 --temperature nan", "finite number", None),
    ("arg-generate-temperature-inf", "generate {ck} --prompt 1 --temperature inf", "finite number", None),
    ("arg-generate-seed-negative", "generate {ck} --prompt 1 --seed -1", "--seed: must be 0..", None),
    ("arg-prompt-empty", 'generate {ck} --prompt ""', "--prompt must be comma-separated token ids", None),
    ("arg-prompt-words", "generate {ck} --prompt a,b", "--prompt must be comma-separated token ids", None),
    ("arg-prompt-gap", "generate {ck} --prompt 1,,2", "--prompt must be comma-separated token ids", None),
    ("arg-prompt-float", "generate {ck} --prompt 1.5", "--prompt must be comma-separated token ids", None),
    ("arg-prompt-negative", "generate {ck} --prompt=-1", "token ids must be in 0..15", None),
    ("arg-prompt-too-big", "generate {ck} --prompt 1,999", "token ids must be in 0..15", None),
    ("arg-prompt-missing", "generate {ck}", "required: --prompt", None),
    ("arg-generate-qlam", "generate {qlam} --prompt 1", "generate needs a qmamba checkpoint", None),
    ("arg-generate-gru", "generate {gru} --prompt 1", "generate needs a qmamba checkpoint", None),
    ("arg-generate-backend", "generate {ck} --prompt 1 --backend nowhere", "unknown backend", None),
    ("arg-eval-shots-negative", "eval {ck} --shots -5", "--shots: must be 0..", None),
    ("arg-eval-seed-negative", "eval {ck} --seed -1", "--seed: must be 0..", None),
    ("arg-eval-seed-word", "eval {ck} --seed abc", "must be an integer", None),
    ("arg-eval-backend", "eval {ck} --backend nowhere", "unknown backend", None),
    ("arg-eval-missing", "eval", "required: checkpoint", None),
    ("arg-submit-shots-negative", "submit {ok} --shots -1 --store {store}", "--shots: must be 0..", None),
    ("arg-submit-missing", "submit --store {store}", "required: spec", None),
    ("arg-submit-n-zero", "submit {ok} --n 0 --store {store}", "argument --n: must be 1..100000", None),
    ("arg-submit-n-word", "submit {ok} --n all --store {store}", "argument --n: must be an integer", None),
    ("arg-submit-n-over-task", "submit {ok} --n 5000 --wait --store {store}", "haystack has 1000 test examples", None),
    ("arg-report-shots-word", "report {ok} --out {tmp}/out --shots a", "--shots: must be an integer", None),
    ("arg-report-shots-zero", "report {ok} --out {tmp}/out --shots 0", "--shots: must be", None),
    ("arg-report-shots-negative", "report {ok} --out {tmp}/out --shots=-5", "--shots: must be", None),
    ("arg-report-shots-empty", 'report {ok} --out {tmp}/out --shots ""', "--shots: must be comma-separated", None),
    ("arg-report-segments", "report {ok} --out {tmp}/out --segments x", "--segments: must be", None),
    ("arg-report-targets-empty", 'report {ok} --out {tmp}/out --targets ""', "--targets: must be comma-separated", None),
    ("arg-report-targets-gap", "report {ok} --out {tmp}/out --targets aer,,aer", "--targets: must be comma-separated", None),
    ("arg-report-target-unknown", "report {ok} --out {tmp}/out --targets aer:nowhere", "unknown backend", None),
    ("arg-compile-targets-empty", 'compile {ok} --targets ""', "--targets: must be comma-separated", None),
    ("arg-compile-target-unknown", "compile {ok} --targets nowhere", "unknown backend", None),
    ("arg-train-preset", "train nothing --out {tmp}/out", "invalid choice", None),
    ("arg-train-steps-zero", "train qmamba-haystack --steps 0 --out {tmp}/out", "--steps: must be 1..", None),
    ("arg-train-steps-negative", "train qmamba-haystack --steps -5 --out {tmp}/out", "--steps: must be 1..", None),
    ("arg-train-noise-device", "train qmamba-haystack --noise fake_nowhere --out {tmp}/out",
     "unknown IBM device snapshot 'fake_nowhere'", None),
    ("arg-train-noise-classical", "train gru-haystack --noise fake_fez --out {tmp}/out",
     "has no noise-aware fine-tuning recipe", None),
    ("arg-train-noise-baselines", "train qmamba-haystack --noise fake_fez --baselines --out {tmp}/out",
     "drop --baselines", None),
    ("arg-train-init-alone", "train qmamba-haystack --init {ck} --out {tmp}/out", "--init only applies with --noise",
     None),
    ("arg-train-noise-init-missing", "train qmamba-haystack --noise fake_fez --init {tmp}/none.safetensors --out {tmp}/out",
     "none.safetensors", None),
    ("arg-train-noise-empty", 'train qmamba-haystack --noise "" --out {tmp}/out', "--noise is empty", None),
    ("arg-train-init-empty", 'train qmamba-haystack --noise fake_fez --init "" --out {tmp}/out', "--init is empty", None),
    ("arg-train-exists", "train gru-haystack --steps 1 --out {dir}", "pass --force", existing_checkpoint("gru-haystack")),
    ("arg-train-noisy-exists", "train qlam-digits-chain --noise fake_fez --out {dir}", "pass --force",
     existing_checkpoint("qlam-digits-chain-noisy-fez")),
    ("arg-train-baseline-exists", "train qmamba-haystack --baselines --steps 1 --out {dir}", "pass --force",
     existing_checkpoint("gru-haystack")),
    ("arg-run-cluster-empty", 'run {ok} --cluster ""', "argument --cluster: is empty", None),
    ("arg-submit-cluster-empty", 'submit {ok} --cluster "" --store {store}', "argument --cluster: is empty", None),
    ("arg-run-backend-empty", 'run {ok} --backend ""', "unknown backend", None),
    ("arg-submit-backend-empty", 'submit {ok} --backend "" --store {store}', "unknown backend", None),
    ("arg-unknown-command", "frobnicate", "invalid choice: 'frobnicate'", None),
    ("arg-no-command", "", "required: COMMAND", None),
    ("arg-unknown-option", "status --bogus --store {store}", "unrecognized arguments: --bogus", None),
    ("arg-export-no-out", "export {ck}", "required: --out", None),
    ("arg-run-missing", "run", "required: spec", None),
    # output directories: refused before any work
    ("out-report-file", "report {ok} --out {file}", "is a file, not a directory", out_file),
    ("out-report-under-file", "report {ok} --out {file}/x", "is a file, not a directory", out_file),
    ("out-report-devnull-child", "report {ok} --out /dev/null/x", "/dev/null is a character device", None),
    ("out-report-devnull", "report {ok} --out /dev/null", "is a character device", None),
    ("out-report-proc", "report {ok} --out /proc/qssm-report", "cannot write in /proc", None),
    ("out-report-empty", 'report {ok} --out ""', "--out is empty", None),
    ("out-run-empty", 'run {ok} --out ""', "--out is empty", None),
    ("out-plan-empty", 'plan {ok} --backend dm:fake_fez --out ""', "--out is empty", None),
    ("store-report-empty", 'report {ok} --out {tmp}/out --store ""', "store path is empty", None),
    ("out-report-job", "report {done} --store {store} --out /dev/null/x", "not a directory", None),
    ("out-export-file", "export {ck} --out {file}", "is a file, not a directory", out_file),
    ("out-export-devnull-child", "export {ck} --out /dev/null/x", "not a directory", None),
    ("out-export-proc", "export {ck} --out /proc/qssm-export", "cannot write in /proc", None),
    ("out-export-ckpt", "export {ck} --out {ck}", "is a file, not a directory", None),
    ("out-train-file", "train qmamba-haystack --out {file}", "is a file, not a directory", out_file),
    ("out-train-devnull-child", "train qmamba-haystack --out /dev/null/x", "not a directory", None),
    ("out-train-proc", "train qmamba-haystack --out /proc/qssm-train", "cannot write in /proc", None),
    ("out-train-empty", 'train qmamba-haystack --out ""', "--out is empty", None),
    ("out-dir-ok-other-error", "export {bad} --out {dir}", "does not match its config",
     lambda env: {**directory(env), **craft(cfg=setcfg("d_model", 12))(env)}),
]


# cluster addresses: refused while the command line or the spec is parsed, the same way from every
# command, in well under 5 s (local:-3 used to hang in the preflight, local:0 meant Dask's default)
BAD_CLUSTERS = {"foo": "neither local:N", "garbage": "neither local:N", "tcp://": "no host and port",
                "tcp://127.0.0.1": "no port", "tcp://h:notaport": "port 'notaport'", "udp://": "scheme udp://",
                "http://": "scheme http://", "tcp://[::1": "unclosed IPv6 bracket", "inproc://": "in-process",
                "tls://": "no host and port", "ucx://": "needs ucx-py", "local:-1": "worker count '-1'",
                "local:-3": "worker count '-3'", "local:0": "asks for 0 workers", "local:1e9": "worker count '1e9'",
                "local:100000": "asks for 100000 workers", "local": "worker count ''",
                "tcp://sch\u00e9duler:8786": "non-ASCII host", "tcp://h:8786/path": "path, query or user part",
                "tcp://h:0": "port '0'", "tcp://a_b:8786": "invalid host name", " local:2": "spaces"}
CLUSTER_COMMANDS = {
    "run": lambda a: ["run", "{ok}", "--cluster", a],
    "submit": lambda a: ["submit", "{ok}", "--cluster", a, "--store", "{store}"],
    "submit-dm-spec": lambda a: ["submit", "{spec}", "--store", "{store}"],
    "submit-exact-spec": lambda a: ["submit", "{spec}", "--store", "{store}"],
}


@pytest.mark.parametrize("address", list(BAD_CLUSTERS), ids=lambda a: a.encode("unicode_escape").decode())
@pytest.mark.parametrize("command", list(CLUSTER_COMMANDS))
def test_cluster_address(env, capsys, command, address):
    needle = BAD_CLUSTERS[address]
    if command.endswith("-spec"):
        backend = 'name = "dm:fake_fez"\nshots = 100\n' if command == "submit-dm-spec" else ""
        env.update(spec(f"[backend]\n{backend}cluster = {json.dumps(address)}\n")(env))
    argv = [a.format(**env) if "{" in a else a for a in CLUSTER_COMMANDS[command](address)]
    line = one_line_error(env, capsys, argv, needle)  # within HANG_SECONDS
    assert ("backend.cluster" in line) == command.endswith("-spec")


def test_good_cluster_addresses_are_normalized():
    from qssm.backends.cluster_address import max_local_workers, parse_cluster

    assert parse_cluster("local:2") == "local:2" and parse_cluster("") == ""
    assert parse_cluster(f"local:{max_local_workers()}") == f"local:{max_local_workers()}"
    assert parse_cluster("TCP://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert parse_cluster("10.0.0.5:8786") == "tcp://10.0.0.5:8786"  # Dask reads host:port as tcp
    assert parse_cluster("tls://sched.example.org:8786") == "tls://sched.example.org:8786"
    assert parse_cluster("[::1]:8786") == "tcp://[::1]:8786"
    with pytest.raises(QssmError, match="asks for"):
        parse_cluster(f"local:{max_local_workers() + 1}")


@pytest.mark.parametrize("argv,needle,setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input(env, capsys, argv, needle, setup):
    if setup is not None:
        env.update(setup(env))
    one_line_error(env, capsys, [a.format(**env) for a in shlex.split(argv)], needle)


def value_flags() -> list[tuple[str, str]]:
    """(command, flag) for every option of every command that takes a value."""
    import argparse

    from qssm.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action.option_strings[-1]) for name, parser in sub.choices.items() if name != "store"
            for action in parser._actions if action.option_strings and action.nargs != 0]


# what each command needs besides the flag under test, so that the flag is what is refused
EMPTY_FLAG_ARGS = {"train": "qmamba-haystack --out {tmp}/out", "eval": "{ck}", "export": "{ck}", "run": "{ok}",
                   "plan": "{ok} --backend dm:fake_fez", "compile": "{ok}", "estimate": "{ok}",
                   "report": "{ok} --out {tmp}/out", "generate": "{ck} --prompt 1,2", "submit": "{ok}",
                   "results": "{done}", "cancel": "{queued}", "resume": "{queued}"}


@pytest.mark.parametrize("command,flag", value_flags(), ids=lambda x: x)
def test_every_value_flag_refuses_an_empty_value(env, capsys, command, flag):
    """`--flag ""` on every command: one line naming the flag or the empty value, exit 2 (qssm
    train --noise "" once trained from scratch; run --out "" and report --store "" were ignored)."""
    base = [a.format(**env) for a in shlex.split(EMPTY_FLAG_ARGS.get(command, ""))]
    if flag in base:  # the flag under test replaces the one the command needs
        del base[base.index(flag):base.index(flag) + 2]
    line = one_line_error(env, capsys, [command, *base, flag, ""], "")
    assert any(k in line for k in (flag, "''", "is empty", "path is empty")), line


def test_the_table_is_large():
    assert len(CASES) >= 150 and len({c[0] for c in CASES}) == len(CASES)


# -- checks that need the model's config (called by the job preflight) --------------------------------
@pytest.mark.parametrize("ck,raw,needle", [
    (QLAM, {"data": {"T": 16}}, "fixed-length inputs"),
    (HAYSTACK, {"split": {"segment": 4}}, "remove [split] segment"),
    (HAYSTACK, {"split": {"obp_steps": "auto"}}, "remove [split] obp_steps"),
    (QLAM, {"split": {"obp_steps": 8}}, "use 1..7"),
    (HAYSTACK, {"data": {"n": 5000}}, "haystack has 1000 test examples"),
    (QLAM, {"data": {"n": 400}}, "digits has 359 test examples"),
    (HAYSTACK, {"data": {"T": 3}}, "data.T must be 0 (the trained length) or 4..4096"),
])
def test_spec_against_model(ck, raw, needle):
    from qssm.jobs.spec import check_spec_against_model, parse_spec

    model, _ = checkpoint.load(ck)
    s = parse_spec({"model": {"checkpoint": str(ck)}, **raw}, "spec.toml")
    with pytest.raises(QssmError, match=None) as e:
        check_spec_against_model(s, model)
    assert needle in str(e.value) and len(str(e.value).splitlines()) == 1


def test_spec_against_model_accepts_a_good_spec():
    from qssm.jobs.spec import check_spec_against_model, parse_spec

    for ck, raw in ((HAYSTACK, {"data": {"n": 1000, "T": 64}}), (QLAM, {"data": {"n": 359}, "split": {"segment": 4}})):
        model, _ = checkpoint.load(ck)
        check_spec_against_model(parse_spec({"model": {"checkpoint": str(ck)}, **raw}, "spec.toml"), model)


# -- the files a root user can still not read or write ------------------------------------------------
@pytest.fixture
def immutable(tmp_path):
    """Make paths read-only even for root (chattr +i), and writable again afterwards."""
    done = []

    def make(*paths):
        for p in paths:
            if os.geteuid() != 0:
                p.chmod(0o555 if p.is_dir() else 0o444)
            elif subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                pytest.skip("chattr +i is not available: cannot make a file read-only for root")
            done.append(p)

    yield make
    for p in reversed(done):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(p)], check=True)
        else:
            p.chmod(0o755 if p.is_dir() else 0o644)


def unreadable_file(tmp: Path) -> Path:
    if os.geteuid() != 0:
        path = tmp / "unreadable.toml"
        path.write_text("[model]\n")
        path.chmod(0)
        return path
    if not UNREADABLE.exists():
        pytest.skip("no file that root cannot read")
    return UNREADABLE


@pytest.mark.parametrize("command", ["submit", "compile", "eval"])
def test_unreadable_input_file(env, capsys, command):
    path = unreadable_file(Path(env["tmp"]))
    one_line_error(env, capsys, [command, str(path)], "cannot be read (permission denied)")


def test_read_only_store_reads_but_refuses_writes(env, capsys, immutable):
    store = Path(env["store"])
    immutable(store, store.parent)
    assert main(["status", "--store", str(store)]) == 0  # reading works
    assert env["done"] in capsys.readouterr().out
    assert main(["results", env["done"], "--store", str(store)]) == 0
    capsys.readouterr()
    for argv in (["submit", env["ok"]], ["cancel", env["queued"]], ["resume", env["queued"]]):
        one_line_error(env, capsys, argv + ["--store", str(store)], "is read-only")


# -- a few as their own process: nothing but the one line reaches the terminal ------------------------
@pytest.mark.parametrize("argv,needle,setup", [
    ("submit {spec} --store {store}", "budget.max_cost_usd must be a finite number", spec("[budget]\nmax_cost_usd = nan\n")),
    ("status --store {bad}", "not a qssm store", sqlite_file("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)")),
    ("generate {ck} --prompt 1,2 -n -1", "must be 1..4096", None),
    ("eval {bad}", "non-finite weights", craft(tensors=poke("layers.0.qweights.A", float("nan")))),
    (RESUME, "store is corrupt", planted_blob("values", npy(np.array([[1, None]], dtype=object), pickle=True))),
    ("report {ok} --out /dev/null/x", "not a directory", None),
])
def test_as_a_process(env, argv, needle, setup):
    if setup is not None:
        env.update(setup(env))
    before = snapshot(env["tmp"])
    p = subprocess.run([sys.executable, "-m", "qssm.cli", *[a.format(**env) for a in shlex.split(argv)]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qssm: error: ") and needle in lines[0], p.stderr
    assert snapshot(env["tmp"]) == before


# -- nan logits never score --------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["exact", "dm:fake_fez", "aer:fake_fez"])
def test_overflowing_weights_never_score(env, capsys, monkeypatch, backend):
    """Past the checkpoint's magnitude check (lifted here), weights that overflow give nan logits:
    the run refuses them before dispatching anything, on every backend; it used to score them as
    "logit error 0.00e+00, agreement 1.000" on exact and give a traceback on aer and dm."""
    monkeypatch.setattr(checkpoint, "MAX_ABS_WEIGHT", float("inf"))
    env.update(craft(tensors=huge("embed.weight"))(env))
    env.update(spec(f'[backend]\nname = "{backend}"\nshots = 100\n[data]\nn = 2\n', ck="{tmp}/bad.safetensors")(env))
    one_line_error(env, capsys, ["run", env["spec"]], "gave non-finite logits")


# -- qssm train never replaces a shipped checkpoint by default ------------------------------------------
def test_train_writes_to_trained_and_overwrites_only_with_force(tmp_path, monkeypatch, capsys):
    """`qssm train PRESET` from a checkout writes ./trained/PRESET.safetensors and leaves
    ./checkpoints/ alone (it used to replace a model scoring 1.000 with a 5-step one); a second run
    asks for --force before training."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    shipped = tmp_path / "checkpoints" / "gru-haystack.safetensors"
    shutil.copy(GRU, shipped)
    before = shipped.read_bytes()
    assert main(["train", "gru-haystack", "--steps", "1", "--json"]) == 0
    capsys.readouterr()
    trained = tmp_path / "trained" / "gru-haystack.safetensors"
    assert shipped.read_bytes() == before and trained.exists()
    written = trained.stat().st_mtime_ns
    one_line_error({"tmp": str(tmp_path)}, capsys, ["train", "gru-haystack", "--steps", "1"], "pass --force")
    assert main(["train", "gru-haystack", "--steps", "1", "--force", "--json"]) == 0
    assert trained.stat().st_mtime_ns != written  # rewritten with --force
    assert shipped.read_bytes() == before
    assert main(["train", "gru-haystack", "--steps", "1", "--out", "checkpoints", "--force", "--json"]) == 0
    assert shipped.read_bytes() != before  # only the explicit --out checkpoints replaces it
