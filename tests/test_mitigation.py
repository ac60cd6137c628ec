"""Readout mitigation, ZNE and noise-aware layout (pipeline.mitigation, pipeline.layout)."""

from __future__ import annotations

import hashlib

import networkx as nx
import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

from qssm.backends.aer import AerBackend
from qssm.backends.sampling import Group
from qssm.errors import QssmError
from qssm.jobs.spec import MitigationSpec, parse_spec
from qssm.pipeline.mitigation import (Mitigation, extrapolation_weights, fold_two_qubit_gates, readout_corrector,
                                      split_shots)
from qssm.pipeline.types import CompiledBatch

HAYSTACK = "checkpoints/qmamba-haystack.safetensors"
READOUT = {0: (0.04, 0.10), 1: (0.08, 0.03), 2: (0.12, 0.06)}  # qubit: p(1|0), p(0|1)


class NoisyAer(AerBackend):
    """Ideal Aer plus a hand-made noise model (logical circuits, no target)."""

    def __init__(self, noise_model, seed=5):
        super().__init__(None, seed=seed)
        self.noise_model = noise_model
        self.deterministic = False

    def _options(self, circuit, active):
        opts = super()._options(circuit, active)
        opts.update(method="density_matrix", noise_model=self.noise_model)
        return opts


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


def batch(circuit, labels, rows, shots) -> CompiledBatch:
    key = hashlib.sha256(f"{labels}{rows.tolist()}{shots}{circuit.size()}".encode()).hexdigest()
    return CompiledBatch(key, circuit, rows, [SparsePauliOp(lab) for lab in labels], shots, {})


def ideal(circuit, labels, rows) -> np.ndarray:
    return np.array([[Statevector(circuit.assign_parameters(r)).expectation_value(SparsePauliOp(lab)).real
                      for lab in labels] for r in rows])


def test_corrector_inverts_a_known_confusion_exactly():
    rng = np.random.default_rng(0)
    true = rng.dirichlet(np.ones(8), size=3)  # 3 bindings over 3 bits
    measured = true.reshape(3, 2, 2, 2).copy()
    for k, q in enumerate([0, 1, 2]):  # apply each qubit's confusion on its bit (bit k -> axis 3-k)
        p10, p01 = READOUT[q]
        a = np.array([[1 - p10, p01], [p10, 1 - p01]])
        measured = np.moveaxis(np.tensordot(a, measured, axes=([1], [3 - k])), 0, 3 - k)
    fix = readout_corrector({str(q): list(v) for q, v in READOUT.items()})  # JSON keys are strings
    got = fix(Group(["Z", "Z", "Z"]), measured.reshape(3, 8))
    assert np.allclose(got, true, atol=1e-12)


def test_readout_mitigation_removes_injected_readout_error():
    backend = NoisyAer(readout_noise())
    labels = ["IIZ", "IZI", "ZII", "IZZ", "XII"]
    rows = np.array([[0.3, 1.2, 2.5], [2.0, 0.1, 0.7], [1.0, 2.8, 0.0]])
    circuit = small_circuit()
    exact = ideal(circuit, labels, rows)
    b = batch(circuit, labels, rows, 20_000)
    seen = []

    def dispatch(batches):
        seen.extend(batches)
        return backend.run(batches)

    mit = Mitigation.from_spec(MitigationSpec(readout=True), backend, 20_000)
    [res] = mit.run([b], dispatch)
    [raw] = backend.run([b])
    tol = 4 * res.stderr + 1e-9
    assert (np.abs(res.values - exact) < tol).all(), (res.values - exact, tol)
    assert (np.abs(raw.values - exact) > 4 * raw.stderr).any()  # the injected error is visible unmitigated
    assert len(seen) == 3 and {s.meta["template"] for s in seen[:2]} == {"readout_cal0", "readout_cal1"}
    # calibrations are cached: a second wave on the same qubits dispatches only the batch
    seen.clear()
    mit.run([b], dispatch)
    assert len(seen) == 1 and seen[0].meta["readout"].keys() == {0, 1, 2}
    rep = mit.report()
    assert rep["readout"]["circuits"] == 2 and rep["readout"]["calibrated_qubits"] == 3


