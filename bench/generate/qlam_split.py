"""QLAM on noisy devices: what each lever buys (the README's table and the report's frontier).

    python -m bench.generate.qlam_split [--n 200] [--shots 4000] [--targets dm:fake_fez,...] [--rows a,b]
    python -m bench.generate.qlam_split --render      # the README table from bench/generate/qlam_split.json
    python -m bench.generate.qlam_split --frontier    # write qssm/app/qlam_frontier.json from it

Every row runs the whole pipeline (plan -> compile -> zne -> measure -> readout -> dispatch) on the
dm: backends: qssm's exact noisy density-matrix engine with the same noise as Aer's device models
(dm:fake_fez, dm:fake_sherbrooke) and as Braket's density-matrix simulator on the IQM Garnet snapshot
(dm:iqm_garnet), tested against both (tests/test_dmsim.py). One cell is spot-checked on aer:fake_fez.
Columns: accuracy +- its standard error over the n images, mean |logit - exact logit|, the largest
two-qubit gate count of any circuit sent, circuits and shots per image, and estimated QPU seconds per
image = sum over circuits of shots x (duration + 250 us repetition delay) / n. Hand-off rows also
record the fidelity of each hand-off's estimate to the exact state: of the physical (mixed) estimate,
<psi|rho|psi>, and of its dominant eigenvector (purification) or fitted pure state.
Results are appended to bench/generate/qlam_split.json as each run finishes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from qiskit.circuit import ParameterVector

from bench.harness import ROOT, job_spec, run_job
from qssm.app.auto import transpile_estimate
from qssm.backends.registry import get_backend
from qssm.circuits.shallow_prep import hea_circuit, n_hea_params
from qssm.circuits.stateprep import n_prep_params, prep_circuit
from qssm.circuits.templates import memory_template
from qssm.jobs.spec import parse_spec
from qssm.models import checkpoint
from qssm.models.evaluator import fused_program
from qssm.models.statevector import run_program
from qssm.models.tasks import first_test_examples
from qssm.pipeline.compile import CompileCache, CompileOptions, compile_circuit
from qssm.pipeline.metrics import instruction_properties, two_qubit_count
from qssm.pipeline.tomography import physical_state

OUT = Path(__file__).resolve().parent / "qlam_split.json"
REP_DELAY_US = 250.0  # IBM's default repetition delay; the same assumption for every target
RING, CHAIN = "qlam-digits", "qlam-digits-chain"
SHALLOW = {"prep": "shallow"}
FIT = {"tomography": "fit", "shadow_bases": 32}
BOTH = {"readout": True, "zne": True}
# name -> (checkpoint, [split], [mitigation], label)
ROWS = {
    "none": (RING, {}, {}, "ring entangler, one circuit (none)"),
    "chain": (CHAIN, {}, {}, "hardware-native chain, one circuit"),
    "seg4-mottonen-pauli": (RING, {"segment": 4}, {}, "segments of 4, Moettoenen + Pauli tomography"),
    "seg4-mottonen-pauli-mixed": (RING, {"segment": 4, "purify": False}, {}, "  same, purification off (mixture)"),
    "seg4-shallow-pauli": (RING, {"segment": 4, **SHALLOW}, {}, "segments of 4, shallow prep + Pauli tomography"),
    "seg4-shallow-shadows": (RING, {"segment": 4, **SHALLOW, "tomography": "shadows"}, {},
                             "segments of 4, shallow prep + shadows (64 bases, MoM)"),
    "seg4-shallow-fit": (RING, {"segment": 4, **SHALLOW, **FIT}, {}, "segments of 4, shallow prep + fit (32 bases)"),
    "seg2-shallow-fit": (RING, {"segment": 2, **SHALLOW, **FIT}, {}, "segments of 2, shallow prep + fit (32 bases)"),
    "seg2-shallow-fit-pr": (RING, {"segment": 2, **SHALLOW, **FIT, "purify_readout": True}, {},
                            "  same, readouts purified too"),
    "seg1-shallow-fit-pr": (RING, {"segment": 1, **SHALLOW, **FIT, "purify_readout": True}, {},
                            "segments of 1, shallow prep + fit, readouts purified"),
    "seg2-shallow-fit-mit": (RING, {"segment": 2, **SHALLOW, **FIT}, BOTH, "  same + readout + ZNE"),
    "ring-obp1": (RING, {"obp_steps": 1}, {}, "ring, OBP of the last step (weight <= 2)"),
    "chain-obp2": (CHAIN, {"obp_steps": 2, "obp_max_weight": 3}, {}, "chain, OBP of 2 steps (weight <= 3)"),
    "chain-mit": (CHAIN, {}, BOTH, "chain + readout + ZNE"),
    "chain-seg4-shallow-fit": (CHAIN, {"segment": 4, **SHALLOW, "prep_layers": 8, **FIT}, {},
                               "chain, segments of 4, shallow prep (8 layers) + fit"),
}
TARGETS = ("dm:fake_fez", "dm:fake_sherbrooke", "dm:iqm_garnet")
SPOT = ("aer:fake_fez", "chain")


class Costs:
    """Pipeline observer: what reached the backend, per circuit."""

    def __init__(self):
        self.max_two_qubit = 0
        self.qpu_seconds = 0.0

    def __call__(self, event) -> None:
        if event.stage != "dispatch":
            return
        for b in event.batches:
            if b.calibration is not None:
                dur = 5.0  # a readout calibration circuit: a measurement, about a microsecond on IBM
            else:
                dur = b.seconds_per_shot * 1e6
                self.max_two_qubit = max([self.max_two_qubit] + [two_qubit_count(c) for c in b.circuits])
            self.qpu_seconds += b.executions * (b.shots or 0) * (dur + REP_DELAY_US) * 1e-6


def exact_states(model, inputs, token: int) -> np.ndarray:
    call = model.memory_call(inputs)
    prog, state = fused_program(call), None
    for t in range(token):
        state = run_program(prog, call.inputs[:, t], state)
    return state.detach().numpy()


def handoff_fidelities(model, inputs, handoffs: list[dict]) -> dict:
    mixed, pure, prep = [], [], []
    for h in handoffs:
        psi = exact_states(model, inputs, h["token"])
        rho = physical_state(h["rho"])
        mixed += np.einsum("bi,bij,bj->b", psi.conj(), rho, psi).real.tolist()
        targets = h["targets"].reshape(len(psi), -1, psi.shape[1])
        pure += (np.abs(np.einsum("bi,bri->br", psi.conj(), targets)) ** 2).mean(1).tolist()
        prep += np.asarray(h["fidelity"]).tolist()
    return {"handoff_fidelity_mixed": float(np.mean(mixed)), "handoff_fidelity_purified": float(np.mean(pure)),
            "prep_fidelity_min": float(np.min(prep)), "prep_fidelity_mean": float(np.mean(prep))}


def run_row(name: str, target: str, n: int, shots: int) -> dict:
    ck, split, mitigation, label = ROWS[name]
    costs, seen = Costs(), []
    done = run_job(job_spec(ck, target, n, shots, split=split, mitigation=mitigation), [costs],
                   inspect=lambda ev: (setattr(ev, "keep_states", True), seen.append(ev)))
    r = done.report
    row = {"row": name, "label": label, "checkpoint": ck, "target": target, "n": r["n_examples"], "shots": shots,
           "split": split, "mitigation": mitigation, "accuracy": r["accuracy"], "accuracy_stderr": r["accuracy_stderr"],
           "exact_accuracy": r["exact_accuracy"], "logit_error_mean": r["logit_error_mean"],
           "max_two_qubit": costs.max_two_qubit, "circuits_per_image": r["executions"] / r["n_examples"],
           "shots_per_image": r["total_shots"] / r["n_examples"], "qpu_seconds_per_image": costs.qpu_seconds / r["n_examples"],
           "round_trips": r["round_trips"], "purity": r.get("mean_segment_purity"),
           "obp_truncation_bound": r.get("obp_truncation_bound"), "obp_terms": r.get("obp_terms"),
           "wall_seconds": done.seconds}
    if seen and seen[0].handoff_states:
        row.update(handoff_fidelities(done.job.model, done.job.data.inputs, seen[0].handoff_states))
    return row


def frontier(rows: list[dict]) -> list[dict]:
    """The measured points pipeline/auto.py predicts from: each row with the estimated success
    probability of its deepest circuit on its target (the transpilation estimate)."""

    out, caches = [], {}
    for r in rows:
        if r["target"].startswith("aer:"):
            continue
        spec = parse_spec({"model": {"checkpoint": str(ROOT / "checkpoints" / f"{r['checkpoint']}.safetensors")},
                           "split": r["split"]})
        ckpt = checkpoint.read(spec.checkpoint)
        model = ckpt.model.double()
        call = model.memory_call(first_test_examples(model.cfg.task, 2).inputs)
        choice = {"segment": spec.split.segment, "obp_steps": spec.split.obp_steps}
        cache = caches.setdefault(r["target"], CompileCache())
        s, _ = transpile_estimate(call, spec.split, choice, call.inputs.shape[1], get_backend(r["target"]),
                                  CompileOptions(2, 7), cache)
        out.append({k: r[k] for k in ("row", "label", "checkpoint", "target", "split", "mitigation", "accuracy",
                                      "accuracy_stderr", "exact_accuracy", "logit_error_mean", "max_two_qubit",
                                      "circuits_per_image", "shots_per_image", "qpu_seconds_per_image")}
                   | {"sha256": ckpt.sha256, "success_estimate": s})
    return out


def noise_budget(targets=TARGETS) -> list[dict]:
    """Per memory step and per hand-off preparation on each target: the error budget from the
    target's calibration (the same numbers the noise models are built from): 1 - prod(1 - e) over
    two-qubit gates, over one-qubit gates, and over the readout of the 6 measured qubits. Idle time
    costs nothing in these noise models (circuits are not scheduled: relaxation acts during gates),
    so the duration is shown beside them: a real device adds T1/T2 decay over it."""
    circuits = {}
    for ck in (RING, CHAIN):
        model = checkpoint.load(ROOT / "checkpoints" / f"{ck}.safetensors")[0].double()
        call = model.memory_call(torch.zeros(1, 1, model.cfg.input_dim, dtype=torch.float64))
        circuits[f"{ck} step"] = memory_template(call, 1).circuit
    circuits["Moettoenen prep"] = prep_circuit(6, ParameterVector("p", n_prep_params(6)))
    circuits["shallow prep (12 layers)"] = hea_circuit(6, 12, ParameterVector("p", n_hea_params(6, 12)))
    out = []
    for t in targets:
        backend = get_backend(t)
        for name, qc in circuits.items():
            c = compile_circuit(qc, ("Z" * 6,), backend, CompileOptions(2, 7))
            isa, index = c.circuit, {q: i for i, q in enumerate(c.circuit.qubits)}
            logs = {"2q": 0.0, "1q": 0.0}
            for inst in isa.data:
                props = instruction_properties(backend.target, inst.operation.name, tuple(index[q] for q in inst.qubits))
                if props is not None and props.error:
                    logs["2q" if inst.operation.num_qubits == 2 else "1q"] += math.log1p(-props.error)
            ro = sum(math.log1p(-(instruction_properties(backend.target, "measure", (q,)).error or 0)) for q in c.layout)
            out.append({"target": t, "circuit": name, "two_qubit": c.metrics["two_qubit"],
                        "error_2q": 1 - math.exp(logs["2q"]), "error_1q": 1 - math.exp(logs["1q"]),
                        "error_readout": 1 - math.exp(ro), "duration_us": c.metrics["duration_us"],
                        "success_estimate": c.metrics["success_probability"]})
    return out


def render(rows: list[dict]) -> str:
    head = ("| lever | target | accuracy | exact | logit err | 2q/circuit | circuits/img | shots/img | QPU s/img |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    order = {k: i for i, k in enumerate(ROWS)}
    for r in sorted(rows, key=lambda r: (order.get(r["row"], 99), r["target"])):
        lines.append(f"| {r['label'].strip()} | {r['target']} | {r['accuracy']:.3f} ± {r['accuracy_stderr']:.3f} | "
                     f"{r['exact_accuracy']:.3f} | {r['logit_error_mean']:.2f} | {r['max_two_qubit']} | "
                     f"{r['circuits_per_image']:.0f} | {r['shots_per_image']:.3g} | {r['qpu_seconds_per_image']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--shots", type=int, default=4000)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--spot", action="store_true", help="also the aer: spot check")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--frontier", action="store_true", help="write qssm/app/qlam_frontier.json from the results")
    ap.add_argument("--budget", action="store_true", help="print the per-step noise budget per target")
    args = ap.parse_args()
    done = json.loads(OUT.read_text()) if OUT.exists() else []
    if args.render:
        print(render(done))
        return
    if args.budget:
        rows = noise_budget()
        (OUT.parent / "qlam_noise_budget.json").write_text(json.dumps(rows, indent=1))
        print("| target | circuit | 2q gates | 2q error | 1q error | readout error | duration us | est. success |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['target']} | {r['circuit']} | {r['two_qubit']} | {r['error_2q']:.3f} | {r['error_1q']:.3f} | "
                  f"{r['error_readout']:.3f} | {r['duration_us']:.1f} | {r['success_estimate']:.3f} |")
        return
    if args.frontier:
        path = ROOT / "qssm" / "app" / "qlam_frontier.json"
        path.write_text(json.dumps(frontier(done), indent=1))
        print(f"wrote {path}")
        return
    torch.set_num_threads(1)
    jobs = [(row, t) for t in args.targets.split(",") for row in args.rows.split(",")]
    if args.spot:
        jobs.append((SPOT[1], SPOT[0]))
    for row, target in jobs:
        r = run_row(row, target, args.n, args.shots)
        done = [d for d in done if (d["row"], d["target"]) != (row, target)] + [r]
        OUT.write_text(json.dumps(done, indent=1))
        print(f"{row:<26}{target:<20}{r['accuracy']:.3f}±{r['accuracy_stderr']:.3f} exact {r['exact_accuracy']:.3f} "
              f"lerr {r['logit_error_mean']:.2f} 2q {r['max_two_qubit']} circ/img {r['circuits_per_image']:.0f} "
              f"qpu s/img {r['qpu_seconds_per_image']:.3g} F {r.get('handoff_fidelity_mixed')} {r.get('handoff_fidelity_purified')} "
              f"{r['wall_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
