"""Two-qubit gates and swaps per circuit after transpilation: ring vs chain entanglers.

    python -m bench.experiments.entanglers [--json out.json] [--levels 2] [--steps 1,4]

For every QLAM checkpoint given (default: qlam-digits and qlam-digits-chain when present) the
memory template of k steps is transpiled with qssm.pipeline.compile.transpile (preset pass
manager, seed 0) on FakeFez, FakeSherbrooke and the Braket snapshots (IQM Garnet, Rigetti
Ankaa-3); per-step numbers are the k-step circuit's count divided by k. QMamba's four 4-qubit
sub-circuits (A, B, C, Delta) are measured for the ring and the chain pattern of the same config.
Gate counts depend on the gate list, not on the trained values (unless an angle is exactly 0), so
a config without a checkpoint is measured with seeded random weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from bench.harness import ROOT
from qssm.backends.devices import device_target
from qssm.backends.fake_devices import fake_backend
from qssm.circuits.templates import memory_template, subcircuit_template
from qssm.models import checkpoint
from qssm.models.registry import build_model, preset
from qssm.pipeline.compile import CompileOptions, transpile
from qssm.pipeline.metrics import two_qubit_count

TARGETS = ("fake_fez", "fake_sherbrooke", "iqm_garnet", "rigetti_ankaa3")


def target(name: str):
    return fake_backend(name).target if name.startswith("fake_") else device_target(name)


def model_for(name: str, pattern: str | None = None):
    path = ROOT / "checkpoints" / f"{name}.safetensors"
    if path.is_file() and pattern is None:
        return checkpoint.load(path)[0], "checkpoint"
    cfg = preset(name).config
    if pattern is not None:
        cfg = dataclasses.replace(cfg, pattern=pattern)
    torch.manual_seed(0)
    return build_model(cfg).eval(), "random weights"


def measure(circuit, tname: str, level: int) -> dict:
    isa, swaps = transpile(circuit, target(tname), CompileOptions(optimization_level=level))
    return {"two_qubit": two_qubit_count(isa), "swaps": swaps, "depth": isa.depth(), "logical_two_qubit":
            two_qubit_count(circuit)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qlam", default="qlam-digits,qlam-digits-chain")
    ap.add_argument("--steps", default="1,4")
    ap.add_argument("--levels", default="2")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    steps = [int(s) for s in args.steps.split(",")]
    levels = [int(s) for s in args.levels.split(",")]
    targets = args.targets.split(",")
    for name in args.qlam.split(","):
        model, source = model_for(name)
        call = model.memory_call(torch.zeros(1, 1, model.cfg.input_dim))
        for k in steps:
            qc = memory_template(call, k).circuit
            for level in levels:
                for t in targets:
                    m = measure(qc, t, level)
                    rows.append({"model": name, "pattern": model.cfg.pattern, "weights": source, "circuit": f"memory k={k}",
                                 "steps": k, "target": t, "level": level, **m,
                                 "two_qubit_per_step": m["two_qubit"] / k, "swaps_per_step": m["swaps"] / k})
    for pattern in ("ring", "chain"):
        model, source = model_for("qmamba-haystack", pattern)
        for call in model.layers[0].calls(torch.zeros(1, model.cfg.d_model)):
            for level in levels:
                for t in targets:
                    m = measure(subcircuit_template(call).circuit, t, level)
                    rows.append({"model": "qmamba-haystack", "pattern": pattern, "weights": source, "circuit": call.name,
                                 "steps": 1, "target": t, "level": level, **m,
                                 "two_qubit_per_step": m["two_qubit"], "swaps_per_step": m["swaps"]})
    print(f"{'model':20} {'pattern':7} {'circuit':14} {'target':16} lvl {'logical2q':>9} {'2q':>5} {'swaps':>5} "
          f"{'2q/step':>8} {'swaps/step':>10} {'depth':>6}")
    for r in rows:
        print(f"{r['model']:20} {r['pattern']:7} {r['circuit']:14} {r['target']:16} {r['level']:3} "
              f"{r['logical_two_qubit']:9} {r['two_qubit']:5} {r['swaps']:5} {r['two_qubit_per_step']:8.1f} "
              f"{r['swaps_per_step']:10.1f} {r['depth']:6}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
