"""The qssm benchmark: one table of ratios, every pair measured side by side in one run.

    python -m bench [--quick] [--json bench/speed/results.json] [--rows abcd]

Rows (the shipped QMamba checkpoint, checkpoints/qmamba-haystack.safetensors, throughout):
  a  compile reuse: the pipeline's compile stage (transpile each sub-circuit template once for
     FakeFez's target, bind T rows) vs transpiling every token's bound circuits, for T tokens of
     one QMamba layer (4 sub-circuits per token).
  b  noisy dry run: qssm's pipeline (run_inference on a fake-device Aer backend) vs one
     qiskit-ibm-runtime local-mode SamplerV2 job per binding; time per binding, same shots.
  c  exact inference: the model's torch statevector path vs PennyLane TorchLayers (default.qubit)
     plugged into the same model, and qssm's circuit evaluation vs a hand-fused arithmetic floor.
  d  QPU round trips per prefill and per generated token vs one round trip per binding.
  e  noisy dry runs on qssm's density-matrix engine (dm:): vs Aer's density matrix on the same
     compacted circuits, noise, shots and bindings (aer:, one PUB per measured circuit and batch,
     the strongest Aer usage); the Braket snapshot noise vs Braket's LocalSimulator("braket_dm");
     the 200-image QLAM dry run; the demo job on 2 Dask workers vs 1 (warm LocalClusters).

Timings are medians over >= 3 repeats; torch.set_num_threads(1) everywhere (2-core machine shared
with other work: only ratios within one run mean anything).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from qiskit.transpiler import generate_preset_pass_manager

from bench import harness as C
from bench.speed import references
from qssm.app.inference import evaluator_for
from qssm.backends.cluster import local_cluster
from qssm.backends.fake_devices import fake_backend
from qssm.circuits.templates import subcircuit_template
from qssm.models import checkpoint
from qssm.models.tasks import test_set
from qssm.pipeline.compile import CompileCache, CompileOptions, compile_batch
from qssm.pipeline.evaluator import PipelineEvaluator
from qssm.pipeline.plan import make_batch
from qssm.pipeline.token_table import build_token_table


@dataclass(frozen=True)
class Settings:
    mode: str
    compile_T: tuple[int, ...] = (64, 256, 1024)
    compile_sample: int = 256  # per-token transpiles timed on at most this many tokens, then scaled
    compile_repeats: int = 3
    noisy_backend: str = "aer"  # qssm side: "aer" or "ibm" (local testing mode) + ":" + noisy_device
    noisy_device: str = "fake_fez"
    noisy_sequences: int = 4
    noisy_shots: int = 1000
    noisy_repeats: int = 3
    naive_bindings: int = 12  # local-mode jobs timed (~15 s each on FakeFez)
    exact_batch: int = 256
    exact_repeats: int = 5
    trips_new_tokens: int = 16
    seed_transpiler: int = 7
    dm_sequences: int = 16  # e1: QMamba sequences on dm: and aer:
    dm_braket_sequences: int = 4  # e2: braket_dm runs ~8 bindings/s; fewer and the dm side is all fixed cost
    dm_qlam_images: int = 200  # e3
    dm_repeats: int = 3
    cluster_sequences: int = 64  # e4: the demo job's n
    cluster_large: int = 1000  # e5: the same job, larger


FULL = Settings("full")
QUICK = Settings("quick", compile_sample=32, noisy_sequences=1, naive_bindings=3, exact_repeats=3,
                 trips_new_tokens=4, dm_sequences=2, dm_qlam_images=8, dm_repeats=1, cluster_sequences=8,
                 cluster_large=16,
                 dm_braket_sequences=1)


def load_model(path=C.CHECKPOINT):
    """The shipped checkpoint in float64 (as the pipeline runs it)."""
    model, _ = checkpoint.load(path)
    return model.double().eval()


# ---- a: compile reuse -----------------------------------------------------------------------


@torch.no_grad()
def layer_workload(model, T: int, layer: int | None = None):
    """The 4 sub-circuit templates of one layer and their (T, n_in) angle rows for one haystack
    sequence of length T. Default: the last layer, whose inputs depend on the context."""
    layer = model.cfg.n_layers - 1 if layer is None else layer
    tokens = test_set({**model.cfg.task, "n_test": 1}, T=T).inputs
    calls = [c for c in references.record_calls(model, tokens) if c.name.startswith(f"layer{layer}.")]
    templates = [subcircuit_template(c) for c in calls]
    rows = [c.inputs.reshape(-1, c.inputs.shape[-1]).double().numpy() for c in calls]
    return templates, rows


def qssm_compile(templates, rows, target, seed: int):
    """The pipeline's compile stage with a cold cache: each template transpiled once, T rows bound
    (the rows travel with the ISA circuit; the primitive binds them natively)."""
    backend = SimpleNamespace(name="fake_fez", calibration="bench", target=target, fingerprint=dict)
    cache, options = CompileCache(), CompileOptions(2, seed)
    out = [compile_batch(make_batch(t, r, None), backend, options, cache) for t, r in zip(templates, rows)]
    assert cache.transpile_calls == len(templates)
    return out


def per_token_transpile(templates, rows, pm, tokens):
    """What a naive script does: for each token, bind its angles and transpile the bound circuits."""
    for t in tokens:
        for tpl, r in zip(templates, rows):
            pm.run(tpl.circuit.assign_parameters(r[t]))


def python_bind(compiled):
    """Transpile-once, then bind every row into a concrete ISA circuit in Python (for reference)."""
    for cb in compiled:
        for row in cb.rows():
            cb.circuit.assign_parameters(row)


def rows_compile(model, s: Settings) -> list[C.Row]:
    target = fake_backend("fake_fez").target
    pm = generate_preset_pass_manager(optimization_level=2, target=target, seed_transpiler=s.seed_transpiler)
    rows = []
    for i, T in enumerate(s.compile_T):
        templates, angles = layer_workload(model, T)
        once = C.median(C.times(lambda: qssm_compile(templates, angles, target, s.seed_transpiler), s.compile_repeats))
        sample = np.linspace(0, T - 1, min(T, s.compile_sample)).round().astype(int)
        naive = C.median(C.times(lambda: per_token_transpile(templates, angles, pm, sample), s.compile_repeats))
        naive *= T / len(sample)  # tokens are independent: time scales linearly
        ratio = naive / once
        note = f"per-token transpiles timed on {len(sample)} of {T} tokens, scaled x{T / len(sample):g}" \
            if len(sample) < T else ""
        goal = ">= 100" if T == max(s.compile_T) else ""
        rows.append(C.Row(f"a{i + 1}", f"compile T={T} x4 subcircuits (FakeFez, opt 2)", once, naive, "s", ratio,
                          "per-token/once", goal, C.check(ratio, goal), note,
                          {"T": T, "sampled_tokens": len(sample), "transpiles_once": len(templates),
                           "transpiles_naive": 4 * T}))
        if T == max(s.compile_T):
            compiled = qssm_compile(templates, angles, target, s.seed_transpiler)
            pyb = C.median(C.times(lambda: python_bind(compiled), s.compile_repeats)) + once
            rows.append(C.Row(f"a{i + 2}", f"compile T={T}: once + Python assign_parameters/token", pyb, naive, "s",
                              naive / pyb, "per-token/once+bind", note="reference: binding every row into a "
                              "circuit in Python, which qssm leaves to the primitive", extra={"T": T}))
    return rows


# ---- b: noisy dry run -----------------------------------------------------------------------


class DispatchRecorder:
    """A pipeline observer: keeps every batch dispatched and its result."""

    def __init__(self):
        self.batches, self.results = [], []

    def __call__(self, event):
        if event.stage == "dispatch":
            self.batches += list(event.batches)
            self.results += list(event.results)

    @property
    def bindings(self) -> int:
        return sum(len(b.parameters) for b in self.batches)


def qssm_noisy(backend: str, n_seqs: int, shots: int, seed: int):
    """One job through the pipeline; returns (seconds, dispatch recorder, report, pipeline)."""
    recorder = DispatchRecorder()
    r = C.run_job(C.job_spec(C.CHECKPOINT, backend, n_seqs, shots, seed_transpiler=seed), [recorder])
    return r.seconds, recorder, r.report, r.pipeline


def clbit_z(counts: np.ndarray, num_clbits: int) -> np.ndarray:
    """<Z> of each clbit from one row's outcome histogram."""
    idx = np.arange(len(counts))
    return np.array([(counts * (1 - 2 * ((idx >> k) & 1))).sum() / counts.sum() for k in range(num_clbits)])


