"""The shot planner (pipeline/shotplan.py): its delta-method predictions against Monte Carlo runs
of the sampled pipeline, and the floor's allocation against its own definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from bench.experiments import shots as shots_bench
from qssm.app import plan as app_plan
from qssm.backends import devices
from qssm.backends.registry import get_backend
from qssm.jobs.spec import parse_spec
from qssm.models import checkpoint
from qssm.models.tasks import first_test_examples
from qssm.pipeline import shotplan
from qssm.pipeline.build import build_pipeline

CHAIN = "checkpoints/qlam-digits-chain.safetensors"


def spec(ck, n, shots, backend="dm:fake_fez", **data):
    return parse_spec({"model": {"checkpoint": ck}, "data": {"n": n, **data},
                       "backend": {"name": backend, "shots": shots}})


def test_one_rival_flip_probability_is_the_normal_tail():
    m = np.array([[1.0], [0.5], [2.0]])
    cov = np.array([[[0.25]], [[1.0]], [[1e-4]]])
    p = shotplan.flip_probability(m, cov)
    want = norm.cdf(-m[:, 0] / np.sqrt(cov[:, 0, 0]))
    assert (np.abs(p - want) <= 3 * np.sqrt(want * (1 - want) / shotplan.DRAWS) + 1e-12).all(), (p, want)


def _sensitivity(k, rng, m=40):
    g = rng.normal(size=(m, k))
    a = np.einsum("mc,md->mcd", g, g) * rng.uniform(0.2, 1.0, size=(m, 1, 1))
    margin = rng.uniform(0.2, 1.0, size=(2, k))
    return shotplan.Sensitivity(np.zeros(2, int), np.ones((2, k), int), margin, np.repeat([0, 1], m // 2),
                                np.arange(m), a)


def test_floor_is_the_neyman_allocation_for_one_rival():
    """One rival: at the floor's allocation the margin sits exactly z standard deviations clear,
    and any other allocation of the same cost leaves it closer."""
    rng = np.random.default_rng(3)
    sens = _sensitivity(1, rng)
    cost = rng.integers(1, 4, size=40).astype(float)
    shots, total = sens.neyman(cost, 0.99)
    sd = np.sqrt(sens.cov(shots)[:, 0, 0])
    np.testing.assert_allclose(sens.margin[:, 0] / sd, norm.ppf(0.99))
    np.testing.assert_allclose(total, sens.floor(cost, 0.99))
    for _ in range(5):
        other = shots * rng.uniform(0.5, 1.5, size=40)
        other *= (total / np.bincount(sens.example, other * cost))[sens.example]
        assert (sens.cov(other)[:, 0, 0] >= sd**2 * (1 - 1e-9)).all()


def test_several_rivals_allocation_clears_all_and_floor_bounds_it():
    rng = np.random.default_rng(4)
    sens = _sensitivity(3, rng)
    cost = rng.integers(1, 4, size=40).astype(float)
    shots, total = sens.neyman(cost, 0.99)
    sd = np.sqrt(np.einsum("bcc->bc", sens.cov(shots)))
    assert (sens.margin / sd >= norm.ppf(0.99) - 1e-9).all()
    floor = sens.floor(cost, 0.99)
    assert (floor <= total * (1 + 1e-12)).all() and (floor > 0).all()


@pytest.mark.parametrize("k", [1, 3])
def test_tighten_cuts_the_variance_at_the_cheapest_rows_within_their_bounds(k):
    """A vetoed example's next round (pipeline/adaptive.py): every margin's variance cut by `factor`,
    each row between its shots and growth x them, for no more than growing every row by `factor`
    (the uniform way to the same variance), and strictly less where the rows' sensitivities differ."""
    rng = np.random.default_rng(5)
    sens = _sensitivity(k, rng)
    cost = rng.integers(1, 4, size=40).astype(float)
    now = rng.choice([2.0, 8.0, 32.0], size=40)
    shots = sens.tighten(cost, now, 2.0, 4.0)
    assert (shots >= now).all() and (shots <= 4 * now * (1 + 1e-9)).all()
    before, after = np.einsum("bcc->bc", sens.cov(now)), np.einsum("bcc->bc", sens.cov(shots))
    assert (after <= before / 2 * (1 + 1e-6)).all()
    spent = np.bincount(sens.example, (shots - now) * cost, minlength=2)
    uniform = np.bincount(sens.example, now * cost, minlength=2)  # growing every row 2x adds its shots once
    assert (spent < uniform).all()