def test_zne_richardson_extrapolates_depolarizing_decay():
    backend = NoisyAer(cz_noise(0.03))
    labels = ["IIZ", "IZI", "ZII", "ZZI"]
    rows = np.array([[0.4, 0.3, 0.2], [0.1, 0.5, 0.3]])
    circuit = small_circuit(layers=3)
    exact = ideal(circuit, labels, rows)
    spec = MitigationSpec(zne=True, zne_scales="1,3,5", extrapolation="richardson")
    # exact noisy values: extrapolation removes most of the bias
    [noisy] = backend.run([batch(circuit, labels, rows, None)])
    [zne] = Mitigation.from_spec(spec, backend, None).run([batch(circuit, labels, rows, None)], backend.run)
    bias_raw, bias_zne = np.abs(noisy.values - exact), np.abs(zne.values - exact)
    assert bias_raw.min() > 0.01 and (bias_zne < 0.15 * bias_raw).all(), (bias_raw, bias_zne)
    # with shots at equal total: within stderr of the exact extrapolation, closer to ideal than unmitigated
    mit = Mitigation.from_spec(spec, backend, 60_000)
    [shot] = mit.run([batch(circuit, labels, rows, 60_000)], backend.run)
    assert (np.abs(shot.values - zne.values) < 4 * shot.stderr + 1e-9).all()
    assert np.abs(shot.values - exact).mean() < bias_raw.mean()
    assert shot.meta["shots"] == 60_000
    rep = mit.report()["zne"]
    assert rep["shot_multiplier"] == pytest.approx(1.0) and rep["circuit_multiplier"] == pytest.approx(3.0)


def test_folding_and_weights():
    qc = small_circuit()
    folded = fold_two_qubit_gates(qc, 5)
    assert folded.count_ops()["cz"] == 5 * qc.count_ops()["cz"]
    assert Statevector(folded.assign_parameters([0.3, 0.2, 0.1])).equiv(Statevector(qc.assign_parameters([0.3, 0.2, 0.1])))
    for method in ("richardson", "linear"):
        w = extrapolation_weights([1, 3, 5], method)
        assert w.sum() == pytest.approx(1.0) and (w * np.array([1, 3, 5])).sum() == pytest.approx(0.0, abs=1e-12)
    assert sum(split_shots(1000, extrapolation_weights([1, 3, 5], "richardson"))) == 1000
    with pytest.raises(QssmError, match="zne_scales"):
        parse = MitigationSpec(zne=True, zne_scales="1,2")
        Mitigation.from_spec(parse, NoisyAer(cz_noise(0.0)), 100)


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
    from qssm.pipeline.inference import build_runner, run_inference

    raw = {"model": {"checkpoint": HAYSTACK}, "data": {"n": 2, "T": 6},
           "backend": {"name": "aer:fake_fez", "shots": 300, "layout": "noise_aware"},
           "mitigation": {"readout": True, "zne": True, "zne_scales": "1,3"}}
    spec = parse_spec(raw)
    dispatched = []

    def dispatch(batches):
        dispatched.extend(batches)
        return runner.backend.run(batches)

    runner = build_runner(spec, dispatch)
    info = runner.layout_report
    assert info["used"] in ("noise_aware", "default") and info["noise_aware_success"] > 0
    r = run_inference(spec, runner=runner, progress=False)
    assert r["round_trips"] == 1 and 0 <= r["accuracy"] <= 1
    rep = runner.mitigation.report()
    cal = [b for b in dispatched if b.meta["template"].startswith("readout_cal")]
    assert len(cal) == rep["readout"]["circuits"] > 0  # calibration went through dispatch
    assert rep["zne"]["shot_multiplier"] == pytest.approx(1.0) and rep["zne"]["circuit_multiplier"] == 2.0
    with pytest.raises(QssmError, match="IBM runtime"):
        build_runner(parse_spec({**raw, "mitigation": {"twirling": True}}))
    with pytest.raises(QssmError, match="extrapolation"):
        build_runner(parse_spec({**raw, "backend": {"name": "aer:fake_fez", "shots": 300},
                                 "mitigation": {"zne": True, "extrapolation": "cubic"}}))
