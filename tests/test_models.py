"""Model invariants: parallel form == step form, chunked scan == sequential scan, tasks, baselines."""

import contextlib
import json

import pytest
import torch
from safetensors import safe_open

from qssm.cli import main
from qssm.errors import QssmError
from qssm.models import checkpoint, resume_state
from qssm.models.config import QMambaConfig, TransformerConfig
from qssm.models.registry import PRESETS, build_model, last_logits, n_params, preset
from qssm.models.scan import scan_chunked, scan_step
from qssm.models.tasks import haystack, pattern, task_shape, test_set
from qssm.models.train import one_cycle, train


def tiny_qmamba(**kw):
    cfg = QMambaConfig(vocab_size=12, d_model=8, n_layers=2, n_qubits=3, q_budget=20, **kw)
    torch.manual_seed(3)
    return build_model(cfg).double()


@pytest.mark.parametrize("chunk", [1, 5, 32])
def test_chunked_scan_equals_sequential(chunk):
    g = torch.Generator().manual_seed(0)
    la = -torch.rand(2, 37, 3, 4, generator=g, dtype=torch.float64) * 3
    bx = torch.randn(2, 37, 3, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    hs, h = scan_chunked(la, bx, h0, chunk=chunk)
    ref = h0
    for t in range(37):
        ref = scan_step(la[:, t], bx[:, t], ref)
        torch.testing.assert_close(hs[:, t], ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, ref)


@pytest.mark.parametrize("form", ["chunked", "sequential"])
@pytest.mark.parametrize("options", [{}, {"reupload": 2, "entangler": "cx"}, {"quantum": False}])
def test_parallel_form_equals_step_form(options, form, monkeypatch):
    from qssm.models import scan as scans

    # the sequence forms (parallel chunked, sequential loop) against the O(1)-cache step form
    monkeypatch.setattr(scans, "scan", scans.scan_chunked if form == "chunked" else scans.scan_sequential)
    model = tiny_qmamba(**options)
    tokens = torch.randint(0, 12, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, cache = model(tokens, return_cache=True)
        step_cache = model.empty_cache(3)
        for t in range(20):
            step_logits, step_cache = model.step(tokens[:, t], step_cache)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=0)
    for a, b in zip(cache.h, step_cache.h):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_greedy_generation_matches_full_recompute():
    model = tiny_qmamba()
    prompt = torch.randint(0, 12, (2, 5), generator=torch.Generator().manual_seed(2))
    fast = model.generate(prompt, 64)
    seq = prompt
    with torch.no_grad():
        for _ in range(64):  # reference: rerun the parallel form on the whole prefix
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(fast, seq[:, 5:])


def test_sampled_generation_is_seeded():
    model = tiny_qmamba()
    prompt = torch.zeros(2, 3, dtype=torch.long)
    a = model.generate(prompt, 10, temperature=1.0, seed=5)
    b = model.generate(prompt, 10, temperature=1.0, seed=5)
    assert torch.equal(a, b) and a.shape == (2, 10)


def test_haystack_task_structure():
    task = PRESETS["qmamba-haystack"].config.task
    b = haystack(task, 200, seed=0, T=24)
    assert b.inputs.shape == (200, 24)
    assert (b.inputs[:, -1] == 0).all()  # query
    for row, v in zip(b.inputs, b.targets):
        keys = (row[:-1] == 0).nonzero().flatten()
        assert len(keys) == 1 and row[keys[0] + 1] == v  # exactly one needle, value follows key
        assert 1 <= v <= task["n_values"]
    assert len(set(b.targets.tolist())) == task["n_values"]
    assert not torch.equal(test_set(task).inputs[:50], haystack(task, 50, seed=0).inputs)


def test_pattern_task_continues_pattern():
    b = pattern({"T": 10, "period": 3, "n_symbols": 5}, 4, seed=0)
    assert torch.equal(b.targets, b.inputs[:, 10 % 3])  # position 10 repeats position 10 mod period


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_runs(name):
    p = preset(name)
    model = build_model(p.config)
    if p.config.task["name"] == "cifar10":  # no CIFAR-10 here: random images of its shape
        inputs = torch.rand(2, 32, task_shape(p.config.task)["features"])
    else:
        inputs = test_set(p.config.task).inputs[:2]
    out = last_logits(model, inputs)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    assert n_params(model)["total"] > 0


def test_baselines_have_comparable_parameter_counts():
    q = n_params(build_model(preset("qmamba-haystack").config))
    c = n_params(build_model(preset("ssm-haystack").config))
    g = n_params(build_model(preset("gru-haystack").config))
    assert q["quantum"] > 0 and c["quantum"] == 0
    assert 0.8 < c["total"] / q["total"] < 1.25 and 0.5 < g["total"] / q["total"] < 2
    # sMNIST: the classical memory, the RNN and the GRU within 3% of QLAM's parameter count
    q = n_params(build_model(preset("qlam-smnist").config))
    assert q["quantum"] > 0 and set(preset("qlam-smnist").baselines) == {"ssm-smnist", "rnn-smnist", "gru-smnist"}
    for name in preset("qlam-smnist").baselines:
        c = n_params(build_model(preset(name).config))
        assert c["quantum"] == 0 and abs(c["total"] / q["total"] - 1) < 0.03, name


@pytest.mark.parametrize("n", [2, 4, 6])
def test_chain_pattern_is_nearest_neighbour(n):
    """pattern="chain": every two-qubit gate acts on (i, i+1), n - 1 of them after each rotation
    layer; QMamba's sub-circuits and QLAM's memory both take the pattern from their config."""
    from qssm.models.ansatz import memory_step, reuploading_circuit
    from qssm.models.config import AnsatzConfig, QLAMConfig

    cfg = AnsatzConfig(n, 3 * n, pattern="chain")
    for ops in (reuploading_circuit(cfg), memory_step(cfg)):
        pairs = [op.qubits for op in ops if len(op.qubits) == 2]
        assert pairs == [(i, i + 1) for i in range(n - 1)] * 3
    ring = [op.qubits for op in memory_step(AnsatzConfig(n, 3 * n)) if len(op.qubits) == 2]
    assert any(abs(a - b) != 1 for a, b in ring) or n == 2  # the default ring has long-range pairs
    q = build_model(QMambaConfig(vocab_size=8, n_qubits=n, pattern="chain"))
    for ops in q.layers[0].ops.values():
        assert all(abs(op.qubits[1] - op.qubits[0]) == 1 for op in ops if len(op.qubits) == 2)
    m = build_model(QLAMConfig(input_dim=4, n_classes=3, n_qubits=n, pattern="chain"))
    assert all(op.qubits[1] - op.qubits[0] == 1 for op in m.ops if len(op.qubits) == 2)


def test_pattern_defaults_to_ring_for_old_configs():
    """Configs saved before the field existed (every shipped ring checkpoint) load as "ring"."""
    import dataclasses

    from qssm.errors import QssmError
    from qssm.models.config import config_from_dict

    d = dataclasses.asdict(preset("qlam-digits").config)
    del d["pattern"]
    assert config_from_dict(d).pattern == "ring"
    with pytest.raises(QssmError, match="pattern"):
        config_from_dict({**d, "pattern": "star"})


def test_length_varied_training_batches():
    """task["train_T"] = [lo, hi]: one length per batch, drawn from lo..hi, reproducible from the
    seed; every batch is a valid haystack; the test split keeps the reference length T."""
    from itertools import islice

    from qssm.models.tasks import train_batches, train_length

    task = preset("qmamba-haystack-varlen").config.task
    lo, hi = task["train_T"]
    first = list(islice(train_batches(task, 2, seed=0), 600))
    lengths = [b.inputs.shape[1] for b in first]
    assert min(lengths) == lo and max(lengths) == hi and len(set(lengths)) > 10
    again = list(islice(train_batches(task, 2, seed=0), 600))
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(first, again))
    other = [b.inputs.shape[1] for b in islice(train_batches(task, 2, seed=1), 600)]
    assert other != lengths
    for b in first[:50]:
        assert (b.inputs[:, -1] == 0).all() and ((b.inputs[:, :-1] == 0).sum(1) == 1).all()
        assert b.meta["T"] == b.inputs.shape[1]
    assert test_set(task).inputs.shape[1] == task["T"]
    assert train_length(PRESETS["qmamba-haystack"].config.task, 5, 0) is None  # fixed length by default
    with pytest.raises(Exception, match="train_T"):
        train_length({**task, "train_T": [2, 8]}, 0, 0)