def naive_job(fake, qc, row, shots: int) -> np.ndarray:
    """One binding, one local-mode job: a fresh SamplerV2 on the fake device (its noise model);
    returns <Z> of each measured qubit."""
    # ibm-runtime's primitives load lazily (a heavy SDK); SamplerV2 is deprecated since 0.50, but it is what such
    # scripts use
    from qiskit_ibm_runtime import SamplerV2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sampler = SamplerV2(mode=fake)
    counts = sampler.run([qc.assign_parameters(row)], shots=shots).result()[0].data.meas.get_counts()
    n = qc.cregs[-1].size
    z = np.zeros(n)
    for bits, c in counts.items():
        z += c * np.array([1 - 2 * int(bits[-1 - i]) for i in range(n)])
    return z / shots


def subset(picked) -> list:
    """The picked (dispatched batch, row) bindings regrouped as batches of those rows only."""
    groups: dict[int, tuple] = {}
    for cb, r in picked:
        groups.setdefault(id(cb), (cb, []))[1].append(r)
    return [cb.derive(parameters=cb.parameters[rs], key=f"{cb.key}:{rs}") for cb, rs in groups.values()]


def rows_noisy(s: Settings) -> list[C.Row]:
    backend = f"{s.noisy_backend}:{s.noisy_device}"
    runs = [qssm_noisy(backend, s.noisy_sequences, s.noisy_shots, s.seed_transpiler)
            for _ in range(s.noisy_repeats)]
    per_binding = C.median([sec / counter.bindings for sec, counter, _, _ in runs])
    _, counter, report, pipeline = runs[-1]
    # the naive script runs bindings qssm dispatched (same measured ISA circuits, rows, shots), one job each
    flat = [(cb, res, r) for cb, res in zip(counter.batches, counter.results) for r in range(len(cb.parameters))]
    pick = np.linspace(0, len(flat) - 1, min(s.naive_bindings, len(flat))).round().astype(int)
    fake = fake_backend(s.noisy_device)  # built once, outside the timing (generous to the baseline)
    job_times, diffs = [], []
    for k in pick:
        cb, res, r = flat[k]
        qc = cb.circuits[0]
        start = time.perf_counter()
        z = naive_job(fake, qc, cb.rows(0)[r], s.noisy_shots)
        job_times.append(time.perf_counter() - start)
        diffs.append(float(np.abs(z - clbit_z(res.counts[0][r], qc.num_clbits)).max()))
    # both estimate the same noisy <Z> with `shots` each: |diff| <= 5 * sqrt(2) * stderr(<= 1/sqrt(shots))
    tol = 5 * np.sqrt(2 / s.noisy_shots)
    assert max(diffs) < tol, f"naive and qssm disagree on the same bindings: {max(diffs):.3f} >= {tol:.3f}"
    naive = C.median(job_times)
    ratio = naive / per_binding
    # like for like at equal count: the same few bindings through qssm's backend in one submission
    few = subset([flat[k][::2] for k in pick])
    t_few = C.median(C.times(lambda: pipeline.backend.run(few), s.noisy_repeats, warmup=0))
    note = (f"qssm: {counter.bindings} bindings per run ({s.noisy_sequences} seq x T={report['T']}: token table "
            f"+ {report['round_trips']} round trip, {report['transpile_calls']} transpiles), end-to-end wall "
            f"incl. the exact reference forward; naive: {len(pick)} of those bindings, one job each "
            f"({C.fmt_seconds(naive)} per job; all {counter.bindings} would not fit the time budget); "
            f"{s.noisy_shots} shots both; values agree within {max(diffs):.3f} (< {tol:.3f})")
    return [
        C.Row("b1", f"noisy dry run {backend} vs SamplerV2 local job/binding", per_binding, naive,
              "s/binding", ratio, "naive/qssm", ">= 20", C.check(ratio, ">= 20"), note,
              {"qssm_bindings": counter.bindings, "naive_bindings": len(pick), "shots": s.noisy_shots,
               "qssm_run_seconds": [sec for sec, _, _, _ in runs], "naive_job_seconds": job_times,
               "max_abs_diff": max(diffs), "accuracy": report["accuracy"],
               "agreement_with_exact": report["agreement"]}),
        C.Row("b2", f"same {len(pick)} bindings: qssm backend.run (one submission) vs {len(pick)} jobs",
              t_few, sum(job_times), "s", sum(job_times) / t_few, "naive/qssm",
              note="equal binding count; both start from the same ISA circuits (compile excluded)",
              extra={"bindings": len(pick)}),
    ]


