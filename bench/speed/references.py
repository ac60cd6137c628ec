"""The reference implementations the speed suite's exact-inference rows (c1-c4) compare qssm
against: the model's sub-circuits as PennyLane TorchLayers, and a hand-fused batched statevector
floor; plus the recorder that captures a model's quantum calls to replay them in isolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qssm.models.evaluator import ExactEvaluator, QuantumCall, z_labels
from qssm.models.statevector import compile_ops, phi, rotation_matrix, z_expectations

# ---- capturing a model's quantum calls ------------------------------------------------------


class RecordingEvaluator:
    """Answers exactly (torch statevector) and keeps every call, to replay circuits in isolation."""

    def __init__(self) -> None:
        self.inner = ExactEvaluator()
        self.calls: list[QuantumCall] = []

    def evaluate(self, calls):
        self.calls += list(calls)
        return self.inner.evaluate(calls)


@torch.no_grad()
def record_calls(model, tokens: torch.Tensor) -> list[QuantumCall]:
    rec = RecordingEvaluator()
    model(tokens, rec)
    return rec.calls


# ---- PennyLane: the same circuits as TorchLayers --------------------------------------------


class PennyLaneEvaluator:
    """The model's sub-circuits as `qml.qnn.TorchLayer`s on default.qubit, built from the same gate
    lists (layer.ops[s]) and trained weights (phi(w) = pi tanh(w) inside the QNode). Plugged into the
    unchanged model through the Evaluator interface."""

    def __init__(self, model, device: str = "default.qubit"):
        import pennylane as qml  # the optional `bench` extra, slow to import: only rows c load it

        self.layers = {}
        for layer in model.layers:
            for s in model.cfg.SUBCIRCUITS:
                w = layer.qweights[s].detach().clone()
                qnode = self._qnode(qml, layer.ops[s], model.cfg.n_qubits, device)
                tl = qml.qnn.TorchLayer(qnode, {"weights": tuple(w.shape)})
                with torch.no_grad():  # the trained weights; TorchLayer casts them to the input dtype
                    tl.qnode_weights["weights"].copy_(w)
                self.layers[layer.name(s)] = tl
        self.round_trips = 0

    @staticmethod
    def _qnode(qml, ops, n: int, device: str):
        gates = {"rx": qml.RX, "ry": qml.RY, "rz": qml.RZ, "cz": qml.CZ, "cx": qml.CNOT}

        @qml.qnode(qml.device(device, wires=n), interface="torch")
        def circuit(inputs, weights):
            angles = math.pi * torch.tanh(weights)
            for op in ops:
                if op.src == "in":
                    gates[op.gate](inputs[..., op.index], wires=op.qubits[0])
                elif op.src == "w":
                    gates[op.gate](angles[op.index], wires=op.qubits[0])
                else:  # cx: control qubits[0], target qubits[1], as in the torch simulator
                    gates[op.gate](wires=list(op.qubits))
            return [qml.expval(qml.PauliZ(q)) for q in range(n)]

        return circuit

    def evaluate(self, calls: Sequence[QuantumCall]) -> list[torch.Tensor]:
        self.round_trips += 1
        out = []
        for call in calls:
            assert call.observables == z_labels(call.n_qubits), "PennyLane bench layer measures <Z_q> only"
            flat = call.inputs.reshape(-1, call.inputs.shape[-1])
            vals = self.layers[call.name](flat).to(call.inputs.dtype)
            out.append(vals.reshape(*call.inputs.shape[:-1], vals.shape[-1]))
        return out


# ---- the raw batched statevector floor ------------------------------------------------------


@dataclass
class FusedCircuits:
    """All sub-circuits of a forward pass as one stacked problem, for the arithmetic floor.

    Precondition (checked): every sub-circuit is one encoding layer (one input rotation per qubit,
    from |0..0>) followed by input-independent gates, which `compile_ops` fuses into one unitary U
    (QMamba with reupload = 1). The floor is then, per row: the encoded product state as a Kronecker
    product of n single-qubit states, one 2^n x 2^n complex matmul, |amp|^2 times the Z-sign table.
    U is precomputed once (weights are fixed at inference), so the floor excludes the weight fusion
    that qssm's evaluator redoes on every call.
    """

    unitaries: torch.Tensor  # (K, 2^n, 2^n)
    gates: list[str]  # encoding gate of qubit q (same for every sub-circuit)
    columns: torch.Tensor  # (K, n): input index feeding qubit q
    inputs: torch.Tensor  # (K, R, n_in) stacked angles
    n: int

    @classmethod
    def from_calls(cls, calls: Sequence[QuantumCall]) -> FusedCircuits:
        n = calls[0].n_qubits
        us, cols, gates = [], [], None
        for c in calls:
            prog = compile_ops(list(c.ops), n, phi(c.weights.detach()))
            enc, rest = prog.steps[:n], prog.steps[n:]
            ok = (all(s[0] == "in" for s in enc) and sorted(s[2] for s in enc) == list(range(n))
                  and len(rest) == 1 and rest[0][0] == "U" and c.observables == z_labels(n))
            if not ok:
                raise ValueError(f"{c.name}: the fused floor needs one encoding layer then one fused block")
            by_qubit = sorted(enc, key=lambda s: s[2])
            g = [s[1] for s in by_qubit]
            if gates not in (None, g):
                raise ValueError("the fused floor needs the same encoding gates in every sub-circuit")
            gates = g
            us.append(rest[0][1])
            cols.append([s[3] for s in by_qubit])
        inputs = torch.stack([c.inputs.detach().reshape(-1, c.inputs.shape[-1]) for c in calls])
        return cls(torch.stack(us), gates, torch.tensor(cols), inputs, n)

    def run(self) -> torch.Tensor:
        """(K, R, n) values <Z_q> for every sub-circuit and row, in one fused pass."""
        k = self.inputs.shape[0]
        theta = torch.gather(self.inputs, 2, self.columns[:, None, :].expand(-1, self.inputs.shape[1], -1))
        state = None
        for q in range(self.n):  # R(theta)|0> is the first column of the rotation matrix
            amp = rotation_matrix(self.gates[q], theta[..., q])[..., :, 0]  # (K, R, 2)
            # qubit q is bit q of the index: it becomes the more significant factor of the kron
            state = amp if state is None else (amp[..., :, None] * state[..., None, :]).reshape(k, -1, 2 ** (q + 1))
        return z_expectations(torch.bmm(state, self.unitaries.transpose(1, 2)), self.n)


def qssm_circuits(calls: Sequence[QuantumCall]) -> torch.Tensor:
    """qssm's circuit evaluation for the same calls (the ExactEvaluator: compile_ops, run_program,
    z_expectations per call), stacked like FusedCircuits.run()."""
    vals = ExactEvaluator().evaluate(calls)
    return torch.stack([v.reshape(-1, v.shape[-1]) for v in vals])