@pytest.mark.parametrize("shots", [16, 64])
def test_predicted_flips_match_monte_carlo(shots):
    """The plan's expected number of decisions differing from the infinite-shot noisy argmax, at
    fixed shots per circuit, against that number in sampled runs of the pipeline over several
    simulator seeds (independent examples: the tolerance is 3 standard errors of the count)."""
    s = spec(CHAIN, 48, shots)
    model = checkpoint.load(s.checkpoint)[0].double()
    data = first_test_examples(model.cfg.task, s.data.n, s.data.seed, s.data.T or None)
    backend = get_backend("dm:fake_fez", seed=1)
    logits, ev = shotplan.oracle(s, model, data, backend)
    sens = shotplan.sensitivity(logits, ev.records, ev.pool)
    p = sens.flip(np.full(len(ev.pool.shots), float(shots)))
    seeds = 4
    flips = 0
    for seed in range(seeds):
        b = get_backend("dm:fake_fez", seed=100 + seed)
        ev2 = shotplan.ShotEvaluator(build_pipeline(s, b, model=model), shots)
        with torch.no_grad():
            out = model(data.inputs, ev2)
        flips += int((out.argmax(-1).numpy() != sens.top).sum())
    expected, sd = seeds * p.sum(), np.sqrt(seeds * (p * (1 - p)).sum())
    assert abs(flips - expected) <= 3 * sd + 1, (flips, expected, sd)
    assert expected > 1  # the test can fail: some decisions do move at these shots


def test_oracle_values_are_the_sampled_pipelines_mean():
    """The oracle's expected counts give the values the sampled pipeline converges to (readout
    correction included): one row's values at 200k shots sit within 4 standard errors."""
    s = parse_spec({"model": {"checkpoint": CHAIN}, "data": {"n": 2},
                    "backend": {"name": "dm:fake_fez", "shots": 200_000}, "mitigation": {"readout": True}})
    model = checkpoint.load(s.checkpoint)[0].double()
    data = first_test_examples(model.cfg.task, s.data.n, s.data.seed, s.data.T or None)
    _logits, ev = shotplan.oracle(s, model, data, get_backend("dm:fake_fez", seed=1))
    ev2 = shotplan.ShotEvaluator(build_pipeline(s, get_backend("dm:fake_fez", seed=5), model=model), 200_000)
    with torch.no_grad():
        model(data.inputs, ev2)
    for u in range(0, len(ev.pool.values), 5):
        err = np.sqrt(np.diag(ev2.pool.var1[u]) / ev2.pool.shots[u])
        assert (np.abs(ev.pool.values[u] - ev2.pool.values[u]) <= 4 * err + 1e-9).all()
        np.testing.assert_allclose(ev.pool.var1[u], ev2.pool.var1[u], atol=0.02)


def test_plan_curve_recommends_the_smallest_shots_meeting_the_confidence():
    out = app_plan.plan_spec(spec(CHAIN, 24, 1000), confidence=0.95)
    n = out["recommended_shots_per_circuit"]
    assert n and out["recommended"]["agreement_noisy"] >= 0.95
    below = [r for r in out["curve"] if r["shots_per_circuit"] < n]
    assert all(r["agreement_noisy"] < 0.95 for r in below)
    agree = [r["agreement_noisy"] for r in out["curve"]]
    assert agree == sorted(agree)
    assert len(out["floor_shots_per_example"]) == 24


def test_plan_never_recommends_more_shots_than_the_device_takes():
    """Garnet takes at most 20,000 shots per circuit: the curve stops there and a recommendation
    above it (which submit would refuse) is none, whatever --max-shots asks."""
    out = app_plan.plan_spec(spec(CHAIN, 4, 1000, backend="dm:iqm_garnet"), confidence=0.99, max_shots=1_000_000)
    limit = devices.max_shots("iqm_garnet")
    assert limit < 1_000_000 and max(r["shots_per_circuit"] for r in out["curve"]) == limit
    assert out["recommended_shots_per_circuit"] is None or out["recommended_shots_per_circuit"] <= limit