# ---- c: exact inference ---------------------------------------------------------------------


@torch.no_grad()
def rows_exact(model, s: Settings) -> list[C.Row]:
    tokens = test_set(model.cfg.task).inputs[: s.exact_batch]
    B, T = tokens.shape
    pl = references.PennyLaneEvaluator(model)
    pipe = evaluator_for("exact")
    ref = model(tokens)
    err_pl = float((model(tokens, pl) - ref).abs().max())
    err_pipe = float((model(tokens, pipe) - ref).abs().max())
    if err_pl > 1e-5 or err_pipe > 1e-5:
        raise AssertionError(f"logits disagree before timing: PennyLane {err_pl:.2e}, pipeline {err_pipe:.2e}")
    reps = s.exact_repeats
    t_qssm = C.median(C.times(lambda: model(tokens), reps))
    t_pl = C.median(C.times(lambda: model(tokens, pl), reps))
    t_pipe = C.median(C.times(lambda: model(tokens, pipe), reps))

    calls = references.record_calls(model, tokens)
    fused = references.FusedCircuits.from_calls(calls)
    err_floor = float((fused.run() - references.qssm_circuits(calls)).abs().max())
    assert err_floor < 1e-10, err_floor
    c_qssm = C.median(C.times(lambda: references.qssm_circuits(calls), reps))
    c_pl = C.median(C.times(lambda: pl.evaluate(calls), reps))
    c_floor = C.median(C.times(fused.run, reps))
    size = f"B={B} T={T}, {len(calls)} subcircuits x {B * T} rows"
    agree = f"logits agree: PennyLane {err_pl:.1e}, pipeline {err_pipe:.1e} (max abs, float64)"
    return [
        C.Row("c1", f"exact forward {size}: torch vs PennyLane TorchLayer", t_qssm, t_pl, "s", t_pl / t_qssm,
              "pennylane/qssm", ">= 10", C.check(t_pl / t_qssm, ">= 10"),
              agree + "; both share the classical recurrence (selective scan), which is included",
              {"err_pennylane": err_pl, "err_pipeline": err_pipe, "B": B, "T": T}),
        C.Row("c2", "exact forward via pipeline (exact backend) vs PennyLane", t_pipe, t_pl, "s", t_pl / t_pipe,
              "pennylane/qssm"),
        C.Row("c3", "circuit evaluation only: qssm evaluator vs PennyLane", c_qssm, c_pl, "s", c_pl / c_qssm,
              "pennylane/qssm", note="the same recorded calls, no recurrence"),
        C.Row("c4", "circuit evaluation only: qssm evaluator vs fused floor", c_qssm, c_floor, "s", c_qssm / c_floor,
              "qssm/floor", "<= 3", C.check(c_qssm / c_floor, "<= 3"),
              "floor = all subcircuits stacked: product-state encoding (kron of n RX|0>), one batched "
              "matmul by the precomputed fused unitary, |amp|^2 @ Z-signs; excludes the weight fusion "
              "(compile_ops) qssm redoes per call", {"err_floor": err_floor}),
    ]


