"""NoisyEvaluator: the Evaluator interface on a target device's noise, differentiable in the
inputs and in the weights; what noise-aware fine-tuning trains against (`qssm train --noise`).

For each quantum call it runs what the pipeline sends to a `dm:` backend with shots, and returns
the mean of what the measure stage would estimate from the counts:

  1. the call's gate list as a circuit with its weights left free (ParameterVector "w" standing
     for phi(w), circuits/templates.py `trainable_circuit`), transpiled once per structure for the
     device with the pipeline's own pass manager (pipeline/compile.py, optimization level and
     seed of the job spec's defaults), observables mapped through the layout;
  2. one measured circuit per qubit-wise-commuting group (pipeline/measure.py), compacted onto the
     active qubits with the device's Aer noise on them (backends/dm.py, backends/aer.py);
  3. exact outcome distributions from the batched density-matrix engine (backends/dmsim.py:
     gate noise, thermal relaxation, readout error), then each Pauli's parity sum. Rows are
     (phi(w) broadcast, inputs) in torch, so gradients reach both.

QLAM's memory readout after step t is the t-step prefix circuit, each transpiled on its own, as
the pipeline runs it (segment = 0). With `shots`, a multinomial sample replaces each distribution
in the forward pass and the exact distribution carries the gradient (straight-through: the value
is what a device would return, its expectation is the noisy mean).

The one difference from the pipeline: the pipeline transpiles templates with the weights bound to
numbers, so the transpiler may merge a weight rotation with its neighbours or drop it when its
angle is a multiple of 2 pi; here the weights are free, so those single-qubit gates are kept as
they are. Two-qubit gates, routing and readout are the same; the single-qubit gate counts (and so
their small errors) can differ. tests/test_noisy.py holds this evaluator equal to the dm: backend
on its own ISA circuits (weights bound) and measures the gap to the pipeline's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from qssm.backends import dmsim
from qssm.backends.aer import active_qubits, compact
from qssm.backends.dm import DensityMatrixBackend
from qssm.backends.noise import Noise
from qssm.circuits.templates import trainable_circuit
from qssm.models.evaluator import QuantumCall
from qssm.models.statevector import phi
from qssm.pipeline.compile import CompileOptions, compile_circuit
from qssm.pipeline.measure import (
    identity_constants,
    measurement_groups,
    parity_masks,
    with_measurement,
)


@dataclass
class _Structure:
    """One transpiled, compiled sub-circuit structure (independent of the weights' values)."""

    shared: object  # dmsim Shared (several groups) or Program (one)
    signs: list[torch.Tensor]  # per group: (2^m, K) parity sign times coefficient
    constant: torch.Tensor  # (K,) identity terms
    n_w: int
    columns: torch.Tensor  # ISA parameter -> column of the logical row (phi(w)..., x...)
    isa: object  # the ISA circuit (full device width), for tests and reports
    observables: list  # mapped onto the ISA circuit's qubits
    groups: list  # the measure stage's groups
    measured: list  # the compacted measured circuits
    active: tuple[int, ...]
    metrics: dict


def _sign_matrices(observables, groups) -> tuple[list[np.ndarray], np.ndarray]:
    k = len(observables)
    constant = identity_constants(observables)
    mats = []
    for g, rows in zip(groups, parity_masks(observables, groups)):
        idx = np.arange(2 ** len(g.support))
        m = np.zeros((len(idx), k))
        for i, _, mask, coef in rows:
            m[:, i] += coef.real * (1.0 - 2.0 * (np.bitwise_count(idx & mask) & 1))
        mats.append(m)
    return mats, constant


class NoisyEvaluator:
    """Expectation values of a model's quantum calls under `device`'s noise (module docstring).

    device: a fake IBM device ("fake_fez") or a Braket snapshot, as for `dm:`.
    noise: False keeps the transpiled circuits and measurement but runs them without noise
        (equal to the exact simulator up to float rounding).
    shots: 0 = the exact noisy mean; > 0 = a multinomial sample per row in the forward pass.
    """

    def __init__(self, device: str = "fake_fez", *, noise: bool = True, shots: int = 0, seed: int = 0,
                 optimization_level: int = 2, seed_transpiler: int = 7):
        self.backend = DensityMatrixBackend(device)
        self.device = device
        self.noisy = noise
        self.shots = int(shots)
        self.options = CompileOptions(optimization_level, seed_transpiler)
        self.rng = np.random.default_rng(seed)
        self.round_trips = 0
        self._structures: dict[tuple, _Structure] = {}

    # ---- compile once per structure ------------------------------------------------------------

    def structure(self, call: QuantumCall, steps: int = 0) -> _Structure:
        key = (call.ops, call.n_qubits, tuple(call.observables), int(call.weights.numel()), steps)
        if key not in self._structures:
            self._structures[key] = self._build(call, steps)
        return self._structures[key]

    def _build(self, call: QuantumCall, steps: int) -> _Structure:
        n_w = int(call.weights.numel())
        circuit = trainable_circuit(call.name, call.ops, call.n_qubits, n_w, steps)
        compiled = compile_circuit(circuit, tuple(call.observables), self.backend, self.options, circuit.name)
        groups = measurement_groups(compiled.observables)
        measured = [with_measurement(compiled.circuit, g) for g in groups]
        active = tuple(sorted(set().union(*(active_qubits(c) for c in measured))))
        small = [compact(c, active=active)[0] for c in measured]
        noise = self.backend.noise(active) if self.noisy else Noise(len(active))
        if len(small) > 1:
            program = dmsim.compile_many(small, noise)
        else:
            program = dmsim.compile_circuit(small[0], noise)
        signs, constant = _sign_matrices(compiled.observables, groups)
        logical = {p.name: i for i, p in enumerate(circuit.parameters)}
        columns = torch.as_tensor([logical[p.name] for p in small[0].parameters], dtype=torch.long)
        return _Structure(program, [torch.as_tensor(s) for s in signs], torch.as_tensor(constant), n_w, columns,
                          compiled.circuit, compiled.observables, groups, small, active, compiled.metrics)

    # ---- evaluate ------------------------------------------------------------------------------

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        self.round_trips += 1
        return [self._sequential(c) if c.sequential else self._stateless(c) for c in calls]

    def _stateless(self, call: QuantumCall) -> torch.Tensor:
        flat = call.inputs.reshape(-1, call.inputs.shape[-1])
        out = self.values(self.structure(call), call.weights, flat)
        return out.reshape(*call.inputs.shape[:-1], out.shape[-1]).to(call.inputs.dtype)

    def _sequential(self, call: QuantumCall) -> torch.Tensor:
        b, t, k = call.inputs.shape
        outs = [self.values(self.structure(call, j), call.weights, call.inputs[:, :j].reshape(b, j * k))
                for j in range(1, t + 1)]
        return torch.stack(outs, 1).to(call.inputs.dtype)

    def values(self, s: _Structure, weights: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """(N, K) expectation values for input rows (N, n_x); identical rows are simulated once
        (QMamba's first layer depends on the token only), their gradients summed."""
        x = inputs.to(torch.float64)
        uniq, inverse = torch.unique(x.detach(), dim=0, return_inverse=True)
        first = torch.full((len(uniq),), len(x), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(len(x)), reduce="amin")
        x = x[first]
        w = phi(weights.to(torch.float64)).reshape(1, -1).expand(len(x), -1)
        rows = torch.cat([w, x], 1)[:, s.columns]
        if isinstance(s.shared, dmsim.Shared):
            probs = dmsim.outcome_probabilities_many(s.shared, rows)
        else:
            probs = [dmsim.outcome_probabilities(s.shared, rows)]
        out = s.constant.expand(len(x), -1)
        for p, sign in zip(probs, s.signs):
            out = out + self._sampled(p) @ sign
        return out[inverse]

    def _sampled(self, p: torch.Tensor) -> torch.Tensor:
        if not self.shots:
            return p
        q = p.detach().cpu().numpy().clip(0, None)
        counts = self.rng.multinomial(self.shots, q / q.sum(1, keepdims=True))
        return p + (torch.as_tensor(counts, dtype=p.dtype) / self.shots - p).detach()
