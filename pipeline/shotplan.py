"""Shots from decisions (docs/architecture.md, "Shots"): the dry-run shot planner, the floor oracle
and the evaluator both they and the adaptive rounds (pipeline/adaptive.py) run through.

A classifier's answer is its argmax, so a circuit needs only as many shots as its value's noise
can move that argmax. Per example, with margins m_c = logit(top) - logit(c) of the noise-mean
forward and g_c their gradients with respect to every measured value (autograd through the
classical recurrence and head), the delta method gives the margins' covariance at n_u shots on
measured row u:

    Cov(m_c, m_d) = sum_u a_ucd / n_u,    a_ucd = G_uc^T C_u G_ud

G_uc sums g_c over the example's uses of row u (a deduplicated row shared by positions or
examples is one noise draw), C_u is the row's one-shot covariance: the measure stage's (Pauli
terms of one qubit-wise-commuting group are read from the same shots, so their errors correlate;
1 - <P>^2 on the diagonal, wider after readout correction). A row's cost per shot is its number of
measured circuits (groups). P(argmax moves) = P(some margin < 0) under the Gaussian, plus the
margins' curvature shift (curvature_bias: the recurrence is not linear, and at few shots QMamba's
exp(Delta A) over many tokens turns noise into a bias common to every example).

Uniform shots N per circuit: Cov / N, the planner's curve. The floor: the fewest shots for one
example under the allocation minimising cost, n_u ~ sqrt(a_u / c_u) (Neyman), total
(sum_u sqrt(a_u c_u))^2 z^2 / m^2 with z = Phi^-1(confidence), the largest over rivals.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import binom, norm

from qssm.errors import QssmError
from qssm.models.evaluator import ExactEvaluator, QuantumCall
from qssm.pipeline.build import build_pipeline
from qssm.pipeline.delta import row_covariances
from qssm.pipeline.evaluator import PipelineEvaluator
from qssm.pipeline.measure import measurement_groups
from qssm.pipeline.plan import plan_call, plan_segment

COMPETITORS = 3  # runners-up whose margins are tracked (the union bound over them)
NOMINAL = 1000  # shots the planner's oracle pass is run at (its variances are rescaled to 1 shot)


@dataclass
class Pool:
    """Every distinct measured row (template + parameter row) of a run: shots so far, the
    shots-weighted mean of its values, their per-shot variance, and its measured circuits per shot."""

    index: dict[bytes, int] = field(default_factory=dict)
    shots: list[int] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    var1: list[np.ndarray] = field(default_factory=list)  # (K, K) one-shot covariances
    cost: list[int] = field(default_factory=list)
    sampled: bool = False  # values from real samples (not the oracle's expected counts)

    def ids(self, keys: list[bytes], n_obs: int, cost: int) -> np.ndarray:
        out = np.empty(len(keys), dtype=np.int64)
        for i, k in enumerate(keys):
            if k not in self.index:
                self.index[k] = len(self.shots)
                self.shots.append(0)
                self.values.append(np.zeros(n_obs))
                self.var1.append(np.zeros((n_obs, n_obs)))
                self.cost.append(cost)
            out[i] = self.index[k]
        return out

    def add(self, ids: np.ndarray, result, shots: int) -> None:
        """Pool a round's results: counts add, so means and covariances are shots-weighted. The
        one-shot covariance is the measure stage's (terms sharing a group's shots), its diagonal
        the standard errors' (readout correction widens them); stages that recombine values (ZNE,
        cutting) leave the diagonal alone."""
        cov = result.covariance
        for i, u in enumerate(ids):
            c = np.diag(shots * result.stderr[i] ** 2)
            if cov is not None and len(cov) == len(ids):
                c = cov[i] - np.diag(np.diag(cov[i])) + c
            n0, n = self.shots[u], self.shots[u] + shots
            self.values[u] = (n0 * self.values[u] + shots * result.values[i]) / n
            self.var1[u] = (n0 * self.var1[u] + shots * c) / n
            self.shots[u] = n

    def variance(self, u: int) -> np.ndarray:
        """(K, K) one-shot covariance of row u's values. From samples (`sampled`): the plug-in
        1 - <P>^2 of n shots is low by a factor (n - 1) / n, so it is scaled up by n / (n - 1), which
        makes it unbiased; a margin's variance sums many rows, whose estimation errors then average
        out. Never below the posterior mean under Jeffreys' prior, 4 a b / ((n + 1)(n + 2)),
        a, b = n (1 +- <P>) / 2 + 1/2: a pilot whose every shot agreed would otherwise claim a
        noiseless value (and one shot says nothing of its spread)."""
        if not self.sampled:
            return self.var1[u]
        n = self.shots[u]
        mu = np.clip(self.values[u], -1.0, 1.0)
        a, b = n * (1 + mu) / 2 + 0.5, n * (1 - mu) / 2 + 0.5
        jeffreys = 4 * a * b / ((n + 1) * (n + 2))
        d = np.diag(self.var1[u])
        diag = np.maximum(d * n / max(n - 1, 1), jeffreys)
        return self.var1[u] + np.diag(diag - d)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.shots, dtype=np.float64), np.asarray(self.cost, dtype=np.float64)


@dataclass
class Record:
    """One call's values in one forward: the leaf tensor the model consumed, and per caller row its
    example (index into the forward's batch), position within the example and measured row."""

    name: str
    values: torch.Tensor
    example: np.ndarray
    position: np.ndarray
    unit: np.ndarray
    mean: torch.Tensor | None = None  # the values (detached)
    ideal: torch.Tensor | None = None  # the exact simulator's values at the recorded inputs (later QMamba layers)


def row_keys(batch) -> list[bytes]:
    base = batch.template.hash.encode()
    return [hashlib.blake2b(base + row.tobytes(), digest_size=16).digest() for row in batch.parameters]


class ShotEvaluator(PipelineEvaluator):
    """A PipelineEvaluator whose every measured row has its own shots: `targets[name]` (examples x
    positions) asks for a total per caller position, a row shared by positions gets the largest
    ask, and only the shots a row lacks are sent, as ordinary batches (grouped by shot count)
    through the stages and dispatch, one round trip per evaluate() as before. Values are the
    pool's (all rounds' counts pooled) and come back as leaves the delta method differentiates."""

    def __init__(self, execute, pilot: int, **kw):
        super().__init__(execute, shots=pilot, **kw)
        if self.segment or (self.obp is not None and self.obp.steps):
            raise QssmError("decision-aware shots run whole QLAM circuits; set [split] segment = 0 and obp_steps = 0")
        self.pool = Pool()
        self.records: list[Record] = []
        self.targets: dict[str, np.ndarray] = {}
        self.examples: np.ndarray | None = None  # global example index of each row of the current forward
        self.round = 0

    def _parts(self, call: QuantumCall):
        """(batch, flat caller rows it serves) pairs, and the caller's rows per example."""
        if call.sequential:  # QLAM memory: prefix j serves position j - 1 of every sequence
            b, t, _ = call.inputs.shape
            return [(batch, np.arange(b) * t + j) for j, batch in enumerate(plan_segment(call, 0, t, None, 1))], t
        batch = plan_call(call, 1)
        return [(batch, np.arange(len(batch.inverse)))], len(batch.inverse) // call.inputs.shape[0]

    def _asked(self, name: str, rows: np.ndarray, per: int) -> np.ndarray:
        if name not in self.targets:
            return np.full(len(rows), self.shots, dtype=np.int64)
        ex = rows // per if self.examples is None else self.examples[rows // per]
        return self.targets[name][ex, rows % per]

    def evaluate(self, calls):
        planned, send = [], []
        for call in calls:
            parts, per = self._parts(call)
            ids = []
            for batch, rows in parts:
                u = self.pool.ids(row_keys(batch), len(batch.observables), len(measurement_groups(batch.observables)))
                ids.append(u)
                want = np.zeros(len(u), dtype=np.int64)
                np.maximum.at(want, batch.inverse, self._asked(call.name, rows, per))
                lack = want - np.asarray(self.pool.shots)[u]
                for s in np.unique(lack[lack > 0]):
                    idx = np.flatnonzero(lack == s)
                    send.append((batch.derive(parameters=batch.parameters[idx], shots=int(s), inverse=np.arange(len(idx)),
                                              round=self.round), u[idx]))
            planned.append((call, parts, per, ids))
        if send:
            for (batch, u), res in zip(send, self._round_trip([b for b, _ in send])):
                self.pool.add(u, res, batch.shots)
        return [self._leaf(*p) for p in planned]

    def _leaf(self, call: QuantumCall, parts, per: int, ids) -> torch.Tensor:
        k = len(call.observables)
        n = sum(len(rows) for _, rows in parts)
        unit = np.zeros(n, dtype=np.int64)
        for (batch, rows), u in zip(parts, ids):
            unit[rows] = u[batch.inverse]
        values = np.stack([self.pool.values[u][:k] for u in unit]) if n else np.zeros((0, k))
        shots = np.maximum(np.asarray(self.pool.shots, dtype=np.float64)[unit], 1.0)
        err = np.sqrt(np.stack([np.diag(self.pool.var1[u])[:k] for u in unit]) / shots[:, None]) if n else values
        shape = (*call.inputs.shape[:-1], k)
        dtype = call.inputs.dtype
        self.stderr[call.name] = torch.as_tensor(err, dtype=dtype).reshape(shape)
        mean = torch.as_tensor(values, dtype=dtype).reshape(shape)
        if not torch.is_grad_enabled():
            return mean
        # the leaf is the sampling error (zero at the mean); a later QMamba layer's circuit inputs
        # depend on earlier measured values, so its values carry their derivative in the inputs
        # too, from the exact simulator (the noisy one's, attenuated by the noise, is close to it)
        leaf = torch.zeros_like(mean).requires_grad_(True)
        rows = np.arange(n)
        record = Record(call.name, leaf, rows // per, rows % per, unit, mean)
        self.records.append(record)
        if call.inputs.requires_grad:
            ideal = ExactEvaluator()._one(call)
            record.ideal = ideal.detach()
            return mean + (ideal - record.ideal) + leaf
        return mean + leaf


class Replay:
    """An evaluator that answers a forward's calls from its records, each measured row moved by a
    given error: what the model computes if the device returned the means plus that noise (later
    QMamba layers: their inputs moved, so their values move by the exact simulator's response)."""

    def __init__(self, records: list[Record], noise: list[torch.Tensor]):
        self.records, self.noise, self.i = records, noise, 0

    def evaluate(self, calls):
        out = []
        for call in calls:
            rec, eps = self.records[self.i], self.noise[self.i]
            self.i += 1
            v = rec.mean + eps.reshape(rec.mean.shape)
            if rec.ideal is not None:
                v = v + ExactEvaluator()._one(call) - rec.ideal
            out.append(v)
        return out


def curvature_bias(model, inputs, records: list[Record], pool: Pool, sens: "Sensitivity", shots: np.ndarray,
                   pairs: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) second-order shift of the margins' means at these shots, E[m(v + e)] - m(v), from
    antithetic pairs of Gaussian errors e ~ N(0, cov / shots) pushed through the model (the odd
    orders cancel within a pair). The recurrence is not linear: QMamba's exp(Delta A) over many
    tokens turns noise into a shift common to every example, which moves decisions at few shots
    (the delta method alone misses it). Also (B,): whether any of the draws changed the example's
    argmax: the model's own word against the delta method's Gaussian, which run_adaptive heeds."""
    rng = np.random.default_rng(seed)
    chol = [np.linalg.cholesky(pool.variance(u) + 1e-12 * np.eye(len(pool.values[u]))) for u in range(len(pool.shots))]
    top = torch.as_tensor(sens.top)[:, None]
    rivals = torch.as_tensor(sens.rivals)
    total = np.zeros_like(sens.margin)
    flipped = np.zeros(len(sens.top), dtype=bool)
    for _ in range(pairs):
        z = [(chol[u] @ rng.standard_normal(len(pool.values[u]))) / np.sqrt(shots[u]) for u in range(len(pool.shots))]
        for sign in (1.0, -1.0):
            last = replayed(model, inputs, records, [sign * e for e in z])
            total += (last.gather(1, top) - last.gather(1, rivals)).numpy()
            flipped |= last.argmax(-1).numpy() != sens.top
    return total / (2 * pairs) - sens.margin, flipped


@torch.no_grad()
def replayed(model, inputs, records: list[Record], errors) -> torch.Tensor:
    """The final logits of the recorded forward re-run with every measured row u returning its mean
    plus errors[u] (Replay)."""
    noise = [torch.as_tensor(np.stack([errors[u][: r.mean.shape[-1]] for u in r.unit]), dtype=r.mean.dtype)
             for r in records]
    return final_logits(model(inputs, Replay(records, noise)))


# -- the delta method -----------------------------------------------------------------------------
DRAWS = 4000  # Gaussian draws per example for P(some margin < 0); fixed, so a plan is reproducible


@dataclass
class Sensitivity:
    """Per example: the top class, its k runners-up and margins; per (example, measured row)
    entry: a[:, c, d], the covariance that row adds to margins c and d at one shot."""

    top: np.ndarray  # (B,)
    rivals: np.ndarray  # (B, k)
    margin: np.ndarray  # (B, k)
    example: np.ndarray  # (M,)
    unit: np.ndarray  # (M,)
    a: np.ndarray  # (M, k, k)
    rows: list[np.ndarray] = field(default_factory=list)  # per record: caller row -> entry index

    @property
    def n(self) -> int:
        return len(self.top)

    @property
    def diag(self) -> np.ndarray:
        return np.einsum("mcc->mc", self.a)

    def cov(self, shots: np.ndarray) -> np.ndarray:
        """(B, k, k) margin covariances with `shots[u]` shots on measured row u."""
        out = np.zeros((self.n, *self.a.shape[1:]))
        np.add.at(out, self.example, self.a / shots[self.unit][:, None, None])
        return out

    def flip(self, shots: np.ndarray) -> np.ndarray:
        """P(the argmax at these shots differs from the infinite-shot one), per example."""
        return flip_probability(self.margin, self.cov(shots))

    def floor(self, cost: np.ndarray, confidence: float) -> np.ndarray:
        """Fewest shots per example at which a margin can be z = Phi^-1(confidence) standard
        deviations clear: the cheapest (Neyman) allocation for each rival alone, the largest over
        rivals (a lower bound: no allocation clears them all for less)."""
        z = norm.ppf(confidence)
        d = self.diag
        s = np.stack([np.bincount(self.example, np.sqrt(d[:, c] * cost[self.unit]), minlength=self.n)
                      for c in range(d.shape[1])], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.where(s > 0, (z * s / self.margin) ** 2, 0.0)
        return need.max(axis=1)

    def neyman(self, cost: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
        """Per (example, row) entry the shots putting every margin z = Phi^-1(confidence) standard
        deviations clear of zero (each rival's Neyman allocation, the largest per row), and per
        example their cost."""
        z = norm.ppf(confidence)
        d = self.diag
        shots = np.zeros(len(self.example))
        for c in range(d.shape[1]):
            s = np.bincount(self.example, np.sqrt(d[:, c] * cost[self.unit]), minlength=self.n)
            with np.errstate(divide="ignore", invalid="ignore"):
                n_u = np.sqrt(d[:, c] / cost[self.unit]) * s[self.example] * (z / self.margin[self.example, c]) ** 2
            shots = np.maximum(shots, np.nan_to_num(n_u, nan=0.0, posinf=np.inf))
        return shots, np.bincount(self.example, shots * cost[self.unit], minlength=self.n)


    def tighten(self, cost: np.ndarray, now: np.ndarray, factor: float, growth: float) -> np.ndarray:
        """Per entry the cheapest shots, between now and growth x now on each row, that cut every
        margin's variance by `factor` <= growth (Neyman under the rows' bounds: a water level per
        example and rival, found by bisection; growth x now everywhere reaches it)."""
        d, c = self.diag, cost[self.unit]
        lo, hi = now, growth * now
        shots = lo.astype(float).copy()
        for k in range(d.shape[1]):
            goal = np.bincount(self.example, d[:, k] / now, minlength=self.n) / factor
            lam_lo, lam_hi = np.full(self.n, -80.0), np.full(self.n, 80.0)  # log water levels
            for _ in range(60):
                mid = (lam_lo + lam_hi) / 2
                with np.errstate(divide="ignore"):
                    n = np.clip(np.sqrt(d[:, k] / c) * np.exp(-mid[self.example] / 2), lo, hi)
                var = np.bincount(self.example, d[:, k] / n, minlength=self.n)
                ok = var <= goal * (1 + 1e-9)
                lam_lo, lam_hi = np.where(ok, mid, lam_lo), np.where(ok, lam_hi, mid)
            n = np.clip(np.sqrt(d[:, k] / c) * np.exp(-lam_lo[self.example] / 2), lo, hi)
            shots = np.maximum(shots, n)
        return shots


def flip_probability(margin: np.ndarray, cov: np.ndarray, draws: int = DRAWS) -> np.ndarray:
    """P(some margin < 0) for margins ~ N(margin, cov), per example: fixed Gaussian draws (the
    runners-up are correlated: a union bound over them double counts)."""
    b, k = margin.shape
    z = np.random.default_rng(0).standard_normal((draws, k))
    sd = np.sqrt(np.maximum(np.einsum("bcc->bc", cov), 0.0))
    clear = margin / np.where(sd > 0, sd, 1.0)
    if (np.where(sd > 0, clear, np.inf).min(axis=1) > 8).all():  # every example decided
        return np.zeros(b)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(k) * (1 + np.einsum("bcc->b", cov))[:, None, None])
    out = np.zeros(b)
    for i in range(b):
        if (sd[i] == 0).all() or clear[i][sd[i] > 0].min() > 8:
            out[i] = float((margin[i] <= 0).any())
            continue
        out[i] = ((margin[i] + z @ chol[i].T) < 0).any(axis=1).mean()
    return out


def final_logits(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1] if logits.dim() == 3 else logits


def sensitivity(logits: torch.Tensor, records: list[Record], pool: Pool, k: int = COMPETITORS) -> Sensitivity:
    """Margins of the final logits and the per-shot variance each measured row adds to them."""
    k = min(k, logits.shape[-1] - 1)
    with torch.enable_grad():  # callers run under no_grad (inference); the graph is already built
        vals, idx = final_logits(logits).topk(k + 1, dim=-1)
        margins = vals[:, :1] - vals[:, 1:]
    example, unit, a, rows = row_covariances(margins, records, pool.variance)
    return Sensitivity(idx[:, 0].numpy(), idx[:, 1:].numpy(), margins.detach().numpy(), example, unit, a, rows)


# -- the dry-run plan ------------------------------------------------------------------------------
def oracle(spec, model, data, backend, pipeline=None):
    """The exact noisy forward: every measured row at NOMINAL shots of expected counts on the dm:
    engine (the infinite-shot values and the pipeline's own per-shot variances), differentiable.
    Returns (logits, evaluator)."""
    if not backend.capabilities.expected_counts:
        raise QssmError(f"the shot plan needs the exact noisy values of a dm: backend, got {backend.name}; "
                        f"use --backend dm:<device>")
    backend.expected = True
    fixed = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, shots=NOMINAL))
    pipeline = pipeline or build_pipeline(fixed, backend, model=model)
    ev = ShotEvaluator(pipeline, NOMINAL)
    model.requires_grad_(False)
    with torch.enable_grad():
        logits = model(data.inputs, ev)
    return logits, ev


MC_DRAWS = 16  # noise draws pushed through the model per shot count (the plan's Monte Carlo)
RECOMMEND_STEP = 2 ** 0.25  # the recommendation is searched on shots 1, 2^(1/4), 2^(1/2), ... (rounded)


def draw_errors(pool: Pool, shots: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One draw of every measured row's sampling error at `shots[u]` shots: each value a mean of
    +-1 outcomes (binomial, so bounded and skewed at few shots as the device's are), the row's
    values correlated as its one-shot covariance says (a Gaussian copula), and scaled to that
    covariance's variances where a stage widened them (readout correction). Rows of equal width
    are drawn together."""
    out: list[np.ndarray] = [np.zeros(0)] * len(pool.values)
    by_width: dict[int, list[int]] = {}
    for u, v in enumerate(pool.values):
        by_width.setdefault(len(v), []).append(u)
    for k, units in by_width.items():
        mu = np.stack([pool.values[u] for u in units])  # (U, k)
        cov = np.stack([pool.variance(u) for u in units])  # (U, k, k)
        sd = np.sqrt(np.maximum(np.einsum("ukk->uk", cov), 0.0))
        corr = cov / np.maximum(sd[:, :, None] * sd[:, None, :], 1e-300)
        corr[:, np.arange(k), np.arange(k)] = 1.0
        x = np.einsum("ukl,ul->uk", np.linalg.cholesky(corr + 1e-9 * np.eye(k)), rng.standard_normal((len(units), k)))
        n = np.maximum(np.ceil(shots[units]), 1.0)[:, None]  # whole shots: binom takes integer counts
        q = binom.ppf(norm.cdf(x), n, np.clip((1 + mu) / 2, 0.0, 1.0))
        parity = np.maximum(1 - mu**2, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(parity > 1e-9, (2 * q / n - 1 - mu) * sd / np.sqrt(parity), sd * x / np.sqrt(n))
        for u, e in zip(units, err):
            out[u] = e
    return out


def monte_carlo(model, inputs, records: list[Record], pool: Pool, shots: np.ndarray, draws: int = MC_DRAWS,
                seed: int = 0) -> np.ndarray:
    """(draws, B) argmax of the final logits when the device returns the noisy means plus a sampling
    error at these shots, the whole forward re-run on each draw: the recurrence's nonlinearity and
    the errors every example shares (a QMamba token's layer-1 row is one draw for all of them) are
    in it, which the delta method's per-example Gaussian is not. Fixed seed: a plan is reproducible
    and the curve's points share their draws."""
    rng = np.random.default_rng(seed)
    return np.stack([replayed(model, inputs, records, draw_errors(pool, shots, rng)).argmax(-1).numpy()
                     for _ in range(draws)])


FLOOR_FACTORS = tuple(2 ** (j / 2) for j in range(13))  # 1, 1.4, 2, ..., 64: multiples the floor check tries


def checked_floor(model, inputs, records: list[Record], pool: Pool, sens: "Sensitivity", cost: np.ndarray,
                  confidence: float, draws: int = MC_DRAWS) -> np.ndarray:
    """The floor with the model's nonlinearity in it: each example's Neyman allocation (the cheapest
    that clears its margins under the delta method) scaled by 1, 1.4, 2, ..., pushed through the model
    by monte_carlo; per example its cost at the smallest multiple whose draws keep its decision
    every time (inf past the last). Every row takes at least the multiple in shots: rows the delta
    method finds insensitive (zero gradient at the mean) still move decisions through the
    recurrence when read with one shot. A row shared by examples gets the largest of their asks."""
    alloc, _ = sens.neyman(cost, confidence)
    alloc = np.nan_to_num(alloc, nan=0.0, posinf=1e12)
    out = np.full(sens.n, np.inf)
    for f in FLOOR_FACTORS:
        open_ = ~np.isfinite(out)
        if not open_.any():
            break
        ask = np.ceil(np.maximum(f * alloc, f))  # per (example, row) entry
        shots = np.ones(len(cost))
        np.maximum.at(shots, sens.unit, ask)
        kept = (monte_carlo(model, inputs, records, pool, shots, draws) == sens.top).all(0)
        spent = np.bincount(sens.example, ask * cost[sens.unit], minlength=sens.n)
        out[open_ & kept] = spent[open_ & kept]
    return out


def shot_grid(hi: int) -> list[int]:
    out, n = [], 4
    while n < hi:
        out.append(n)
        n *= 4
    return out + [hi]


def plan(logits: torch.Tensor, exact: torch.Tensor, ev: ShotEvaluator, confidence: float,
         max_shots: int = 100_000, model=None, inputs=None, at_shots=(), check_floor: bool = False) -> dict:
    """The curve of predicted agreement vs uniform shots per circuit, the recommendation and the
    floor, from the oracle forward. With the model and its inputs, every point is a Monte Carlo of
    MC_DRAWS sampled runs through the model (monte_carlo) wherever the delta method leaves any
    decision in doubt; the delta method's own prediction stays beside it (agreement_noisy_linear)."""
    sens = sensitivity(logits, ev.records, ev.pool)
    _, cost = ev.pool.arrays()
    used = np.unique(sens.unit)
    per_shot = float(cost[used].sum()) / sens.n  # measured circuits per example at one shot each
    exact_class = final_logits(exact).argmax(-1).numpy()
    rival = sens.rivals == exact_class[:, None]
    base = sens.cov(np.ones(len(cost)))
    memo: dict[int, dict] = {}

    def delta(n: float) -> tuple[np.ndarray, np.ndarray]:
        p = flip_probability(sens.margin, base / n)
        sigma = np.sqrt(np.einsum("bcc->bc", base) / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            to_exact = np.where(sigma > 0, norm.cdf(-sens.margin / sigma), 0.0)
        return p, np.where(sens.top == exact_class, 1 - p, (to_exact * rival).sum(1))

    def at(n: int) -> dict:
        if n in memo:
            return memo[n]
        p, agree_exact = delta(n)
        point = {"shots_per_circuit": int(n), "shots_per_example": per_shot * n,
                 "agreement_noisy_linear": float(1 - p.mean()), "method": "delta"}
        flips = p.sum()
        flip_sd = float(np.sqrt((p * (1 - p)).sum()))
        if model is not None and delta(n / 4)[0].max() > 1e-9:  # else every margin is > 12 sigma clear at n
            dec = monte_carlo(model, inputs, ev.records, ev.pool, np.full(len(cost), float(n)))
            flipped = (dec != sens.top).sum(1)  # per draw: one run's flips (shared errors make them move together)
            p, agree_exact = (dec != sens.top).mean(0), (dec == exact_class).mean(0)
            flips, flip_sd = float(flipped.mean()), float(flipped.std(ddof=1))
            point["method"] = f"monte carlo, {len(dec)} draws"
        point.update(agreement_noisy=float(1 - p.mean()), agreement_exact=float(np.mean(agree_exact)),
                     expected_flips=float(flips), flip_sd=flip_sd)
        memo[n] = point
        return point

    grid = sorted(set(shot_grid(max_shots)) | {int(n) for n in at_shots})
    steps = sorted({int(round(RECOMMEND_STEP**j)) for j in range(int(np.log(max_shots) / np.log(RECOMMEND_STEP)) + 1)}
                   | {max_shots})
    if at(max_shots)["agreement_noisy"] < confidence:
        recommended = None
    else:  # the agreement grows with the shots (the draws are shared): bisect for the smallest
        lo, hi = 0, len(steps) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if at(steps[mid])["agreement_noisy"] < confidence else (lo, mid)
        recommended = steps[lo]
    floor = sens.floor(cost, confidence)
    checked = checked_floor(model, inputs, ev.records, ev.pool, sens, cost, confidence) if check_floor else None
    return {
        "confidence": confidence,
        "examples": sens.n,
        "measured_rows": int(len(used)),
        "circuits_per_example": per_shot,
        "noisy_accuracy_infinite": None,
        "noisy_exact_agreement_infinite": float((sens.top == exact_class).mean()),
        "curve": [at(n) for n in grid],
        "mc_draws": MC_DRAWS if model is not None else 0,
        "recommended_shots_per_circuit": recommended,
        "recommended": at(recommended) if recommended else None,
        "floor_shots_per_example": floor.tolist(),
        "floor_mean": float(np.mean(np.minimum(floor, 1e12))),
        "floor_median": float(np.median(floor)),
        # the delta method's floor pushed through the model (checked_floor): what the recurrence's
        # nonlinearity adds at few shots; inf where 64x the allocation still moved the decision
        "floor_checked_shots_per_example": None if checked is None else [float(x) for x in np.minimum(checked, 1e15)],
        "decisions": sens.top.tolist(),
        "margin_sigma1": (sens.margin[:, 0] / np.sqrt(np.maximum(base[:, 0, 0], 1e-300))).tolist(),
    }