def test_qlam_options_shape_the_model():
    """QLAM's reupload, readout, pool_memory and w_init options: input angles, Pauli set, head
    width; a config without them (every shipped checkpoint) keeps the original model."""
    from qssm.models.ansatz import n_inputs
    from qssm.models.config import QLAMConfig

    base = QLAMConfig(input_dim=14, n_classes=10)
    assert len(base.paulis()) == 3 * 6 + 5
    rich = QLAMConfig(input_dim=14, n_classes=10, reupload=2, readout="pairs", pool_memory=True, w_init=0.05)
    paulis = rich.paulis()
    assert len(paulis) == len(set(paulis)) == 3 * 6 + 9 * 5 and paulis[:23] == base.paulis()
    torch.manual_seed(0)
    model = build_model(rich)
    assert n_inputs(list(model.ops)) == 2 * 6 * 2 and model.encode.out_features == 24
    assert model.head.in_features == 2 * rich.n_heads + 2 * len(paulis)
    assert model.w.abs().max() < 0.3
    x = torch.rand(3, 5, 14)
    assert model(x).shape == (3, 10)
    classical = build_model(QLAMConfig(input_dim=14, n_classes=10, reupload=2, readout="pairs", quantum=False))
    assert classical(x).shape == (3, 10)
    assert build_model(base).head.in_features == 2 * 8 + 23


