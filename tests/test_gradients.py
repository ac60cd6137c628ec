"""Gradients through the pipeline evaluator (pipeline/gradients.py): the parameter-shift rule on the
device's own circuits, checked against finite differences; never silently partial."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qssm.app.inference import evaluator_for
from qssm.errors import QssmError
from qssm.models import checkpoint
from qssm.models.tasks import first_test_examples
from qssm.pipeline.gradients import jacobian, shift_rule, shifted_rows


@pytest.mark.parametrize("r", [1, 2, 3])
def test_the_shift_rule_is_exact_for_trigonometric_polynomials_of_its_degree(r):
    rng = np.random.default_rng(r)
    a, b = rng.normal(size=r + 1), rng.normal(size=r + 1)

    def f(x):
        return sum(a[k] * np.cos(k * x) + b[k] * np.sin(k * x) for k in range(r + 1))

    def df(x):
        return sum(-k * a[k] * np.sin(k * x) + k * b[k] * np.cos(k * x) for k in range(r + 1))

    x = rng.uniform(-math.pi, math.pi, size=(5, 1))
    rows = shifted_rows(x, [r])
    values = f(rows)  # (rows * shifts, 1): one output
    np.testing.assert_allclose(jacobian(values, len(x), [r])[:, 0, 0], df(x[:, 0]), atol=1e-12)
    shifts, coefficients = shift_rule(1)
    np.testing.assert_allclose(shifts, [math.pi / 2, 3 * math.pi / 2])
    np.testing.assert_allclose(coefficients, [0.5, -0.5])


def _loss(model, inputs, ev, weights):
    return (model(inputs, ev)[:, -1] * weights).sum()


def test_every_qmamba_parameter_gets_the_finite_difference_gradient_on_fez_noise():
    model = checkpoint.load("checkpoints/qmamba-haystack.safetensors")[0].double()
    inputs = first_test_examples(model.cfg.task, 2, T=5).inputs
    ev = evaluator_for("dm:fake_fez")  # exact noisy values: no shot noise in either gradient
    weights = torch.randn(2, model.cfg.vocab_size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model.zero_grad()
    _loss(model, inputs, ev, weights).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    checks = [("layers.0.qweights.A", 3), ("layers.1.qweights.C", 0), ("layers.0.encode.Delta.weight", 5),
              ("embed.weight", int(inputs[0, 0]) * model.cfg.d_model)]
    params = dict(model.named_parameters())
    for name, index in checks:
        p = params[name]
        analytic = p.grad.reshape(-1)[index].item()
        eps, flat = 1e-4, p.data.reshape(-1)
        old = flat[index].item()
        flat[index] = old + eps
        up = _loss(model, inputs, ev, weights).item()  # grad enabled: the same circuits as the backward
        flat[index] = old - eps
        down = _loss(model, inputs, ev, weights).item()
        flat[index] = old
        assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-3, abs=1e-6), name
    ev.close()


def test_qlam_memory_refuses_a_gradient_in_one_clear_error():
    model = checkpoint.load("checkpoints/qlam-digits-chain.safetensors")[0].double()
    inputs = first_test_examples(model.cfg.task, 2).inputs
    ev = evaluator_for("exact", shots=100)
    loss = model(inputs, ev).sum()
    with pytest.raises(QssmError, match="not differentiable"):
        loss.backward()
    ev.close()