def test_bench_shots_row_runs_at_a_tiny_size():
    """bench/experiments/shots.py at 6 images and one adaptive seed: every column, its prices and the checks."""
    row = shots_bench.one_row("qlam-digits-chain", "dm:fake_fez", 6, 1, confidences=(shots_bench.CONFIDENCE, 0.999))
    assert {"fixed 4000", "fixed 16", "adaptive", "adaptive @0.999", "floor"} <= set(row["columns"])
    assert shots_bench.confidences_of(row) == [0.99, 0.999] and row["confidence_checks"]["0.999"]["confidence"] == 0.999
    assert set(shots_bench.acceptance(row, 0.999)) >= {"accuracy_vs_4000", "mean_below_fixed_64", "confidence_honoured"}
    assert shots_bench.floor_frontier(row["floor_shots_per_example"])[0] == pytest.approx(row["columns"]["floor"]["shots_mean"])
    assert "confidence 0.999" in shots_bench.verdicts([row]) and "qlam-digits-chain, fake_fez |" in shots_bench.frontier([row])
    assert row["columns"]["fixed 4000"]["shots_mean"] == pytest.approx(4000 * 24, rel=0.05)
    assert row["columns"]["fixed 4000"]["garnet_usd_per_example"] > row["columns"]["fixed 16"]["garnet_usd_per_example"]
    assert set(row["acceptance"]) >= {"accuracy_vs_4000", "mean_below_fixed_64", "confidence_honoured"}
    assert "| qlam-digits-chain | dm:fake_fez | adaptive |" in shots_bench.table([row])


def test_floor_frontier_gives_up_the_hardest_decisions_first():
    """Mean floor shots over all examples when the k largest floors are dropped; the acceptance's
    strict confidence allows 2 moved decisions of n."""
    assert shots_bench.floor_frontier([10, 1e9, 30, 20], 3) == pytest.approx([(60 + 1e9) / 4, 60 / 4, 30 / 4, 10 / 4])
    assert shots_bench.strict_confidence(500) == 0.996


def test_drawn_errors_are_binomial_means_with_the_rows_moments():
    """draw_errors: a +-1 row's drawn values are means of `shots` outcomes (on the 2/shots lattice,
    inside [-1, 1]) with the row's mean and variance / shots; the correlation of a row's values is
    the one-shot covariance's."""
    pool = shotplan.Pool()
    pool.ids([b"a"], 2, 1)
    mu = np.array([0.8, -0.3])
    cov = np.array([[1 - 0.64, 0.1], [0.1, 1 - 0.09]])
    pool.values[0], pool.var1[0], pool.shots[0] = mu, cov, 1000
    rng = np.random.default_rng(0)
    shots = np.array([16.0])
    v = mu + np.stack([shotplan.draw_errors(pool, shots, rng)[0] for _ in range(4000)])
    assert (np.abs(v) <= 1 + 1e-12).all()
    np.testing.assert_allclose((v + 1) * 16 / 2, np.round((v + 1) * 16 / 2), atol=1e-9)
    se_mean = np.sqrt(np.diag(cov) / 16 / 4000)
    assert (np.abs(v.mean(0) - mu) <= 4 * se_mean).all()
    np.testing.assert_allclose(v.var(0), np.diag(cov) / 16, rtol=0.1)
    corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert abs(np.corrcoef(v.T)[0, 1] - corr) < 0.06


@pytest.mark.slow
def test_plan_monte_carlo_predicts_qmamba_where_the_delta_method_cannot():
    """QMamba's layer-1 rows are one draw for every example (the token table) and its recurrence is
    not linear: at 16 shots per circuit the delta method predicts no flips while sampled runs of the
    pipeline (run_inference, token table and all) move many decisions together. The plan's Monte
    Carlo agreement matches the runs' mean within 3 standard errors of the runs' own spread."""
    from qssm.app.inference import run_inference

    ck, n, shots, seeds = "checkpoints/qmamba-haystack-varlen-noisy-fez.safetensors", 120, 16, 4
    out = app_plan.plan_spec(spec(ck, n, 1000, T=64), at_shots=[shots])
    point = next(c for c in out["curve"] if c["shots_per_circuit"] == shots)
    assert point["method"].startswith("monte carlo")
    measured = []
    for seed in range(1, seeds + 1):
        s = parse_spec({"model": {"checkpoint": ck}, "data": {"n": n, "T": 64},
                        "backend": {"name": "dm:fake_fez", "shots": shots, "seed_simulator": seed}})
        r = run_inference(s, progress=False)
        measured.append(np.mean(np.asarray(r["decisions"]) == np.asarray(out["decisions"])))
    spread = max(point["flip_sd"], 1.0) / n  # one run's agreement sd, from the plan's draws
    se = spread * np.sqrt(1 / seeds + 1 / out["mc_draws"])
    assert abs(np.mean(measured) - point["agreement_noisy"]) <= 3 * se + 0.5 / n, (measured, point)
    # the test can fail: every run moves decisions, which the delta method alone does not foresee
    assert max(measured) < 0.99 and point["agreement_noisy_linear"] > 0.995