def test_smnist_rows_per_token_layout():
    from qssm.models.tasks import smnist

    rows = smnist({"name": "smnist", "size": 14, "split_seed": 0}, "test")
    pairs = smnist({"name": "smnist", "size": 14, "split_seed": 0, "rows_per_token": 2}, "test")
    assert rows.inputs.shape == (1000, 14, 14) and pairs.inputs.shape == (1000, 7, 28)
    torch.testing.assert_close(pairs.inputs[:, 3, 14:], rows.inputs[:, 7])  # token 3 = rows 6 and 7
    assert torch.equal(pairs.targets, rows.targets)


def test_pattern_next_targets_and_every_position_loss():
    """meta["next"] is the next symbol at each position (ignored until the pattern was seen once);
    loss = "every_position" scores exactly those positions, its last one is the task's target."""
    import torch.nn.functional as F

    from qssm.models.tasks import IGNORE
    from qssm.models.train import batch_loss

    task = preset("qmamba-pattern").config.task
    b = pattern(task, 6, seed=3, T=13)
    nxt, p = b.meta["next"], task["period"]
    assert nxt.shape == (6, 13) and (nxt[:, : p - 1] == IGNORE).all()
    assert torch.equal(nxt[:, p - 1 : -1], b.inputs[:, p:]) and torch.equal(nxt[:, -1], b.targets)
    model = tiny_qmamba()
    b = pattern({**task, "n_symbols": 12}, 4, seed=1, T=9)
    logits = model(b.inputs)
    keep = b.meta["next"] != IGNORE
    want = F.cross_entropy(logits[keep], b.meta["next"][keep])
    torch.testing.assert_close(batch_loss(model, b, {**task, "loss": "every_position"}), want)
    torch.testing.assert_close(batch_loss(model, b, {**task, "loss": "last"}), F.cross_entropy(logits[:, -1], b.targets))
    with pytest.raises(Exception, match="per-position"):
        batch_loss(model, haystack(PRESETS["qmamba-haystack"].config.task, 2, seed=0), {"name": "haystack",
                                                                                       "loss": "every_position"})


def test_pattern_checkpoint_continues_repeated_patterns():
    """Greedy generation (parallel prefill, then the O(1) step cache) of the shipped qmamba-pattern
    reproduces 20 random 4-symbol patterns for 20 tokens after a prompt of three repetitions."""
    import numpy as np

    from qssm.models import checkpoint

    model, _ = checkpoint.load("checkpoints/qmamba-pattern.safetensors")
    task = model.cfg.task
    pats = np.random.default_rng(7).integers(0, task["n_symbols"], size=(20, task["period"]))
    out = model.generate(torch.from_numpy(np.tile(pats, (1, 3))), 20)
    assert (out.numpy() == np.tile(pats, (1, 5))[:, :20]).all()


