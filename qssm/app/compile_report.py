"""The transpilation report: every template of a model on every target, before any QPU time is
spent. Depth, two-qubit gates, routing swaps, duration and estimated success probability from the
target's calibration; the same with the template cut in two (cuts, sampling overhead)."""

from __future__ import annotations

import math

from qssm.backends.registry import pricing_backend
from qssm.circuits.templates import model_templates
from qssm.pipeline.compile import CompileCache, CompileOptions
from qssm.pipeline.cutting import cut_report


def compile_report(model, targets: list[str], options: CompileOptions, cuts: bool = True,
                   max_overhead: float = math.inf) -> list[dict]:
    templates = model_templates(model)
    rows = []
    for name in targets:
        backend = pricing_backend(name)  # real IBM devices: their snapshot, no credentials needed
        cache = CompileCache()
        for t in templates:
            row = {"target": name, "template": t.name, "logical_qubits": t.circuit.num_qubits,
                   "logical_depth": t.circuit.depth(), "inputs": t.n_inputs}
            if backend.target is None:
                ops = t.circuit.count_ops()
                row.update(depth=t.circuit.depth(), two_qubit=ops.get("cz", 0) + ops.get("cx", 0), swaps=0,
                           success_probability=1.0)
                rows.append(row)
                continue
            c = cache.get(t, backend, options)
            row.update({k: v for k, v in c.metrics.items()})
            if cuts and t.circuit.num_qubits > 1:
                rep = cut_report(t, backend, options, max_overhead, cache=cache)
                row.update({k: rep[k] for k in ("cuts", "sampling_overhead", "swaps_cut", "depth_cut", "within_budget",
                                                "success_probability_cut") if k in rep})
            rows.append(row)
    return rows
