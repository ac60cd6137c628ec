"""Export a model's templates as OpenQASM 3 and QPY, with a manifest (name, hash, qubits, inputs,
observables) so that other tools can run the exact circuits qssm runs.

Per template, two OpenQASM 3 files of the same program in the gates rx, ry, rz, cz and h; they differ
only in one line:
  <name>.qasm         standard OpenQASM 3: `include "stdgates.inc";` (qiskit.qasm3.loads reads it as
                      written, as does any tool that follows the language's standard library)
  <name>.braket.qasm  no include: Braket knows these gates as built-ins, and its interpreter opens an
                      include as a file. Defining the gates inside the file instead (from U and ctrl @)
                      parses in both, but Braket's LocalSimulator then gives wrong values: its
                      controlled gates act wrongly on some qubit pairs (ctrl @ U(0, 0, pi) on q[1], q[3]
                      of a 4-qubit register; tests/test_circuits.py keeps the case).
templates.qpy holds the same circuits, lossless, for Qiskit. Both formats name everything the same
way: a template is its manifest `name` (QPY circuit name, file stem), and input i of the vector `x`
is the parameter `x_<i>` zero-padded (x_00, x_01, ...), so that sorting by name (Qiskit's parameter
order) is the input order in both.

Observables in the manifest are Pauli labels in Qiskit's order: the rightmost character acts on qubit
0 (q[0] in the OpenQASM), the leftmost on the highest qubit.
"""

from __future__ import annotations

import json
from pathlib import Path

from qiskit import QuantumCircuit, qasm3, qpy, transpile
from qiskit.circuit import Parameter

from qssm.circuits.templates import model_templates
from qssm.errors import QssmError

QASM_GATES = ("rx", "ry", "rz", "cz", "h")  # in stdgates.inc and built into Braket's OpenQASM
PAULI_ORDER = "Qiskit order: the rightmost character acts on qubit 0 (q[0] in the OpenQASM files)"


def named_inputs(circuit: QuantumCircuit) -> QuantumCircuit:
    """The circuit with each vector input v[i] renamed v_<i> (zero-padded per vector): names that
    OpenQASM accepts and that sort, as Qiskit sorts parameters, in input order."""
    sizes: dict[str, int] = {}
    for p in circuit.parameters:
        vector = getattr(p, "vector", None)
        if vector is None:
            raise QssmError(f"template {circuit.name} has a parameter {p.name} outside a ParameterVector")
        sizes[vector.name] = len(vector)
    width = {name: len(str(n - 1)) for name, n in sizes.items()}
    return circuit.assign_parameters(
        {p: Parameter(f"{p.vector.name}_{p.index:0{width[p.vector.name]}d}") for p in circuit.parameters})


def to_qasm(circuit: QuantumCircuit, braket: bool = False) -> str:
    """OpenQASM 3 in QASM_GATES only (cx becomes h cz h); standard (with stdgates.inc) or for Braket."""
    native = transpile(named_inputs(circuit), basis_gates=list(QASM_GATES), optimization_level=0)
    if braket:
        return qasm3.dumps(native, includes=(), basis_gates=QASM_GATES)
    return qasm3.dumps(native)  # Qiskit's default: include "stdgates.inc"


def export_model(model, out: str | Path) -> list[dict]:
    if not getattr(model.cfg, "quantum", False):
        raise QssmError(f"{model.cfg.kind} checkpoint is a classical baseline with no circuits; export a quantum one")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    templates = model_templates(model)
    manifest, circuits = [], []
    for t in templates:
        circuit = named_inputs(t.circuit)
        circuit.name = t.name
        circuits.append(circuit)
        (out / f"{t.name}.qasm").write_text(to_qasm(t.circuit))
        (out / f"{t.name}.braket.qasm").write_text(to_qasm(t.circuit, braket=True))
        manifest.append(
            dict(name=t.name, hash=t.hash, qubits=t.circuit.num_qubits, inputs=t.n_inputs,
                 depth=t.circuit.depth(), observables=list(t.observables), qasm3=f"{t.name}.qasm",
                 qasm3_braket=f"{t.name}.braket.qasm", parameters=[p.name for p in circuit.parameters]))
    with open(out / "templates.qpy", "wb") as f:
        qpy.dump(circuits, f)
    (out / "manifest.json").write_text(json.dumps({"qpy": "templates.qpy", "pauli_order": PAULI_ORDER,
                                                   "templates": manifest}, indent=2))
    return manifest
