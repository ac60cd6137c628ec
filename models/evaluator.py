"""The one interface through which a model runs its quantum sub-circuits.

A model never knows which backend answers: it hands a list of `QuantumCall`s to an evaluator and
gets expectation values back. One `evaluate` call is one round trip to a backend. The default,
`ExactEvaluator`, is the batched torch statevector simulator: exact and differentiable, used for
training and as the reference for every other backend.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from qssm.models.ansatz import Op
from qssm.models.statevector import (
    compile_ops,
    pauli_expectations,
    phi,
    run_program,
    z_expectations,
    zero_state,
)


@dataclass(frozen=True, eq=False)
class QuantumCall:
    """One sub-circuit evaluated on a batch of inputs.

    inputs has shape (..., n_in) for stateless circuits (every row independent) and (B, T, n_in)
    for `sequential` ones (QLAM memory: one state per sequence evolved along T, read out after
    every step). `weights` are raw trained parameters; phi() is applied by whoever builds the gates.
    """

    name: str
    ops: tuple[Op, ...]
    n_qubits: int
    weights: torch.Tensor
    inputs: torch.Tensor
    observables: tuple[str, ...]
    sequential: bool = False


def z_labels(n: int) -> tuple[str, ...]:
    """<Z_q> for q = 0..n-1, as Qiskit Pauli labels (qubit 0 rightmost)."""
    return tuple("".join("Z" if k == q else "I" for k in reversed(range(n))) for q in range(n))


class Evaluator(Protocol):
    def close(self) -> None:
        """Release what the evaluator holds (a backend's session or cluster client)."""

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        """Expectation values, one tensor of shape (..., n_observables) per call."""
        ...


_PROGRAMS: OrderedDict[tuple, object] = OrderedDict()


def fused_program(call: QuantumCall):
    """compile_ops fuses the weight-only gates into unitaries. At inference the weights are fixed,
    so the fused program is cached: re-fusing was 6.6 ms of an 8 ms QMamba layer call. The key is
    the weights' values (a copy of a few hundred bytes, about a microsecond), not their storage: a
    storage address and version can be reused by other weights after an in-place dtype round trip
    (model.float().double()), and a cache keyed on them returned another sub-circuit's program.
    Under autograd the program is rebuilt every call, as gradients need; so it is for weights on an
    accelerator, where reading their values for the key would cost a device-to-host copy per call."""
    w = call.weights
    if (torch.is_grad_enabled() and w.requires_grad) or w.device.type != "cpu":
        return compile_ops(list(call.ops), call.n_qubits, phi(w))
    key = (call.ops, call.n_qubits, w.dtype, tuple(w.shape), w.detach().cpu().numpy().tobytes())
    hit = _PROGRAMS.get(key)
    if hit is not None:
        _PROGRAMS.move_to_end(key)
        return hit
    prog = compile_ops(list(call.ops), call.n_qubits, phi(w))
    _PROGRAMS[key] = prog
    if len(_PROGRAMS) > 256:
        _PROGRAMS.popitem(last=False)
    return prog


class ExactEvaluator:
    """Exact expectation values from the torch statevector simulator (differentiable)."""

    def __init__(self) -> None:
        self.round_trips = 0

    def close(self) -> None:
        pass

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        self.round_trips += 1
        return [self._one(c) for c in calls]

    def _one(self, call: QuantumCall) -> torch.Tensor:
        prog = fused_program(call)
        if not call.sequential:
            flat = call.inputs.reshape(-1, call.inputs.shape[-1])
            out = self.expect(run_program(prog, flat), call)
            return out.reshape(*call.inputs.shape[:-1], out.shape[-1])
        b, t, _ = call.inputs.shape
        state = zero_state(b, call.n_qubits, call.inputs.dtype, call.inputs.device)
        outs = []
        for i in range(t):
            state = run_program(prog, call.inputs[:, i], state)
            outs.append(self.expect(state, call))
        return torch.stack(outs, dim=1)

    @staticmethod
    def expect(state: torch.Tensor, call: QuantumCall) -> torch.Tensor:
        if call.observables == z_labels(call.n_qubits):
            return z_expectations(state, call.n_qubits)
        return pauli_expectations(state, call.observables)
