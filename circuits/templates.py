"""Qiskit templates built from the models' gate lists (models/ansatz.py).

A template is one quantum sub-circuit with its trained weights bound (phi(w) = pi tanh(w) applied)
and its per-token inputs left as the ParameterVector "x". QLAM segment templates that start from a
re-prepared state also carry the preparation angles as ParameterVector "p" (Moettoenen's exact
preparation, or the shallow chain ansatz of circuits/shallow_prep.py), and classical-shadow
templates end in a per-qubit basis rotation with angles "v"; Qiskit sorts circuit parameters by
name, so a parameter row is (p..., v..., x...) in that order.

Templates are built from the same Op lists the torch simulator runs, so the two cannot disagree
about which gate goes where; tests hold them equal to 1e-6.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import ParameterVector

from qssm.circuits.shallow_prep import hea_circuit, n_hea_params
from qssm.circuits.stateprep import n_prep_params, prep_circuit
from qssm.models.ansatz import Op, n_inputs
from qssm.models.evaluator import QuantumCall
from qssm.models.statevector import phi
from qssm.types import Template


def append_ops(qc: QuantumCircuit, ops: tuple[Op, ...], angles, x, first_input: int = 0) -> None:
    """Append a gate list: inputs bind x[first_input + index], weights use the re-mapped `angles`
    (numbers, or a ParameterVector "w" standing for phi(w) in trainable templates)."""
    free = isinstance(angles, ParameterVector)
    for op in ops:
        if op.src == "in":
            getattr(qc, op.gate)(x[first_input + op.index], *op.qubits)
        elif op.src == "w":
            getattr(qc, op.gate)(angles[op.index] if free else float(angles[op.index]), *op.qubits)
        else:
            getattr(qc, op.gate)(*op.qubits)


@lru_cache(maxsize=256)
def trainable_circuit(name: str, ops: tuple[Op, ...], n: int, n_w: int, steps: int = 0) -> QuantumCircuit:
    """A sub-circuit with its weights left free, for training against a device's noise
    (pipeline/noisy.py): ParameterVector "w" (the re-mapped angles phi(w), n_w of them) and inputs
    "x". steps = 0: a stateless sub-circuit reading x[0..n_in); steps = k >= 1: k QLAM memory
    steps from |0..0>, step j reading x[j*n_in ..). Qiskit orders parameters by name: a row is
    (phi(w)..., x...). The same gate list as the bound templates, so binding w gives their circuit."""
    w = ParameterVector("w", n_w)
    k = n_inputs(list(ops))
    x = ParameterVector("x", k * max(steps, 1))
    qc = QuantumCircuit(n, name=(name.replace(".", "_") + (f"_k{steps}" if steps else "")))
    for j in range(max(steps, 1)):
        append_ops(qc, ops, w, x, j * k)
    return qc


def template_hash(circuit: QuantumCircuit, observables: tuple[str, ...]) -> str:
    """Content hash: the circuit's OpenQASM 3 text (angles printed exactly) plus the observables."""
    text = qasm3.dumps(circuit) + "\n" + ",".join(observables)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _weights_key(call: QuantumCall) -> bytes:
    return call.weights.detach().double().numpy().tobytes()


@lru_cache(maxsize=256)
def _subcircuit(name: str, ops: tuple[Op, ...], n: int, wbytes: bytes, observables: tuple[str, ...]) -> Template:
    angles = phi_np(np.frombuffer(wbytes).copy())
    x = ParameterVector("x", n_inputs(list(ops)))
    qc = QuantumCircuit(n, name=name.replace(".", "_"))
    append_ops(qc, ops, angles, x)
    return Template(name, qc, observables, template_hash(qc, observables))


def phi_np(w: np.ndarray) -> np.ndarray:
    return phi(torch.as_tensor(w, dtype=torch.float64)).numpy()


def trainable_template(call: QuantumCall) -> Template:
    """A stateless sub-circuit with its weights free ("w" = phi(w), then inputs "x"): what device
    gradients shift (pipeline/gradients.py)."""
    circuit = trainable_circuit(call.name, call.ops, call.n_qubits, int(call.weights.numel()))
    return Template(f"{call.name}.trainable", circuit, tuple(call.observables),
                    template_hash(circuit, tuple(call.observables)))


def subcircuit_template(call: QuantumCall) -> Template:
    """A stateless sub-circuit (QMamba A/B/C/Delta of one layer): inputs x[0..n_in)."""
    return _subcircuit(call.name, call.ops, call.n_qubits, _weights_key(call), tuple(call.observables))


def memory_template(
    call: QuantumCall, steps: int, prepared: bool | str = False, observables: tuple[str, ...] | None = None,
    basis: bool = False,
) -> Template:
    """QLAM: `steps` memory steps from |0..0> or from a prepared state; step j reads inputs
    x[j*n_in .. (j+1)*n_in). `prepared`: False, True / "mottonen" (exact preparation) or "hea<L>"
    (the shallow chain ansatz with L layers). `basis`: end in a per-qubit basis rotation RZ(v[2q+1])
    RY(v[2q]) (classical shadows: every row picks its own Pauli basis, the circuit measures Z)."""
    obs = tuple(call.observables if observables is None else observables)
    kind = "mottonen" if prepared is True else (prepared or "")
    return _memory(call.name, call.ops, call.n_qubits, _weights_key(call), steps, kind, obs, basis)


def prep_kind_params(kind: str, n: int) -> int:
    """Parameters of a preparation kind ("mottonen" or "hea<L>") on n qubits."""
    if kind == "mottonen":
        return n_prep_params(n)
    return n_hea_params(n, int(kind[3:]))


def _prep(kind: str, n: int) -> QuantumCircuit:
    p = ParameterVector("p", prep_kind_params(kind, n))
    return prep_circuit(n, p) if kind == "mottonen" else hea_circuit(n, int(kind[3:]), p)


@lru_cache(maxsize=256)
def _memory(name, ops, n, wbytes, steps, prep, observables, basis=False) -> Template:
    angles = phi_np(np.frombuffer(wbytes).copy())
    k = n_inputs(list(ops))
    x = ParameterVector("x", k * steps)
    qc = QuantumCircuit(n, name=f"{name}_k{steps}")
    if prep:
        qc.compose(_prep(prep, n), inplace=True)
    for j in range(steps):
        append_ops(qc, ops, angles, x, j * k)
    if basis:
        v = ParameterVector("v", 2 * n)
        for q in range(n):
            qc.rz(v[2 * q + 1], q)
            qc.ry(v[2 * q], q)
    tag = f"{name}.k{steps}" + {"": "", "mottonen": ".prep"}.get(prep, f".{prep}") + (".shadow" if basis else "")
    return Template(tag, qc, observables, template_hash(qc, observables))


def model_templates(model) -> list[Template]:
    """Every quantum sub-circuit template of a model (for export and compile reports): QMamba's
    A/B/C/Delta per layer; QLAM's one-step circuit and a prepared two-step segment."""
    dtype = next(model.parameters()).dtype  # float32 as trained, float64 after .double()
    if not model.splits:  # QMamba: every layer's A/B/C/Delta
        x = torch.zeros(1, model.cfg.d_model, dtype=dtype)
        return [subcircuit_template(c) for layer in model.layers for c in layer.calls(x)]
    call = model.memory_call(torch.zeros(1, 1, model.cfg.input_dim, dtype=dtype))
    return [memory_template(call, 1), memory_template(call, 2, prepared=True)]