def test_generate_command_continues_a_pattern():
    """`qssm generate CHECKPOINT --prompt ...` (exact backend, greedy) continues the pattern."""
    import json
    import subprocess
    import sys

    prompt = [5, 2, 7, 2] * 2
    run = subprocess.run([sys.executable, "-m", "qssm.cli", "generate", "checkpoints/qmamba-pattern.safetensors",
                          "--prompt", ",".join(map(str, prompt)), "-n", "12", "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["generated"] == ([5, 2, 7, 2] * 3)[:12]


def test_fused_program_cache_survives_a_dtype_round_trip():
    """After model.float().double() new weight tensors can land at freed addresses with the same
    version: a cache keyed on storage returned other sub-circuits' programs (logit errors of 2.8)."""
    from qssm.models import checkpoint
    from qssm.models import evaluator as ev

    model, _ = checkpoint.load("checkpoints/qmamba-haystack.safetensors")
    x = test_set(model.cfg.task).inputs[:4]
    for _ in range(10):
        model = model.double()
        with torch.no_grad():
            model(x)  # fills the cache
            model = model.float().double()  # in place: new storage for every weight
            cached = model(x)
            ev._PROGRAMS.clear()
            fresh = model(x)
        torch.testing.assert_close(cached, fresh, rtol=0, atol=1e-12)


def test_generate_prefills_once(monkeypatch, capsys):
    """qssm generate pays for the prompt once: n_layers round trips, then n_layers per token."""
    import json

    import qssm.commands.generate as generate
    from qssm.cli import main
    from qssm.models import checkpoint

    trips = []
    make = generate.evaluator_for

    def counting(*args, **kwargs):
        ev = make(*args, **kwargs)
        evaluate = ev.evaluate
        ev.evaluate = lambda calls: trips.append(len(calls)) or evaluate(calls)
        return ev

    monkeypatch.setattr(generate, "evaluator_for", counting)  # the command's own name for it
    ck = "checkpoints/qmamba-haystack.safetensors"
    assert main(["generate", ck, "--prompt", "0,3,9,1", "-n", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(trips) == r["round_trips"] == 2 + 3 * 2
    assert r["prefill_round_trips"] == 2 and r["round_trips_per_token"] == 2
    model, _ = checkpoint.load(ck)
    assert r["generated"] == model.double().generate(torch.tensor([[0, 3, 9, 1]]), 3)[0].tolist()


def test_standard_benchmark_baselines_have_equal_parameter_counts():
    """qlam-smnist-full / qlam-sfashion: the classical SSM, the GRU and the transformer within 1.5% (the SSM moves in steps of one readout head)."""
    for name in ("qlam-smnist-full", "qlam-sfashion"):
        p = preset(name)
        q = n_params(build_model(p.config))
        assert q["quantum"] > 0 and p.config.pattern == "chain"
        assert [b.split("-")[0] for b in p.baselines] == ["ssm", "gru", "transformer"]
        for b in p.baselines:
            assert preset(b).config.task == p.config.task, b  # the same split and token layout
            c = n_params(build_model(preset(b).config))
            assert c["quantum"] == 0 and abs(c["total"] / q["total"] - 1) < 0.015, b


def test_transformer_baseline_is_causal_and_round_trips(tmp_path):
    torch.manual_seed(0)
    cfg = TransformerConfig(input_dim=14, n_out=10, max_len=14, d_model=16, d_ff=24,
                            task={"name": "smnist", "size": 14})
    model = build_model(cfg).eval()
    x = torch.randn(4, 14, 14)
    out = model(x)
    assert out.shape == (4, 14, 10)
    y = x.clone()
    y[:, 9:] = torch.randn(4, 5, 14)  # later tokens changed: outputs up to token 8 unchanged
    out2 = model(y)
    torch.testing.assert_close(out2[:, :9], out[:, :9])
    assert not torch.allclose(out2[:, 9:], out[:, 9:])
    assert n_params(model)["total"] == sum(p.numel() for p in model.parameters())
    checkpoint.save(model, tmp_path / "t.safetensors", {"steps": 0})
    loaded, record = checkpoint.load(tmp_path / "t.safetensors")
    assert loaded.cfg == cfg and record == {"steps": 0}
    torch.testing.assert_close(last_logits(loaded, x), out[:, -1], rtol=0, atol=0)
    with pytest.raises(QssmError, match="max_len"):
        model(torch.randn(1, 15, 14))
    with pytest.raises(QssmError, match="multiple of n_attn_heads"):
        TransformerConfig(input_dim=14, n_out=10, max_len=14, d_model=18)


class _Stopped(Exception):
    pass


@contextlib.contextmanager
def stop_at_first_resume_point(monkeypatch):
    """A training that writes its first resume file and is then killed (the file is kept)."""
    save = resume_state.save

    def save_then_stop(*args, **kw):
        save(*args, **kw)
        raise _Stopped

    monkeypatch.setattr(resume_state, "save", save_then_stop)
    with pytest.raises(_Stopped):
        yield
    monkeypatch.setattr(resume_state, "save", save)


def test_interrupted_training_resumes_bit_identically(tmp_path, monkeypatch):
    """A run stopped after its first resume point and started again ends with the same tensors
    as an uninterrupted run, and its record carries the learning curve."""
    p = preset("qlam-digits-chain")
    ref, _ = train(p, steps=30, progress=False)
    with stop_at_first_resume_point(monkeypatch):
        train(p, steps=30, progress=False, resume=tmp_path / "r.safetensors", save_every=10)
    resumed, record = train(p, steps=30, progress=False, resume=tmp_path / "r.safetensors", save_every=10)
    for name, t in ref.state_dict().items():
        assert torch.equal(t, resumed.state_dict()[name]), name
    assert [pt["step"] for pt in record["curve"]] == [10, 20, 30]
    # a resume file from another recipe is refused, not silently continued
    with pytest.raises(QssmError, match="another recipe"):
        train(p, steps=40, progress=False, resume=tmp_path / "r.safetensors", save_every=10)


def test_training_of_any_length_runs_its_schedule(tmp_path, capsys):
    """`qssm train --steps N` for short N: torch's one-cycle divided by a zero-length warm-up at
    N = 10 (ZeroDivisionError). Every length steps through and reaches about the preset's rate;
    runs of 20 steps or more keep torch's 10% warm-up (the shipped recipes retrain identically)."""
    for steps in range(1, 41):
        opt = torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=0.01)
        sched = one_cycle(opt, 0.01, steps)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert 0.005 < max(lrs) <= 0.01 + 1e-12, steps  # the warm-up reaches (about) the peak
        if steps >= 20:
            assert sched.state_dict()["_schedule_phases"][0]["end_step"] == 0.1 * steps - 1
    assert main(["train", "gru-digits", "--steps", "10", "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gru-digits"]["steps"] == 10


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qlam-smnist-full", "qlam-sfashion", "transformer-smnist-full"])
def test_shipped_standard_checkpoint_retrains_bit_identically(name, tmp_path, monkeypatch):
    """The shipped checkpoint's recipe retrained from scratch up to its first learning-curve point
    (step 250 of the full schedule, a few minutes instead of the run's 40) gives the recorded
    weights' SHA-256, loss and test accuracy exactly (checkpoints trained before the curve held a
    digest compare loss and accuracy)."""
    _, shipped = checkpoint.load(f"checkpoints/{name}.safetensors")
    want = shipped["curve"][0]
    with stop_at_first_resume_point(monkeypatch):
        train(preset(name), progress=False, resume=tmp_path / "r.safetensors", save_every=want["step"])
    with safe_open(str(tmp_path / "r.safetensors"), framework="pt") as f:
        got = json.loads(f.metadata()["curve"])[0]
    assert {k: v for k, v in got.items() if k in want and k != "seconds"} == \
        {k: v for k, v in want.items() if k != "seconds"}
