"""Noise-aware fine-tuning: the NoisyEvaluator (pipeline/noisy.py) against the exact simulator (noise
off), against the dm: backend on the same ISA circuits (noise on), against finite differences, and
a short fine-tuning run that lowers the noisy loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qssm.models import checkpoint
from qssm.models.registry import NoiseTuning, last_logits
from qssm.models.tasks import test_set, train_batches
from qssm.pipeline.noisy import NoisyEvaluator

HAYSTACK, CHAIN = "checkpoints/qmamba-haystack.safetensors", "checkpoints/qlam-digits-chain.safetensors"


def _model(path):
    model, _ = checkpoint.load(path)
    return model.double()


def _inputs(model, n):
    x = test_set(model.cfg.task).inputs[:n]
    return x.double() if x.is_floating_point() else x


@pytest.mark.parametrize("path,n", [(HAYSTACK, 6), (CHAIN, 3)])
def test_noise_off_equals_the_exact_forward(path, n):
    """The device's ISA circuits (routing, swaps, cancelled chains) with the noise switched off
    compute the same unitaries: logits equal the torch statevector forward to 1e-6."""
    model = _model(path)
    x = _inputs(model, n)
    with torch.no_grad():
        exact = model(x)
        ideal = model(x, NoisyEvaluator("fake_fez", noise=False))
    assert (ideal - exact).abs().max() < 1e-6


def _dm_values(ev: NoisyEvaluator, call, steps: int, weights: torch.Tensor, x: np.ndarray) -> np.ndarray:
    """What the dm: backend returns for the evaluator's own ISA circuit with the weights bound:
    the exact outcome distributions (no sampling) of the measure stage's circuits, as the backend
    computes them for a sampled batch, turned into values by the measure stage's estimator."""
    from qssm.backends.aer import active_qubits, compact
    from qssm.backends.dm import structure
    from qssm.models.statevector import phi
    from qssm.pipeline.measure import expectations, with_measurement
    from qssm.types import CircuitBatch

    s = ev.structure(call, steps)
    angles = phi(weights.double()).detach().numpy()
    bound = s.isa.assign_parameters({p: float(angles[p.index]) for p in s.isa.parameters if p.name.startswith("w[")})
    assert all(p.name.startswith("x[") for p in bound.parameters)
    measured = [with_measurement(bound, g) for g in s.groups]
    active = tuple(sorted(set().union(*(active_qubits(c) for c in measured))))
    small = [compact(c, active=active)[0] for c in measured]
    batch = CircuitBatch(tuple(small), np.ascontiguousarray(x, dtype=np.float64), shots=1)
    probs = ev.backend._probabilities((active, *(structure(c) for c in small)), small, batch, active)
    values, _ = expectations(probs, s.observables, s.groups, shots=1)
    return values


@pytest.mark.parametrize("path", [HAYSTACK, CHAIN])
def test_noisy_values_equal_the_dm_backend_on_the_same_circuits(path):
    """Noise on: the evaluator's values are the dm: backend's exact outcome distributions of the
    same ISA circuits (weights bound to their values), read by the measure stage, to 1e-6."""
    model = _model(path)
    ev = NoisyEvaluator("fake_fez")
    rng = np.random.default_rng(0)
    if model.cfg.kind == "qmamba":
        call = model.layers[1].calls(torch.zeros(1, model.cfg.d_model, dtype=torch.float64))[0]
        cases = [(call, 0, rng.uniform(-3, 3, (5, call.inputs.shape[-1])))]
    else:
        call = model.memory_call(torch.zeros(1, 1, model.cfg.input_dim, dtype=torch.float64))
        cases = [(call, steps, rng.uniform(-3, 3, (3, steps * call.inputs.shape[-1]))) for steps in (1, 3)]
    for call, steps, x in cases:
        with torch.no_grad():
            ours = ev.values(ev.structure(call, steps), call.weights, torch.as_tensor(x)).numpy()
        theirs = _dm_values(ev, call, steps, call.weights, x)
        assert np.abs(ours - theirs).max() < 1e-6
        assert np.abs(ours).max() > 0.05  # not a trivially zero comparison


