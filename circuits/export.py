"""Export a model's templates as OpenQASM 3 and QPY, with a manifest (name, hash, qubits, inputs,
observables) so that other tools can run the exact circuits qssm runs."""

from __future__ import annotations

import json
from pathlib import Path

from qiskit import qasm3, qpy

from qssm.circuits.templates import model_templates
from qssm.errors import QssmError


def export_model(model, out: str | Path) -> list[dict]:
    if not getattr(model.cfg, "quantum", False):
        raise QssmError(f"{model.cfg.kind} checkpoint is a classical baseline with no circuits; export a quantum one")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    templates = model_templates(model)
    manifest = []
    for t in templates:
        stem = t.name.replace(".", "_")
        (out / f"{stem}.qasm").write_text(qasm3.dumps(t.circuit))
        manifest.append(
            dict(name=t.name, hash=t.hash, qubits=t.circuit.num_qubits, inputs=t.n_inputs,
                 depth=t.circuit.depth(), observables=list(t.observables), qasm3=f"{stem}.qasm")
        )
    with open(out / "templates.qpy", "wb") as f:
        qpy.dump([t.circuit for t in templates], f)
    (out / "manifest.json").write_text(json.dumps({"qpy": "templates.qpy", "templates": manifest}, indent=2))
    return manifest
