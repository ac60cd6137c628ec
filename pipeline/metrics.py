"""Transpilation metrics of an ISA circuit from its target's calibration data.

What `qssm compile` reports per template and target, before any QPU time is spent:

- depth and two-qubit gate count of the ISA circuit (barriers ignored);
- swaps inserted by routing. Routing passes (SabreLayout, which routes while it lays out, and the
  *Swap routing passes) leave explicit `swap` gates in the DAG; translation to the target's basis
  only happens afterwards. `SwapCounter` is a pass-manager callback that reads the swap count on
  the DAG after the last routing pass ran, so it is exact even when later optimization merges a
  swap with neighbouring gates. `extra_two_qubit` (ISA 2q count - logical 2q count) is the net
  routing cost after that optimization, reported beside it;
- duration: an ASAP schedule over the target's instruction durations (one pass over the gates,
  cheap), plus the final readout of the measured qubits;
- estimated success probability: the product of (1 - error) over every gate and over the readout
  of every measured qubit, from the target's InstructionProperties (a crude, optimistic fidelity
  proxy: no crosstalk, no idle decoherence);
- layout: the physical qubit that holds each logical qubit at the end of the circuit.
"""

from __future__ import annotations

import math

from qiskit import QuantumCircuit
from qiskit.transpiler import Target


class SwapCounter:
    """Pass-manager callback: swaps present right after routing (see module docstring)."""

    def __init__(self) -> None:
        self.swaps = 0

    def __call__(self, pass_, dag, **_) -> None:
        name = pass_.name()
        if name == "SabreLayout" or name.endswith("Swap"):
            self.swaps = dag.count_ops().get("swap", 0)


def two_qubit_count(circuit: QuantumCircuit) -> int:
    return sum(1 for inst in circuit.data if inst.operation.num_qubits == 2 and inst.operation.name != "barrier")


def instruction_properties(target: Target, name: str, qubits: tuple[int, ...]):
    """The target's InstructionProperties (error, duration) of `name` on `qubits`, or None."""
    if name not in target.operation_names:
        return None
    try:
        return target[name].get(qubits)
    except (KeyError, TypeError):
        return None


def _log1m(err: float | None) -> float:
    return math.log1p(-min(err, 0.999999)) if err else 0.0


def final_layout(isa: QuantumCircuit) -> list[int]:
    """Physical qubit holding each logical qubit at the end (identity for unlaid-out circuits)."""
    if isa.layout is None:
        return list(range(isa.num_qubits))
    return list(isa.layout.final_index_layout())


def circuit_metrics(
    isa: QuantumCircuit,
    target: Target,
    *,
    swaps: int | None = None,
    logical: QuantumCircuit | None = None,
    measured: list[int] | None = None,
) -> dict:
    """Depth, two-qubit gates, routing swaps, ASAP duration (us) and estimated success
    probability of `isa` on `target`. `swaps` comes from a SwapCounter during transpilation;
    `logical` (the circuit before transpiling) adds `extra_two_qubit`; `measured` defaults to the
    final layout of the logical qubits."""
    measured = final_layout(isa) if measured is None else list(measured)
    index = {q: i for i, q in enumerate(isa.qubits)}
    busy: dict[int, float] = {}
    log_success = 0.0
    active: set[int] = set()
    for inst in isa.data:
        op = inst.operation
        if op.name == "barrier":
            continue
        qargs = tuple(index[q] for q in inst.qubits)
        active.update(qargs)
        props = instruction_properties(target, op.name, qargs)
        log_success += _log1m(props.error if props is not None else None)
        if op.name == "delay":
            dur = float(op.duration or 0) * (target.dt or 0.0) if op.unit == "dt" else 0.0
        else:
            dur = (props.duration or 0.0) if props is not None else 0.0
        start = max((busy.get(q, 0.0) for q in qargs), default=0.0)
        for q in qargs:
            busy[q] = start + dur
    for q in measured:  # final readout: the backend appends a measurement on each measured qubit
        props = instruction_properties(target, "measure", (q,))
        if props is not None:
            log_success += _log1m(props.error)
            busy[q] = busy.get(q, 0.0) + (props.duration or 0.0)
    two_qubit = two_qubit_count(isa)
    out = {
        "qubits": len(active | set(measured)),
        "depth": isa.depth(lambda inst: inst.operation.name != "barrier"),
        "two_qubit": two_qubit,
        "swaps": swaps,
        "duration_us": max(busy.values(), default=0.0) * 1e6,
        "success_probability": math.exp(log_success),
        "layout": measured,
    }
    if logical is not None:
        out["extra_two_qubit"] = two_qubit - two_qubit_count(logical)
    return out
