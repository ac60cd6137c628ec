"""Transpilation metrics from an ISA circuit and its target's calibration data."""

from __future__ import annotations

import math

from qiskit import QuantumCircuit
from qiskit.transpiler import Target


def _props(target: Target, name: str, qubits: tuple[int, ...]):
    if name not in target.operation_names:
        return None
    try:
        return target[name].get(qubits)
    except (KeyError, TypeError):
        return None


def circuit_metrics(isa: QuantumCircuit, target: Target, measured: list[int], swaps: int | None = None) -> dict:
    """Depth, two-qubit gates, routing swaps, ASAP duration and the estimated success probability
    (product of (1 - error) over every gate and over the readout of the measured qubits)."""
    index = {q: i for i, q in enumerate(isa.qubits)}
    busy: dict[int, float] = {}
    log_success = 0.0
    two_qubit = 0
    active: set[int] = set()
    for inst in isa.data:
        name = inst.operation.name
        qargs = tuple(index[q] for q in inst.qubits)
        if name == "barrier":
            continue
        active.update(qargs)
        two_qubit += len(qargs) == 2
        props = _props(target, name, qargs)
        err = (props.error or 0.0) if props is not None else 0.0
        dur = (props.duration or 0.0) if props is not None else 0.0
        log_success += math.log1p(-min(err, 0.999999))
        start = max((busy.get(q, 0.0) for q in qargs), default=0.0)
        for q in qargs:
            busy[q] = start + dur
    readout = 0.0
    for q in measured:
        props = _props(target, "measure", (q,))
        if props is not None and props.error:
            readout += math.log1p(-min(props.error, 0.999999))
    return {
        "qubits": len(active),
        "depth": isa.depth(lambda inst: inst.operation.name != "barrier"),
        "two_qubit": two_qubit,
        "swaps": swaps,
        "duration_us": max(busy.values(), default=0.0) * 1e6,
        "success_probability": math.exp(log_success + readout),
        "layout": list(measured),
    }