def test_gradients_match_finite_differences():
    """d(values)/d(weights) and d(values)/d(inputs) through the noisy density-matrix simulation,
    against central differences."""
    model = _model(HAYSTACK)
    ev = NoisyEvaluator("fake_fez")
    call = model.layers[0].calls(torch.zeros(1, model.cfg.d_model, dtype=torch.float64))[1]  # B
    s = ev.structure(call)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.uniform(-3, 3, (3, call.inputs.shape[-1])), requires_grad=True)
    w = call.weights.detach().clone().double().requires_grad_(True)
    probe = torch.as_tensor(rng.normal(size=(3, len(call.observables))))

    def f(w_, x_):
        return (ev.values(s, w_, x_) * probe).sum()

    f(w, x).backward()
    eps = 1e-5
    for i in (0, 7, len(w) - 1):
        d = torch.zeros_like(w)
        d[i] = eps
        with torch.no_grad():
            fd = (f(w + d, x) - f(w - d, x)) / (2 * eps)
        assert float(w.grad[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
    for r, c in ((0, 0), (2, 3)):
        d = torch.zeros_like(x)
        d[r, c] = eps
        with torch.no_grad():
            fd = (f(w, x + d) - f(w, x - d)) / (2 * eps)
        assert float(x.grad[r, c]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_shot_noise_is_sampled_with_the_exact_gradient():
    """shots > 0: forward values are multinomial estimates around the exact noisy mean (within 5
    standard errors), and the gradient is the mean's (straight-through)."""
    model = _model(HAYSTACK)
    call = model.layers[0].calls(torch.zeros(1, model.cfg.d_model, dtype=torch.float64))[0]
    x = torch.as_tensor(np.random.default_rng(2).uniform(-3, 3, (20, call.inputs.shape[-1])))
    exact_ev, shot_ev = NoisyEvaluator("fake_fez"), NoisyEvaluator("fake_fez", shots=1000, seed=3)
    w1 = call.weights.detach().clone().double().requires_grad_(True)
    w2 = call.weights.detach().clone().double().requires_grad_(True)
    mean = exact_ev.values(exact_ev.structure(call), w1, x)
    sampled = shot_ev.values(shot_ev.structure(call), w2, x)
    err = (sampled - mean).detach()
    assert err.abs().max() > 0  # sampled
    assert (err.abs() <= 5 * torch.sqrt((1 - mean.detach() ** 2).clamp_min(1e-4) / 1000)).all()
    mean.sum().backward()
    sampled.sum().backward()
    assert torch.allclose(w1.grad, w2.grad)


def test_a_short_fine_tuning_lowers_the_noisy_loss():
    """Five steps of noise-aware fine-tuning lower the loss (noisy CE + exact CE + consistency,
    exact noisy means) on a fixed batch of the training distribution."""
    from qssm.pipeline.noisy_train import finetune_noisy, noisy_loss

    model, _ = checkpoint.load(HAYSTACK)
    tuning = NoiseTuning(steps=5, batch_size=8, shots=0, lr=3e-3, n_eval=8)
    batch = next(train_batches(model.cfg.task, 16, 777))
    ev = NoisyEvaluator("fake_fez")

    def loss():
        with torch.no_grad():
            return float(noisy_loss(model, batch, model.cfg.task, ev, tuning)["loss"])

    before = loss()
    model, record = finetune_noisy(model, tuning, progress=False)
    after = loss()
    assert after < 0.8 * before
    assert record["noise_tuning"]["device"] == "fake_fez" and record["noisy_metrics"]["n_examples"] == 8


def test_teacher_target_starts_at_the_base_and_tuning_lowers_its_loss():
    """target = "teacher": before any step the exact logits equal the teacher's (the exact term is
    0), a few steps lower the loss on a fixed batch, and the tuned model still agrees with the
    base's predictions on that batch (distillation keeps the function)."""
    from qssm.models.train import frozen_copy
    from qssm.pipeline.noisy_train import finetune_noisy, noisy_loss

    model, _ = checkpoint.load(HAYSTACK)
    base = frozen_copy(model)
    tuning = NoiseTuning(steps=5, batch_size=8, shots=0, lr=3e-3, n_eval=8, target="teacher")
    batch = next(train_batches(model.cfg.task, 16, 777))
    ev = NoisyEvaluator("fake_fez")

    def parts(m):
        with torch.no_grad():
            return {k: float(v) for k, v in noisy_loss(m, batch, m.cfg.task, ev, tuning, base).items()}

    before = parts(model)
    assert before["exact_teacher"] == 0.0 and before["noisy_teacher"] > 0.01
    tuned, record = finetune_noisy(model, tuning, progress=False)
    after = parts(tuned)
    assert after["loss"] < 0.8 * before["loss"]
    with torch.no_grad():
        agree = last_logits(tuned, batch.inputs).argmax(-1) == last_logits(base, batch.inputs).argmax(-1)
    assert bool(agree.all())
    assert record["noise_tuning"]["target"] == "teacher" and set(record["final_loss"]) == set(after)


def test_readout_tuning_moves_only_the_readout():
    """tune = "readout" keeps the circuit, encoder and query weights bit for bit, moves the rms
    gains and the head, and leaves every parameter trainable again afterwards."""
    from qssm.pipeline.noisy_train import finetune_noisy

    model, _ = checkpoint.load(CHAIN)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuning = NoiseTuning(steps=2, batch_size=4, shots=0, lr=1e-2, n_eval=4, readout_norm="rms",
                         target="teacher", tune="readout")
    tuned, _ = finetune_noisy(model, tuning, progress=False)
    after = tuned.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"head.weight", "head.bias"}
    assert not torch.allclose(after["readout_gain"], torch.full_like(after["readout_gain"], float(after["readout_gain"][0])))
    assert all(p.requires_grad for p in tuned.parameters())


def test_train_noise_cli_writes_a_loadable_checkpoint(tmp_path):
    from qssm.cli import main

    assert main(["train", "qmamba-haystack", "--noise", "fake_fez", "--steps", "1", "--out", str(tmp_path),
                 "--json"]) == 0
    model, record = checkpoint.load(tmp_path / "qmamba-haystack-noisy-fez.safetensors")
    assert record["command"] == "qssm train qmamba-haystack --noise fake_fez --steps 1"
    assert record["base"]["checkpoint"] == "checkpoints/qmamba-haystack.safetensors"
    assert record["noise_tuning"]["steps"] == 1
    with torch.no_grad():
        assert last_logits(model, test_set(model.cfg.task).inputs[:2]).shape == (2, model.cfg.vocab_size)


def test_qlam_recipe_adds_only_the_normalization_and_meets_the_noise_floors(tmp_path):
    """`qssm train qlam-digits-chain --noise fake_fez` (steps = 0): every tensor of the base is kept
    bit for bit and only the rms gains are new; on fake_fez's noise (exact noisy means, the first 200
    test images) the logit error is at least 30% below the base's and the accuracy is not lower."""
    from qssm.cli import main
    from qssm.pipeline.noisy_train import evaluate_noisy

    assert main(["train", "qlam-digits-chain", "--noise", "fake_fez", "--out", str(tmp_path), "--json"]) == 0
    tuned, record = checkpoint.load(tmp_path / "qlam-digits-chain-noisy-fez.safetensors")
    base, _ = checkpoint.load(CHAIN)
    kept, new = base.state_dict(), tuned.state_dict()
    assert set(new) - set(kept) == {"readout_gain"} and all(torch.equal(kept[k], new[k]) for k in kept)
    assert record["noise_tuning"]["steps"] == 0 and record["noise_tuning"]["readout_norm"] == "rms"
    before, after = evaluate_noisy(base, base.cfg, "fake_fez"), record["noisy_metrics"]
    assert after["n_examples"] == before["n_examples"] == 200
    assert after["logit_error_mean"] <= 0.7 * before["logit_error_mean"]
    assert after["accuracy"] >= before["accuracy"]


def test_chain_smnist_survives_fake_fez_where_the_ring_collapses():
    """The sMNIST QLAM with the hardware-native CZ chain memory keeps its accuracy under fake_fez's
    noise (exact noisy means, the first 24 test images), where the same model with the CZ ring,
    whose steps need swaps on heavy-hex, collapses."""
    from qssm.pipeline.noisy_train import evaluate_noisy

    scores = {}
    for name in ("qlam-smnist", "qlam-smnist-chain"):
        model, _ = checkpoint.load(f"checkpoints/{name}.safetensors")
        scores[name] = evaluate_noisy(model, model.cfg, "fake_fez", 24)
    ring, chain = scores["qlam-smnist"], scores["qlam-smnist-chain"]
    assert chain["exact_accuracy"] >= 0.85 and chain["accuracy"] >= chain["exact_accuracy"] - 0.1
    assert ring["exact_accuracy"] >= 0.85 and ring["accuracy"] <= chain["accuracy"] - 0.3
    assert chain["logit_error_mean"] < 0.5 * ring["logit_error_mean"]


def test_every_noise_tuning_field_is_validated():
    """The checkpoint validator's table covers every NoiseTuning field, and the defaults pass it."""
    import dataclasses

    from qssm.models.config import NOISE_TUNING_LIMITS, check_noise_tuning

    assert {f.name for f in dataclasses.fields(NoiseTuning)} == set(NOISE_TUNING_LIMITS)
    check_noise_tuning(dataclasses.asdict(NoiseTuning()))


def test_readout_norm_switch_keeps_the_exact_model_and_runs_through_the_pipeline(tmp_path):
    """with_readout_norm (QLAM readout_norm = "rms", gains at the readouts' mean RMS) keeps the
    exact test accuracy within a point, saves and loads, and the pipeline's exact backend gives the
    torch forward's logits."""
    from qssm.app.inference import run_inference
    from qssm.jobs.spec import parse_spec
    from qssm.models.train import accuracy, predict, with_readout_norm

    model, _ = checkpoint.load(CHAIN)
    normed = with_readout_norm(model, "rms")
    assert normed.cfg.readout_norm == "rms" and model.cfg.readout_norm == "none"
    batch = test_set(model.cfg.task)
    assert abs(accuracy(predict(normed, batch), batch.targets) - accuracy(predict(model, batch), batch.targets)) <= 0.01
    path = tmp_path / "normed.safetensors"
    checkpoint.save(normed, path, {})
    loaded, _ = checkpoint.load(path)
    assert torch.equal(loaded.readout_gain, normed.readout_gain)
    r = run_inference(parse_spec({"model": {"checkpoint": str(path)}, "data": {"n": 4}, "backend": {"name": "exact"}}),
                      progress=False)
    assert r["logit_error_max"] < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["qlam-digits-chain", "qmamba-haystack-varlen"])
def test_shipped_noise_tuned_checkpoint_retrains(preset, tmp_path):
    """`qssm train PRESET --noise fake_fez` from the shipped base reproduces the shipped noise-tuned
    checkpoint: exact test accuracy within 2 points, noisy logit error within 20%."""
    from qssm.cli import main

    assert main(["train", preset, "--noise", "fake_fez", "--out", str(tmp_path), "--json"]) == 0
    name = f"{preset}-noisy-fez.safetensors"
    _, fresh = checkpoint.load(tmp_path / name)
    _, shipped = checkpoint.load(f"checkpoints/{name}")
    assert abs(fresh["metrics"]["accuracy"] - shipped["metrics"]["accuracy"]) <= 0.02
    new, old = fresh["noisy_metrics"]["logit_error_mean"], shipped["noisy_metrics"]["logit_error_mean"]
    assert abs(new - old) <= 0.2 * old
