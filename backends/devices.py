"""Braket QPU snapshots as data: device properties, Qiskit targets, noise models and prices.

backends/device_data/<short name>.json holds one GetDevice response per device (deviceArn,
deviceName, providerName, deviceCapabilities, ...; representative values, dated in "snapshot"),
plus "pricing" and "durations_s", which GetDevice does not return. Nothing here touches the network.

Targets are built here, not with qiskit_braket_provider's `aws_device_to_target`: that converter
needs a live AwsDevice (Rigetti's rx angle restrictions come from pulse gate calibrations fetched
over the network; without them it advertises rx at any angle), sets no durations, and drops IonQ's
fidelities (published as provider means, not standardized properties). The Qiskit<->Braket gate
correspondence is the provider's (its `to_braket` converts the circuits, see backends/braket.py):

    IQM      prx -> r(theta, phi), cz -> cz
    Rigetti  rx(+-pi/2), rx(pi) -> sx, sxdg, x (renamed back to rx before submission; rx at
             other angles is not native), rz -> rz (virtual: no error, no duration), iswap -> iswap
    IonQ     gpi, gpi2 -> qiskit_ionq GPIGate, GPI2Gate (angles in turns), zz -> rzz (radians).
             qiskit_ionq's equivalences are registered so the preset pass manager reaches them.

Physical qubit i of a target is the i-th smallest device qubit label (IQM counts from 1).
"""

from __future__ import annotations

import itertools
import json
import math
from functools import lru_cache
from pathlib import Path

from qiskit.circuit import Measure, Parameter
from qiskit.circuit.library import (
    CZGate,
    RGate,
    RXGate,
    RZGate,
    RZZGate,
    SXdgGate,
    SXGate,
    XGate,
    iSwapGate,
)
from qiskit.transpiler import InstructionProperties, Target
from qiskit_aer.noise import NoiseModel, ReadoutError, pauli_error
from qiskit_ionq import add_equivalences
from qiskit_ionq.ionq_gates import GPI2Gate, GPIGate

from qssm.errors import QssmError

DATA = Path(__file__).with_name("device_data")
_RX_SUBSTITUTES = {"sx": math.pi / 2, "sxdg": -math.pi / 2, "x": math.pi}  # Rigetti's fixed-angle rx


@lru_cache(maxsize=None)
def _snapshots() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}


def device_names() -> list[str]:
    return list(_snapshots())


def short_name(name_or_arn: str) -> str:
    snaps = _snapshots()
    if name_or_arn in snaps:
        return name_or_arn
    for short, doc in snaps.items():
        if doc["deviceArn"] == name_or_arn:
            return short
    raise QssmError(f"unknown Braket device {name_or_arn!r}; known snapshots: {', '.join(snaps)} "
                    "(or their ARNs)")


def load_device(name_or_arn: str) -> dict:
    """The snapshot (a GetDevice response plus pricing and durations) of a short name or ARN."""
    return _snapshots()[short_name(name_or_arn)]


@lru_cache(maxsize=None)
def capabilities(name: str):
    """deviceCapabilities parsed by the Braket schemas (validates the snapshot)."""
    from braket.schema_common import BraketSchemaBase

    return BraketSchemaBase.parse_raw_schema(json.dumps(load_device(name)["deviceCapabilities"]))


def provider(name: str) -> str:
    return load_device(name)["providerName"].lower()


def qubit_labels(name: str) -> list[int]:
    """Device qubit label of each target qubit (sorted labels)."""
    caps = load_device(name)["deviceCapabilities"]
    n = caps["paradigm"]["qubitCount"]
    std = caps.get("standardized") or {}
    labels = sorted(int(q) for q in std.get("oneQubitProperties", {})) or list(range(n))
    return labels


def edges(name: str) -> list[tuple[int, int]]:
    """Directed coupled pairs in target indices (both directions)."""
    conn = load_device(name)["deviceCapabilities"]["paradigm"]["connectivity"]
    labels = qubit_labels(name)
    n = len(labels)
    if conn["fullyConnected"]:
        return [(a, b) for a in range(n) for b in range(n) if a != b]
    pos = {q: i for i, q in enumerate(labels)}
    out = set()
    for a, nbrs in conn["connectivityGraph"].items():
        for b in nbrs:
            out |= {(pos[int(a)], pos[int(b)]), (pos[int(b)], pos[int(a)])}
    return sorted(out)


