"""Export a model's templates as OpenQASM 3 and QPY, with a manifest (name, hash, qubits, inputs,
observables) so that other tools can run the exact circuits qssm runs.

The OpenQASM is written for Braket as it is: Braket's interpreter cannot read
`include "stdgates.inc"` and has no `cx`, but knows rx, ry, rz, cz and h as built-in gates, so the
templates are exported in exactly those gates with no include. (Defining the gates inside the file
from `U` parses everywhere, but Braket's local simulator then returns wrong values on programs of
the templates' length.) Qiskit reads the same text with `load_qasm`, which puts the standard
include back; templates.qpy is the lossless Qiskit copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from qiskit import QuantumCircuit, qasm3, qpy, transpile

from qssm.circuits.templates import model_templates
from qssm.errors import QssmError

QASM_GATES = ("rx", "ry", "rz", "cz", "h")  # built into Braket's OpenQASM and in stdgates.inc


def to_qasm(circuit: QuantumCircuit) -> str:
    """OpenQASM 3 in QASM_GATES only (cx becomes h cz h), no include: Braket runs it as it is."""
    native = transpile(circuit, basis_gates=list(QASM_GATES), optimization_level=0)
    return qasm3.dumps(native, includes=(), basis_gates=QASM_GATES)


def load_qasm(text: str) -> QuantumCircuit:
    """An exported program as a Qiskit circuit (its gates are the standard library's)."""
    return qasm3.loads(text.replace("OPENQASM 3.0;", 'OPENQASM 3.0;\ninclude "stdgates.inc";', 1))


def export_model(model, out: str | Path) -> list[dict]:
    if not getattr(model.cfg, "quantum", False):
        raise QssmError(f"{model.cfg.kind} checkpoint is a classical baseline with no circuits; export a quantum one")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    templates = model_templates(model)
    manifest = []
    for t in templates:
        stem = t.name.replace(".", "_")
        text = to_qasm(t.circuit)
        (out / f"{stem}.qasm").write_text(text)
        manifest.append(
            dict(name=t.name, hash=t.hash, qubits=t.circuit.num_qubits, inputs=t.n_inputs,
                 depth=t.circuit.depth(), observables=list(t.observables), qasm3=f"{stem}.qasm",
                 qasm3_inputs=re.findall(r"^input float\[64\] (\w+);", text, re.M))
        )
    with open(out / "templates.qpy", "wb") as f:
        qpy.dump([t.circuit for t in templates], f)
    (out / "manifest.json").write_text(json.dumps({"qpy": "templates.qpy", "templates": manifest}, indent=2))
    return manifest