# ---- d: round trips -------------------------------------------------------------------------


@torch.no_grad()
def count_trips(model, prompt: torch.Tensor, n_new: int, token_table: bool) -> dict:
    ev = evaluator_for("exact")  # an exact pipeline: counting only
    table = build_token_table(model, PipelineEvaluator(ev.execute, counter="table_round_trips"),
                              "exact") if token_table else None
    ev.token_table = table
    trips = {"prefill": 0, "decode": 0}

    def phase(event):  # a plan observer (after the table): decode round trips plan one row per sequence
        if event.stage == "plan":
            trips["decode" if len(event.batches[0].inverse) == len(prompt) else "prefill"] += 1

    ev.execute.observe(phase)
    out = model.generate(prompt, n_new, ev)
    assert torch.equal(out, model.generate(prompt, n_new)), "pipeline generation differs from exact"
    assert ev.round_trips == sum(trips.values())
    return {"prefill": trips["prefill"], "decode_per_token": trips["decode"] / n_new,
            "transpile_calls": ev.tracker.totals["transpile_calls"]}


def rows_trips(model, s: Settings) -> list[C.Row]:
    prompt = test_set(model.cfg.task).inputs[:1]
    T, L, S = prompt.shape[1], model.cfg.n_layers, len(model.cfg.SUBCIRCUITS)
    rows = []
    for table in (False, True):
        c = count_trips(model, prompt, s.trips_new_tokens, table)
        tag = " + token table" if table else ""
        want_prefill = L - 1 if table else L
        rows.append(C.Row(f"d{1 + 2 * table}", f"round trips, prefill T={T}{tag}", c["prefill"], T * L * S, "trips",
                          T * L * S / max(c["prefill"], 1), "naive/qssm", f"qssm == {want_prefill}",
                          c["prefill"] == want_prefill, "naive = tokens x layers x subcircuits" if not table else "",
                          c))
        rows.append(C.Row(f"d{2 + 2 * table}", f"round trips per generated token{tag}", c["decode_per_token"], L * S,
                          "trips", L * S / c["decode_per_token"], "naive/qssm", f"qssm <= {L}",
                          c["decode_per_token"] <= L, "" if table else f"{s.trips_new_tokens} tokens, greedy = exact",
                          c))
    return rows