@lru_cache(maxsize=None)
def errors(name: str) -> dict:
    """{"1q": [error per qubit], "readout": [...], "2q": {(a, b): error}} from the fidelities."""
    doc = load_device(name)
    caps = doc["deviceCapabilities"]
    labels = qubit_labels(name)
    pairs = edges(name)
    std = caps.get("standardized")
    if std:
        one = std["oneQubitProperties"]

        def fid(q, kind):
            return next(f["fidelity"] for f in one[str(q)]["oneQubitFidelity"] if (f["fidelityType"]["name"] == "READOUT") == (kind == "readout"))

        e1 = [1 - fid(q, "gate") for q in labels]
        ro = [1 - fid(q, "readout") for q in labels]
        e2 = {}
        for key, props in std["twoQubitProperties"].items():
            a, b = (labels.index(int(q)) for q in key.split("-"))
            e = max(1 - f["fidelity"] for f in props["twoQubitGateFidelity"])
            e2[(a, b)] = e2[(b, a)] = e
        for p in pairs:  # couplers without a measurement: the device median
            e2.setdefault(p, sorted(e2.values())[len(e2) // 2])
    else:  # IonQ publishes means
        fid = caps["provider"]["fidelity"]
        e1 = [1 - fid["1Q"]["mean"]] * len(labels)
        ro = [1 - fid["spam"]["mean"]] * len(labels)
        e2 = {p: 1 - fid["2Q"]["mean"] for p in pairs}
    return {"1q": e1, "readout": ro, "2q": e2}


@lru_cache(maxsize=1)
def _ionq_gates():
    add_equivalences()  # once per process: session equivalences GPI/GPI2/ZZ <-> standard gates
    return GPIGate, GPI2Gate


def native_gates(name: str) -> tuple[list, list, list[str]]:
    """(1q Qiskit gates with error, 1q virtual gates, 2q Qiskit gates) for the device."""
    kind = provider(name)
    if kind == "iqm":
        return [RGate(Parameter("theta"), Parameter("phi"))], [], [CZGate()]
    if kind == "rigetti":
        return [SXGate(), SXdgGate(), XGate()], [RZGate(Parameter("lambda"))], [iSwapGate()]
    if kind == "ionq":
        gpi, gpi2 = _ionq_gates()
        return [gpi(Parameter("phi")), gpi2(Parameter("phi"))], [], [RZZGate(Parameter("theta"))]
    raise QssmError(f"no native gate map for provider {kind!r}")


@lru_cache(maxsize=None)
def device_target(name: str):
    """A Qiskit Target: native gates with errors and durations, readout errors on measure."""
    name = short_name(name)
    doc = load_device(name)
    err = errors(name)
    dur = doc["durations_s"]
    n = len(qubit_labels(name))
    one, virtual, two = native_gates(name)
    target = Target(description=f"{doc['providerName']} {doc['deviceName']} (qssm snapshot {doc['snapshot']['date']})",
                    num_qubits=n)
    for gate in one:
        target.add_instruction(gate, {(q,): InstructionProperties(error=err["1q"][q], duration=dur["1q"]) for q in range(n)})
    for gate in virtual:
        target.add_instruction(gate, {(q,): InstructionProperties(error=0.0, duration=0.0) for q in range(n)})
    for gate in two:
        target.add_instruction(gate, {p: InstructionProperties(error=e, duration=dur["2q"]) for p, e in err["2q"].items()})
    target.add_instruction(Measure(), {(q,): InstructionProperties(error=err["readout"][q], duration=dur["readout"])
                                       for q in range(n)})
    return target


def calibration(name: str) -> str:
    return load_device(name)["snapshot"]["date"]


def native_names(name: str) -> list[str]:
    return [op for op in device_target(name).operation_names if op != "measure"]


def to_braket_names(circuit):
    """Rigetti: sx / sxdg / x back to rx at its fixed native angles (other devices: unchanged)."""
    if not any(inst.operation.name in _RX_SUBSTITUTES for inst in circuit.data):
        return circuit
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        angle = _RX_SUBSTITUTES.get(inst.operation.name)
        out.append(RXGate(angle) if angle is not None else inst.operation, inst.qubits, inst.clbits)
    return out


def device_noise(name: str, active_qubits: tuple[int, ...] | list[int]):
    """Braket NoiseModel for the density-matrix simulator on the compacted qubits: qubit i is
    target qubit active_qubits[i]. Depolarizing on native gates with p from the average gate
    fidelity F (1q: p = 3(1-F)/2, 2q: p = 5(1-F)/4, the channel whose average fidelity is F),
    bit flips before measurement with the readout error. Rigetti's rz is virtual: noiseless."""
    from braket.circuits import Gate
    from braket.circuits.noise_model import GateCriteria, MeasureCriteria, NoiseModel
    from braket.circuits.noises import BitFlip, Depolarizing, TwoQubitDepolarizing

    kind = provider(name)
    gates1 = {"iqm": [Gate.PRx], "rigetti": [Gate.Rx], "ionq": [Gate.GPi, Gate.GPi2]}[kind]
    gates2 = {"iqm": [Gate.CZ], "rigetti": [Gate.ISwap], "ionq": [Gate.ZZ]}[kind]
    err = errors(name)
    nm = NoiseModel()
    active = list(active_qubits)
    for i, q in enumerate(active):
        if err["1q"][q] > 0:
            nm.add_noise(Depolarizing(min(0.75, 1.5 * err["1q"][q])), GateCriteria(gates1, qubits=i))
        if err["readout"][q] > 0:
            nm.add_noise(BitFlip(min(0.5, err["readout"][q])), MeasureCriteria(qubits=i))
    for i, a in enumerate(active):
        for j, b in enumerate(active):
            e = err["2q"].get((a, b))
            if i < j and e:
                nm.add_noise(TwoQubitDepolarizing(min(15 / 16, 1.25 * e)), GateCriteria(gates2, qubits=[(i, j), (j, i)]))
    return nm


def readout_errors(name: str, active_qubits) -> list[float]:
    err = errors(name)["readout"]
    return [err[q] for q in active_qubits]


def max_shots(name: str) -> int:
    return int(load_device(name)["deviceCapabilities"]["service"]["shotsRange"][1])


def program_set_limits(name: str) -> tuple[int, int] | None:
    """(maximumExecutables, maximumTotalShots) when the device runs OpenQASM program sets."""
    action = load_device(name)["deviceCapabilities"]["action"].get("braket.ir.openqasm.program_set")
    return (int(action["maximumExecutables"]), int(action["maximumTotalShots"])) if action else None


def price(name: str) -> dict:
    """The snapshot's Braket price (per task, per shot) with its source and the date it was read."""
    return dict(load_device(name)["pricing"])


def estimate_cost(name: str, tasks: int, shots: int) -> float:
    """USD for `tasks` quantum tasks (a program set is one task) and `shots` shots in total."""
    price = load_device(name)["pricing"]
    return tasks * price["per_task_usd"] + shots * price["per_shot_usd"]


# Braket gate names in device_noise's criteria -> the Qiskit instructions of ISA circuits for the device
_QISKIT_NAMES = {"PRx": ["r"], "Rx": ["rx", "sx", "sxdg", "x"], "GPi": ["gpi"], "GPi2": ["gpi2"],
                 "CZ": ["cz"], "ISwap": ["iswap"], "ZZ": ["rzz"]}


def aer_noise_model(name: str, active_qubits: tuple[int, ...] | list[int]):
    """The channels of `device_noise` as a qiskit-aer NoiseModel on the same compacted qubits, so
    that Aer and backends/dmsim.py run Braket-snapshot noise: each Depolarizing(p) becomes the
    Pauli error with the same probabilities (identity 1-p, every other Pauli p/(4^k-1)) after the
    same native gates, each BitFlip(p) before a measurement a readout error flipping the recorded
    bit with probability p (identical outcome statistics; a bit flip would also flip the
    post-measurement state, which only a later gate on that qubit could tell)."""
    from braket.circuits.noises import BitFlip, Depolarizing, TwoQubitDepolarizing

    model = NoiseModel(basis_gates=native_names(name))
    for instruction in device_noise(name, active_qubits).instructions:
        noise, criteria = instruction.noise, instruction.criteria.to_dict()
        qubit_sets = [q if isinstance(q, (tuple, list)) else (q,) for q in criteria["qubits"]]
        if isinstance(noise, BitFlip):
            p = noise.probability
            for (q,) in qubit_sets:
                model.add_readout_error(ReadoutError([[1 - p, p], [p, 1 - p]]), [q])
        elif isinstance(noise, (Depolarizing, TwoQubitDepolarizing)):
            k, p = noise.qubit_count, noise.probability
            labels = ["".join(t) for t in itertools.product("IXYZ", repeat=k)]
            error = pauli_error([(label, 1 - p if set(label) == {"I"} else p / (4**k - 1)) for label in labels])
            gates = [g for braket_gate in criteria["gates"] for g in _QISKIT_NAMES[braket_gate]]
            for qubits in qubit_sets:
                model.add_quantum_error(error, gates, list(qubits), warnings=False)
        else:
            raise QssmError(f"no Aer equivalent for Braket noise {noise!r}")
    return model
