"""Readout mitigation, ZNE and noise-aware layout (pipeline.mitigation, pipeline.layout)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

from qssm.backends.aer import AerBackend
from qssm.errors import QssmError
from qssm.jobs.spec import BackendSpec, JobSpec, MitigationSpec, parse_spec
from qssm.pipeline.build import build_pipeline
from qssm.pipeline.compile import Compile
from qssm.pipeline.measure import Measure
from qssm.pipeline.mitigation import (
    ZNE,
    Readout,
    correct_counts,
    extrapolation_weights,
    fold_two_qubit_gates,
    mitigation_report,
    split_shots,
)
from qssm.pipeline.plan import make_batch
from qssm.pipeline.stages import Pipeline
from qssm.types import Template

HAYSTACK = "checkpoints/qmamba-haystack.safetensors"
READOUT = {0: (0.04, 0.10), 1: (0.08, 0.03), 2: (0.12, 0.06)}  # qubit: p(1|0), p(0|1)


class NoisyAer(AerBackend):
    """Ideal Aer plus a hand-made noise model (logical circuits, no target)."""

    def __init__(self, noise_model, seed=5):
        super().__init__(None, seed=seed)
        self._noise = noise_model

    def noise_model(self, active):
        return self._noise


def readout_noise() -> NoiseModel:
    nm = NoiseModel()
    for q, (p10, p01) in READOUT.items():
        nm.add_readout_error(ReadoutError([[1 - p10, p10], [p01, 1 - p01]]), [q])
    return nm


def cz_noise(p: float) -> NoiseModel:
    nm = NoiseModel(basis_gates=["cz", "ry", "rz", "sx", "x"])
    nm.add_all_qubit_quantum_error(depolarizing_error(p, 2), ["cz"])
    return nm


def small_circuit(layers: int = 1) -> QuantumCircuit:
    x = ParameterVector("x", 3)
    qc = QuantumCircuit(3)
    for _ in range(layers):
        for q in range(3):
            qc.ry(x[q], q)
        qc.cz(0, 1)
        qc.cz(1, 2)
    return qc


def batch(circuit, labels, rows, shots):
    return make_batch(Template("small", circuit, tuple(labels), f"small-{circuit.size()}-{labels}"), rows, shots)


def ideal(circuit, labels, rows) -> np.ndarray:
    return np.array([[Statevector(circuit.assign_parameters(r)).expectation_value(SparsePauliOp(lab)).real
                      for lab in labels] for r in rows])


def test_corrector_inverts_a_known_confusion_exactly():
    rng = np.random.default_rng(0)
    true = rng.dirichlet(np.ones(8), size=3)  # 3 bindings over 3 clbits
    measured = true.reshape(3, 2, 2, 2).copy()
    for k, q in enumerate([0, 1, 2]):  # apply each clbit's confusion on its bit (bit k -> axis 3-k)
        p10, p01 = READOUT[q]
        a = np.array([[1 - p10, p01], [p10, 1 - p01]])
        measured = np.moveaxis(np.tensordot(a, measured, axes=([1], [3 - k])), 0, 3 - k)
    inv = {k: np.linalg.inv(np.array([[1 - p10, p01], [p10, 1 - p01]])) for k, (p10, p01) in READOUT.items()}
    got = correct_counts(measured.reshape(3, 8), inv, 3)
    assert np.allclose(got, true, atol=1e-12)


def test_readout_mitigation_removes_injected_readout_error():
    backend = NoisyAer(readout_noise())
    labels = ["IIZ", "IZI", "ZII", "IZZ", "XII"]
    rows = np.array([[0.3, 1.2, 2.5], [2.0, 0.1, 0.7], [1.0, 2.8, 0.0]])
    circuit = small_circuit()
    b = batch(circuit, labels, rows, 20_000)
    exact = ideal(circuit, labels, b.parameters)
    readout = Readout(backend)
    mitigated = Pipeline([Compile(backend), Measure(backend), readout], backend.run, backend=backend)
    seen = []
    mitigated.observe(lambda e: seen.extend(e.batches) if e.stage == "dispatch" else None)
    [res] = mitigated([b])
    [raw] = Pipeline([Compile(backend), Measure(backend)], backend.run, backend=backend)([b])
    tol = 4 * res.stderr + 1e-9
    assert (np.abs(res.values - exact) < tol).all(), (res.values - exact, tol)
    assert (np.abs(raw.values - exact) > 4 * raw.stderr).any()  # the injected error is visible unmitigated
    assert (res.stderr > raw.stderr).all()  # the correction's amplification and the calibration's noise
    assert len(seen) == 2 and seen[1].meta["template"] == "readout_cal" and len(seen[1].circuits) == 2
    # calibrations are cached: a second round trip on the same qubits dispatches only the batch
    seen.clear()
    mitigated([b])
    assert len(seen) == 1 and readout.report(mitigated.tracker.totals)["calibrated_qubits"] == 3
    for q, (p10, p01) in READOUT.items():
        assert readout.table[q] == pytest.approx((p10, p01), abs=0.01)


def test_zne_richardson_extrapolates_depolarizing_decay():
    backend = NoisyAer(cz_noise(0.03))
    labels = ["IIZ", "IZI", "ZII", "ZZI"]
    rows = np.array([[0.4, 0.3, 0.2], [0.1, 0.5, 0.3]])
    circuit = small_circuit(layers=3)
    exact = ideal(circuit, labels, batch(circuit, labels, rows, None).parameters)  # planned rows: unique, sorted

    def run(shots, zne):
        stages = [Compile(backend)] + ([ZNE([1, 3, 5], "richardson")] if zne else []) + [Measure(backend)]
        return Pipeline(stages, backend.run, backend=backend)([batch(circuit, labels, rows, shots)])[0]

    # exact noisy values: extrapolation removes most of the bias
    noisy, zne = run(None, False), run(None, True)
    bias_raw, bias_zne = np.abs(noisy.values - exact), np.abs(zne.values - exact)
    assert bias_raw.min() > 0.01 and (bias_zne < 0.15 * bias_raw).all(), (bias_raw, bias_zne)
    # with shots at equal total: within stderr of the exact extrapolation, closer to ideal than unmitigated
    shot = run(60_000, True)
    assert (np.abs(shot.values - zne.values) < 4 * shot.stderr + 1e-9).all()
    assert np.abs(shot.values - exact).mean() < bias_raw.mean()
    assert shot.shots == 60_000


def test_folding_and_weights():
    qc = small_circuit()
    folded = fold_two_qubit_gates(qc, 5)
    assert folded.count_ops()["cz"] == 5 * qc.count_ops()["cz"]
    assert Statevector(folded.assign_parameters([0.3, 0.2, 0.1])).equiv(Statevector(qc.assign_parameters([0.3, 0.2, 0.1])))
    for method in ("richardson", "linear"):
        w = extrapolation_weights([1, 3, 5], method)
        assert w.sum() == pytest.approx(1.0) and (w * np.array([1, 3, 5])).sum() == pytest.approx(0.0, abs=1e-12)
    assert sum(split_shots(1000, extrapolation_weights([1, 3, 5], "richardson"))) == 1000
    from qssm.app.validate import validate

    with pytest.raises(QssmError, match="zne_scales"):
        validate(JobSpec("", backend=BackendSpec(name="aer", shots=100),
                         mitigation=MitigationSpec(zne=True, zne_scales="1,2")), NoisyAer(cz_noise(0.0)))


def test_noise_aware_layout_on_fake_fez():
    from qssm.backends.fake_devices import fake_backend
    from qssm.circuits.templates import model_templates
    from qssm.models import checkpoint
    from qssm.pipeline.layout import device_graph, estimated_success, noise_aware_layout

    target = fake_backend("fake_fez").target
    model, _ = checkpoint.load(HAYSTACK)
    circuits = [t.circuit for t in model_templates(model)][:4]  # layer 0: A, B, C, Delta
    layout = noise_aware_layout(target, circuits)
    assert len(layout) == 4 and len(set(layout)) == 4
    assert nx.is_connected(device_graph(target).subgraph(layout))
    default, _ = estimated_success(target, circuits)
    mine, _ = estimated_success(target, circuits, layout)
    assert mine >= default, (mine, default)


def test_pipeline_with_mitigation_and_noise_aware_layout():
    from qssm.app.inference import run_inference
    from qssm.app.job import backend_for
    from qssm.models import checkpoint

    raw = {"model": {"checkpoint": HAYSTACK}, "data": {"n": 2, "T": 6},
           "backend": {"name": "aer:fake_fez", "shots": 300, "layout": "noise_aware"},
           "mitigation": {"readout": True, "zne": True, "zne_scales": "1,3"}}
    spec = parse_spec(raw)
    backend = backend_for(spec)
    pipe = build_pipeline(spec, backend, model=checkpoint.load(HAYSTACK)[0])
    assert [s.name for s in pipe.stages] == ["split", "compile", "zne", "measure", "readout"]
    dispatched = []
    pipe.observe(lambda e: dispatched.extend(e.batches) if e.stage == "dispatch" else None)
    info = pipe.layout_report
    assert info["used"] in ("noise_aware", "default") and info["noise_aware_success"] > 0
    r = run_inference(spec, pipeline=pipe, progress=False)
    # 2 haystack sequences at 300 shots with both mitigations: every decision still matches exact
    assert r["round_trips"] == 1 and r["agreement"] == 1.0 and r["accuracy"] == r["exact_accuracy"]
    rows = {row["setting"]: row for row in mitigation_report(pipe)}
    cal = [b for b in dispatched if b.meta.get("template") == "readout_cal"]
    assert sum(len(b.circuits) for b in cal) == r["calibration_circuits"] == rows["readout"]["circuits"] > 0
    assert rows["zne"]["shot_multiplier"] == pytest.approx(1.0) and rows["zne"]["circuit_multiplier"] == 2.0
    assert r["zne_circuits"] == sum(len(b.circuits) for b in dispatched if b.meta.get("zne_scale") == 3) > 0


def test_mitigation_spec_errors_are_one_line():
    from qssm.app.validate import validate

    raw = {"model": {"checkpoint": HAYSTACK}, "backend": {"name": "aer:fake_fez", "shots": 300}}
    with pytest.raises(QssmError, match="IBM runtime"):
        validate(parse_spec({**raw, "mitigation": {"twirling": True}}), AerBackend("fake_fez"))
    with pytest.raises(QssmError, match="extrapolation"):
        validate(parse_spec({**raw, "mitigation": {"zne": True, "extrapolation": "cubic"}}), AerBackend("fake_fez"))
    with pytest.raises(QssmError, match="cut"):
        validate(parse_spec({**raw, "mitigation": {"zne": True}, "split": {"cutting": "force"}}), AerBackend("fake_fez"))


IDLE = Template("idle", QuantumCircuit(2), ("ZI", "IZ"), "idle-2")  # nothing runs: <Z> = 1 on both qubits


@pytest.mark.parametrize("name", ["dm:fake_fez", "aer:fake_fez", "ibm:fake_fez", "braket:local_dm", "dm:iqm_garnet", "exact"])
def test_readout_mitigation_on_every_sampling_backend(name):
    """An idle qubit reads <Z> = 1 - 2 p(1|0): mitigation brings it back to 1.0 within 3 standard
    errors on every backend that samples (Braket's density-matrix simulator included)."""
    from qssm.backends.registry import get_backend

    backend = get_backend(name, seed=3)
    shots = 20_000
    spec = JobSpec("", backend=BackendSpec(name=name, shots=shots, optimization_level=1),
                   mitigation=MitigationSpec(readout=True))
    plain = JobSpec("", backend=BackendSpec(name=name, shots=shots, optimization_level=1))
    rows = np.zeros((1, 0))
    [raw] = build_pipeline(plain, backend)([make_batch(IDLE, rows, shots)])
    [mit] = build_pipeline(spec, backend)([make_batch(IDLE, rows, shots)])
    assert (np.abs(mit.values - 1.0) <= 3 * mit.stderr + 1e-12).all(), (mit.values, mit.stderr)
    if backend.target is not None:  # a device's readout error is visible without mitigation
        assert (np.abs(raw.values - 1.0) > 3 * raw.stderr).any(), (raw.values, raw.stderr)


@pytest.mark.parametrize("name", ["aer:fake_fez", "ibm:fake_fez"])
def test_mthree_readout_agrees_with_qssm_readout_and_both_beat_unmitigated(name, monkeypatch):
    """[mitigation] readout = "mthree" on a device snapshot (ibm:fake_fez: runtime primitives in local
    mode): mthree's M3 correction of the same samples (same backend seed) agrees with qssm's tensored
    inverse within a thousandth of a standard error, mthree really corrected every histogram, and
    both are closer to the noiseless values than the unmitigated run (gate noise stays: only the
    mean error is compared)."""
    import mthree

    from qssm.backends.registry import get_backend

    calls = []
    real = mthree.M3Mitigation.apply_correction
    monkeypatch.setattr(mthree.M3Mitigation, "apply_correction",
                        lambda self, counts, qubits, **kw: calls.append(len(counts)) or real(self, counts, qubits, **kw))
    labels = ["IIZ", "IZI", "ZII", "IZZ", "XII", "ZZZ"]
    rows = np.array([[0.3, 1.2, 2.5], [2.0, 0.1, 0.7], [1.0, 2.8, 0.0]])
    circuit, shots = small_circuit(), 20_000
    exact = ideal(circuit, labels, batch(circuit, labels, rows, shots).parameters)
    out, pipes = {}, {}
    for readout in (False, True, "mthree"):
        spec = JobSpec("", backend=BackendSpec(name=name, shots=shots, optimization_level=1),
                       mitigation=MitigationSpec(readout=readout))
        pipes[readout] = build_pipeline(spec, get_backend(name, seed=3))
        [out[readout]] = pipes[readout]([batch(circuit, labels, rows, shots)])
    raw, own, m3 = out[False], out[True], out["mthree"]
    assert type(pipes["mthree"]["readout"]).__name__ == "MthreeReadout"
    assert calls == [3, 3]  # one M3 call per measured group (Z..., X...), one histogram per binding
    assert (np.abs(m3.values - own.values) <= 1e-3 * np.hypot(m3.stderr, own.stderr)).all()
    assert np.allclose(m3.stderr, own.stderr, rtol=1e-3)
    err = {k: np.abs(v.values - exact).mean() for k, v in (("raw", raw), ("own", own), ("mthree", m3))}
    assert err["mthree"] < err["raw"] and err["own"] < err["raw"], err
    assert (np.abs(m3.values - exact) > 4 * m3.stderr).sum() < (np.abs(raw.values - exact) > 4 * raw.stderr).sum()
    rows_ = {r["setting"]: r for r in mitigation_report(pipes["mthree"])}
    assert rows_["readout"]["method"] == "mthree" and rows_["readout"]["circuits"] == 2


def test_mthree_correction_equals_the_tensored_inverse_and_skips_unmeasured_clbits():
    """With every outcome observed, M3 over all measured bits is the tensored inverse qssm applies
    (to float32 calibration precision). A cut subexperiment can leave a clbit unmeasured (always 0):
    only the measured clbits are corrected, each on its own physical qubit's calibration."""
    from qssm.pipeline.mthree_readout import MthreeReadout

    stage = MthreeReadout(None)
    stage.table = {5: (0.04, 0.10), 7: (0.12, 0.06)}
    clbits = {0: 5, 2: 7}  # clbit 1 is never written
    rng = np.random.default_rng(1)
    hist = np.zeros((3, 8))
    hist[:, [0, 1, 4, 5]] = rng.integers(50, 500, size=(3, 4))  # bit 1 always 0
    got = MthreeReadout._quasi_counts(stage._mitigator(), hist, clbits)
    inverses = {k: np.linalg.inv(np.array([[1 - p10, p01], [p10, 1 - p01]])) for k, (p10, p01) in
                ((0, stage.table[5]), (2, stage.table[7]))}
    want = correct_counts(hist, inverses, 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert (got[:, [2, 3, 6, 7]] == 0).all() and np.allclose(got.sum(1), hist.sum(1))