# ---- e: the density-matrix engine ---------------------------------------------------------


def timed_run(spec, repeats: int) -> tuple[float, dict]:
    """Median wall seconds of a job (after one warm-up: noise models, programs) and the last report."""
    out = {"dispatch": []}

    def once():
        out["r"] = C.run_job(spec).report
        out["dispatch"].append(out["r"]["seconds"].get("dispatch", 0.0))

    wall = C.median(C.times(once, repeats))
    out["r"]["dispatch_median"] = C.median(out["dispatch"][-repeats:])
    return wall, out["r"]


def rows_dm(s: Settings) -> list[C.Row]:
    rows = []
    # e1: the same job, same bindings, shots and noise, on the engine and on Aer
    # the simulators compared on what differs: the dispatch stage (the same compacted ISA batches, noise,
    # shots); the whole run's wall (transpile, plan, exact reference, the same on both) in the note
    runs = {}
    for be in ("dm:fake_fez", "aer:fake_fez"):
        secs, r = timed_run(C.job_spec("qmamba-haystack", be, s.dm_sequences, 2000), s.dm_repeats)
        runs[be] = (r["dispatch_median"] / r["executions"], r, secs)
    (dm, rd, wd), (aer, ra, wa) = runs["dm:fake_fez"], runs["aer:fake_fez"]
    assert rd["executions"] == ra["executions"]
    rows.append(C.Row("e1", f"noisy dry run dm:fake_fez vs aer:fake_fez, QMamba n={s.dm_sequences}", dm, aer,
                      "s/binding", aer / dm, "aer/dm", ">= 10", C.check(aer / dm, ">= 10"),
                      f"{rd['executions']} bindings x 2000 shots each, simulation (dispatch stage) per binding; whole "
                      f"run {C.fmt_seconds(wd)} vs {C.fmt_seconds(wa)} ({wa / wd:.1f}x, transpile and exact reference "
                      f"included); logit error {rd['logit_error_mean']:.3f} (dm) vs {ra['logit_error_mean']:.3f} "
                      "(aer): the same noise", {"dm": rd, "aer": ra, "wall": {"dm": wd, "aer": wa}}))
    # e2: Braket snapshot noise (IQM Garnet) on the engine vs Braket's own density-matrix simulator
    runs = {}
    for be in ("dm:iqm_garnet", "braket:local_dm"):  # braket_dm once: it takes a minute
        secs, r = timed_run(C.job_spec("qmamba-haystack", be, s.dm_braket_sequences, 500),
                            s.dm_repeats if be.startswith("dm:") else 1)
        runs[be] = (r["dispatch_median"] / r["executions"], r, secs)
    (dm, rd, wd), (bk, rb, wb) = runs["dm:iqm_garnet"], runs["braket:local_dm"]
    rows.append(C.Row("e2", f"Braket-noise dry run dm:iqm_garnet vs braket:local_dm, n={s.dm_braket_sequences}", dm, bk,
                      "s/binding", bk / dm, "braket/dm", ">= 100", C.check(bk / dm, ">= 100"),
                      f"{rd['executions']} bindings x 500 shots, the IQM Garnet snapshot's channels, simulation "
                      f"(dispatch stage) per binding; whole run {C.fmt_seconds(wd)} vs {C.fmt_seconds(wb)} "
                      f"({wb / wd:.0f}x); logit error {rd['logit_error_mean']:.3f} (dm) vs "
                      f"{rb['logit_error_mean']:.3f} (braket_dm)", {"dm": rd, "braket": rb, "wall": {"dm": wd, "braket": wb}}))
    # e3: the 200-image QLAM dry run (4000 shots), and Aer on a slice of it for the ratio
    secs, rq = timed_run(C.job_spec("qlam-digits", "dm:fake_fez", s.dm_qlam_images, 4000), 1)
    few = max(2, s.dm_qlam_images // 25)
    aer_secs, ra = timed_run(C.job_spec("qlam-digits", "aer:fake_fez", few, 4000), 1)
    projected = aer_secs / ra["executions"] * rq["executions"]
    rows.append(C.Row("e3", f"QLAM dry run, {s.dm_qlam_images} images, 4000 shots: dm:fake_fez vs aer:fake_fez", secs,
                      projected, "s", projected / secs, "aer/dm", "dm < 60 s", secs < 60,
                      f"aer measured on {few} images ({C.fmt_seconds(aer_secs)}) and scaled by bindings "
                      f"({ra['executions']} -> {rq['executions']}); accuracy {rq['accuracy']:.3f} vs exact "
                      f"{rq['exact_accuracy']:.3f}", {"dm": rq, "aer_slice": ra}))
    rows += rows_cluster(s)
    return rows


def rows_cluster(s: Settings) -> list[C.Row]:
    """The demo job on warm LocalClusters of 1 and 2 single-threaded workers (cluster start-up and
    the workers' first imports excluded: a cluster is started once and serves many jobs)."""
    secs, reports = {}, {}
    sizes = (s.cluster_sequences, s.cluster_large)
    for workers in (1, 2):
        with local_cluster(workers) as c:
            for n in sizes:
                spec = C.job_spec("qmamba-haystack", "dm:fake_fez", n, 2000, cluster=c.scheduler_address)
                secs[workers, n], reports[workers, n] = timed_run(spec, s.dm_repeats)
    rows = []
    # e4 carries the goal (the demo job as shipped); e5 shows how the ratio grows with the job
    for key, n, what, goal in (("e4", sizes[0], "demo job", ">= 1.6"), ("e5", sizes[1], "the demo job at", "")):
        one, two = secs[1, n], secs[2, n]
        r = reports[2, n]
        rows.append(C.Row(key, f"{what} QMamba n={n}, dm:fake_fez, on 2 Dask workers vs 1", two, one, "s", one / two,
                          "1 worker/2", goal, C.check(one / two, goal) if goal else None,
                          f"warm LocalClusters, 1 thread per worker; of the 2-worker run's {two:.2f} s, "
                          f"{r['seconds'].get('dispatch', 0.0):.2f} s is dispatch and {r['seconds'].get('split', 0.0):.2f} s "
                          "transpiling (both on the workers), the rest runs in the dispatcher (plan, recurrence, "
                          "exact reference)", {"seconds": {f"{w}": secs[w, n] for w in (1, 2)}, "stages_2": r["seconds"]}))
    return rows


# ---- main -----------------------------------------------------------------------------------


def run(s: Settings, which: str = "abcde") -> tuple[list[C.Row], dict]:
    torch.set_num_threads(1)
    env = C.environment(s.mode)
    model = load_model()
    rows: list[C.Row] = []
    for key, fn in (("a", lambda: rows_compile(model, s)), ("b", lambda: rows_noisy(s)),
                    ("c", lambda: rows_exact(model, s)), ("d", lambda: rows_trips(model, s)),
                    ("e", lambda: rows_dm(s))):
        if key in which:
            start = time.perf_counter()
            rows += fn()
            print(f"  [{key}] done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows, env


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller samples (~2 minutes)")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results.json"), help="output file")
    ap.add_argument("--rows", default="abcde", help="subset of rows to run, e.g. 'ad'")
    ap.add_argument("--noisy-backend", choices=("aer", "ibm"), default="aer", help="qssm backend kind for row b")
    args = ap.parse_args(argv)
    s = dataclasses.replace(QUICK if args.quick else FULL, noisy_backend=args.noisy_backend)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    rows, env = run(s, args.rows)
    print(C.render(rows, env))
    Path(args.json).write_text(json.dumps(C.as_json(rows, env, s.__dict__), indent=1, default=str))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
