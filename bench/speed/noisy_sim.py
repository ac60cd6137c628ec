"""Noisy simulation: backends/dmsim.py (the torch density-matrix engine) against the libraries it
replaces, measured side by side in one run.

    python -m bench.speed.noisy_sim [--bindings 128] [--repeats 3] [--json out.json]

(1) QMamba (qmamba-haystack) layer templates on FakeFez, compacted with qssm's noise model, N
    bindings: exact values (engine vs Aer's density-matrix EstimatorV2, one PUB per batch) and
    1000 shots (engine: exact distribution of each measurement group + multinomial draws; Aer:
    SamplerV2, one PUB per group with every binding, as backends/aer.py runs it).
(2) QLAM (qlam-digits) memory prefix templates k = 1..8 on FakeFez, 200 bindings each: exact values
    and 4000 shots of the X, Y, Z groups. The engine runs all of it; Aer (~0.1-0.4 s per binding
    here) runs a few bindings per k and is compared per binding.
(3) A QMamba template on the IQM Garnet snapshot (devices.device_noise; the engine runs
    devices.aer_noise_model, the same channels) vs LocalSimulator("braket_dm") as
    backends/braket.py runs it, per binding.

Medians over `--repeats` after one warm-up; compile times (once per template) are reported apart.
torch.set_num_threads(1) throughout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.primitives import EstimatorV2, SamplerV2

from bench.harness import ROOT, Row, check, environment, fmt_seconds, median, render, times
from qssm.backends import devices, dmsim
from qssm.backends.aer import active_noise_model, compact
from qssm.backends.fake_devices import fake_backend
from qssm.backends.noise import noise_from_aer
from qssm.backends.sampling import bitarray_outcomes, histograms
from qssm.circuits.templates import memory_template, model_templates
from qssm.models import checkpoint
from qssm.pipeline.compile import CompileCache, CompileOptions, compile_batch, transpile
from qssm.pipeline.measure import expectations, measurement_groups, parity_masks, with_measurement
from qssm.pipeline.plan import make_batch

# ---- circuits ------------------------------------------------------------------------------------


def _model(name: str):
    return checkpoint.load(ROOT / "checkpoints" / f"{name}.safetensors")[0]


def _compacted(template, target):
    """(circuit, observables, active physical qubits) of a template transpiled for `target` and
    compacted onto its active qubits, as backends/aer.py runs it."""
    isa, _ = transpile(template.circuit, target, CompileOptions(2, 7))
    obs = [SparsePauliOp(label).apply_layout(isa.layout) for label in template.observables]
    circuit, obs, active = compact(isa, obs)
    return circuit, obs, active


class Case:
    """One compacted template with its engine programs (compiled once, timed apart)."""

    def __init__(self, circuit, observables, noise_model):
        self.circuit, self.observables, self.model = circuit, observables, noise_model
        start = time.perf_counter()
        noise = noise_from_aer(noise_model, circuit.num_qubits)
        self.program = dmsim.compile_circuit(circuit, noise)
        self.groups = measurement_groups(observables)
        self.shared = dmsim.compile_many([with_measurement(circuit, g) for g in self.groups], noise)
        self.compile_seconds = time.perf_counter() - start

    # -- engine
    def exact(self, rows) -> np.ndarray:
        return dmsim.expectation_values(self.program, rows, self.observables).numpy()

    def sampled(self, rows, shots: int, seed: int) -> np.ndarray:
        probs = dmsim.outcome_probabilities_many(self.shared, rows)
        values = np.zeros((len(rows), len(self.observables)))
        for g, (p, masks) in enumerate(zip(probs, parity_masks(self.observables, self.groups))):
            freq = dmsim.sample_counts(p, shots, seed + g).numpy() / shots
            idx = np.arange(freq.shape[1])
            for i, _, mask, coef in masks:
                values[:, i] += coef.real * (freq @ (1.0 - 2.0 * (np.bitwise_count(idx & mask) & 1)))
        return values

    # -- Aer, as backends/aer.py runs it
    def _options(self):
        return {"backend_options": {"method": "density_matrix", "noise_model": self.model}}

    def aer_exact(self, rows) -> np.ndarray:
        res = EstimatorV2(options=self._options()).run([(self.circuit, [self.observables], rows[:, None, :])]).result()
        return np.asarray(res[0].data.evs).reshape(len(rows), -1)

    def aer_sampled(self, rows, shots: int, seed: int) -> np.ndarray:
        pubs = [(with_measurement(self.circuit, g), rows, shots) for g in self.groups]
        res = SamplerV2(options=self._options(), seed=seed).run(pubs).result()
        counts = [histograms(bitarray_outcomes(r.data.meas), len(g.support)) for r, g in zip(res, self.groups)]
        return expectations(counts, self.observables, self.groups, shots)[0]


def _rows(circuit, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, (n, circuit.num_parameters))


def _timed(fn, repeats: int) -> float:
    return median(times(fn, repeats, warmup=1))


# ---- the three measurements ------------------------------------------------------------------------


def qmamba_fez(bindings: int, repeats: int) -> tuple[list[Row], dict]:
    target = fake_backend("fake_fez").target
    cases = []
    for t in model_templates(_model("qmamba-haystack")):
        circuit, obs, active = _compacted(t, target)
        cases.append(Case(circuit, obs, active_noise_model("fake_fez", active)))
    rows = [_rows(c.circuit, bindings, seed=i) for i, c in enumerate(cases)]
    per = len(cases) * bindings
    err = max(np.abs(c.exact(r) - c.aer_exact(r)).max() for c, r in zip(cases, rows))
    ours = _timed(lambda: [c.exact(r) for c, r in zip(cases, rows)], repeats) / per
    aer = _timed(lambda: [c.aer_exact(r) for c, r in zip(cases, rows)], repeats) / per
    ours_s = _timed(lambda: [c.sampled(r, 1000, 1) for c, r in zip(cases, rows)], repeats) / per
    aer_s = _timed(lambda: [c.aer_sampled(r, 1000, 1) for c, r in zip(cases, rows)], repeats) / per
    compile_s = sum(c.compile_seconds for c in cases)
    what = f"QMamba {len(cases)} layer templates, FakeFez, {bindings} bindings"
    return [
        Row("1a", f"{what}, exact values", ours, aer, "s/binding", aer / ours, "Aer/engine", ">= 10",
            check(aer / ours, ">= 10"), f"Aer EstimatorV2 (density matrix, one PUB per batch); max |engine - Aer| "
            f"{err:.1e}; engine compile {compile_s:.2f} s once for all {len(cases)} templates"),
        Row("1b", f"{what}, 1000 shots", ours_s, aer_s, "s/binding", aer_s / ours_s, "Aer/engine", ">= 10",
            check(aer_s / ours_s, ">= 10"), "Aer SamplerV2, one PUB per measurement group with every binding"),
    ], {"compile_seconds": compile_s, "max_abs_error": err}


def qlam_fez(bindings: int, aer_bindings: int) -> tuple[list[Row], dict]:
    model = _model("qlam-digits")
    call = model.memory_call(torch.zeros(1, 1, model.cfg.input_dim))
    target = fake_backend("fake_fez").target
    engine = {"compile": 0.0, "exact": 0.0, "shots": 0.0}
    aer = {"exact": 0.0, "shots": 0.0}
    err, widths = 0.0, []
    for k in range(1, 9):
        circuit, obs, active = _compacted(memory_template(call, k), target)
        widths.append(circuit.num_qubits)
        case = Case(circuit, obs, active_noise_model("fake_fez", active))
        engine["compile"] += case.compile_seconds
        rows = _rows(circuit, bindings, seed=k)
        start = time.perf_counter()
        values = case.exact(rows)
        engine["exact"] += time.perf_counter() - start
        start = time.perf_counter()
        case.sampled(rows, 4000, k)
        engine["shots"] += time.perf_counter() - start
        few = rows[:aer_bindings]
        start = time.perf_counter()
        want = case.aer_exact(few)
        aer["exact"] += (time.perf_counter() - start) * bindings / aer_bindings
        start = time.perf_counter()
        case.aer_sampled(few, 4000, k)
        aer["shots"] += (time.perf_counter() - start) * bindings / aer_bindings
        err = max(err, np.abs(values[:aer_bindings] - want).max())
        print(f"  (2) k={k}: {circuit.num_qubits} qubits, {len(case.program.steps)} steps", file=sys.stderr, flush=True)
    total = engine["compile"] + engine["exact"] + engine["shots"]
    aer_total = aer["exact"] + aer["shots"]
    note = (f"8 templates x {bindings} bindings, exact values + 4000 shots (3 groups); engine: compile "
            f"{engine['compile']:.1f} s, exact {engine['exact']:.1f} s, shots {engine['shots']:.1f} s; Aer timed on "
            f"{aer_bindings} bindings per k and scaled to {bindings}; max |engine - Aer| {err:.1e}; "
            f"widths {sorted(set(widths))} qubits")
    return [Row("2", "QLAM memory prefixes k=1..8, FakeFez, whole run", total, aer_total, "s", aer_total / total,
                "Aer/engine", "engine < 60 s", total < 60, note)], {"engine": engine, "aer_scaled": aer,
                                                                   "max_abs_error": err}


def braket_garnet(bindings: int, repeats: int) -> tuple[list[Row], dict]:
    from qssm.backends.braket import BraketBackend  # braket's SDK: heavy, and only measurement (3) needs it

    template = model_templates(_model("qmamba-haystack"))[0]
    backend = BraketBackend("braket:local_dm:iqm_garnet")
    rows = _rows(template.circuit, bindings, seed=3)
    batch = compile_batch(make_batch(template, rows, None), backend, CompileOptions(2, 7), CompileCache())
    circuit, obs, active = compact(batch.circuit, batch.observables)
    case = Case(circuit, obs, devices.aer_noise_model("iqm_garnet", active))
    ro = np.array(devices.readout_errors("iqm_garnet", active))
    shrink = np.array([np.prod(1 - 2 * ro[np.flatnonzero(o.paulis.x[0] | o.paulis.z[0])]) for o in obs])

    def ours():  # readout flips scale each Pauli term, as backends/braket.py's exact path
        return case.exact(batch.parameters) * shrink

    err = np.abs(ours() - backend.evaluate(batch).values).max()
    mine = _timed(ours, repeats) / bindings
    theirs = _timed(lambda: backend.evaluate(batch), repeats) / bindings
    return [Row("3", f"QMamba template, IQM Garnet snapshot noise, {bindings} bindings, exact", mine, theirs,
                "s/binding", theirs / mine, "braket_dm/engine", ">= 100", check(theirs / mine, ">= 100"),
                f"LocalSimulator('braket_dm') with devices.device_noise; max |engine - braket| {err:.1e}; "
                f"{circuit.num_qubits} qubits")], {"max_abs_error": err}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindings", type=int, default=128, help="bindings per QMamba template in (1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--qlam-aer-bindings", type=int, default=4, help="bindings per k that Aer runs in (2)")
    ap.add_argument("--braket-bindings", type=int, default=8)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    env = environment(f"device cpu, float64, {args.repeats} repeats")
    rows, extra = [], {}
    for key, (fn, fargs) in {"1": (qmamba_fez, (args.bindings, args.repeats)),
                             "2": (qlam_fez, (200, args.qlam_aer_bindings)),
                             "3": (braket_garnet, (args.braket_bindings, args.repeats))}.items():
        start = time.perf_counter()
        got, extra[key] = fn(*fargs)
        rows += got
        print(f"  ({key}) done in {fmt_seconds(time.perf_counter() - start)}", file=sys.stderr, flush=True)
    print(render(rows, env))
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "rows": [r.__dict__ for r in rows],
                                               "extra": extra}, indent=1, default=float))


if __name__ == "__main__":
    main()
