"""dmsim, the torch density-matrix engine, held against the libraries that do the same thing:
Aer's density-matrix EstimatorV2 and SamplerV2 with the same noise model, Braket's braket_dm with a
device snapshot's noise, and an independent branching reference built on qiskit.quantum_info."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import PTM, DensityMatrix, Kraus, Operator, SparsePauliOp, random_quantum_channel

from qssm.backends import devices, dmsim
from qssm.backends.aer import active_noise_model, compact
from qssm.backends.fake_devices import fake_backend
from qssm.backends.noise import noise_from_aer, ptm
from qssm.backends.sampling import bitarray_outcomes, histograms
from qssm.pipeline.measure import expectations, measurement_groups, parity_masks, with_measurement

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ("qmamba-haystack", "qlam-digits")
DEVICES = ("fake_fez", "fake_sherbrooke")
AER_TOL = 1e-6


# ---- circuits: shipped templates, transpiled and compacted as qssm's aer backend does ----------


@lru_cache(maxsize=None)
def _model(name: str):
    from qssm.models import checkpoint

    model, _ = checkpoint.load(ROOT / "checkpoints" / f"{name}.safetensors")
    return model


def _templates(name: str) -> list:
    from qssm.circuits.templates import memory_template, model_templates

    model = _model(name)
    out = list(model_templates(model))
    if model.cfg.kind == "qlam":
        call = model.memory_call(torch.zeros(1, 1, model.cfg.input_dim))
        out += [memory_template(call, k) for k in range(1, 9)]
    return out


@lru_cache(maxsize=None)
def compacted(name: str, device: str) -> list[tuple]:
    """(template name, compacted ISA circuit, observables, active physical qubits) per template."""
    from qssm.pipeline.compile import CompileOptions, transpile

    target = fake_backend(device).target
    out = []
    for t in _templates(name):
        isa, _ = transpile(t.circuit, target, CompileOptions(2, 7))
        obs = [SparsePauliOp(label).apply_layout(isa.layout) for label in t.observables]
        out.append((t.name, *compact(isa, obs)))
    return out


def aer_options(noise_model) -> dict:
    return {"backend_options": {"method": "density_matrix", "noise_model": noise_model}}


def aer_values(circuit, observables, rows, noise_model) -> np.ndarray:
    from qiskit_aer.primitives import EstimatorV2

    res = EstimatorV2(options=aer_options(noise_model)).run([(circuit, [observables], rows[:, None, :])]).result()
    return np.asarray(res[0].data.evs).reshape(len(rows), -1)


def rows_for(circuit, count: int, seed: int) -> np.ndarray:
    """Random parameter rows for a circuit (or a compiled program)."""
    width = len(circuit.parameters)
    return np.random.default_rng(seed).uniform(-math.pi, math.pi, (count, width))


# ---- conventions ---------------------------------------------------------------------------------


def test_pauli_transfer_matrices_follow_qiskit():
    channel = random_quantum_channel(4, seed=1)
    assert np.abs(ptm(Kraus(channel).data) - PTM(channel).data).max() < 1e-12


@pytest.mark.parametrize("gate", dmsim.PARAMETERIZED_GATES)
def test_parameterized_gate_matrices(gate):
    from qiskit.circuit import library as lib

    from qssm.backends.devices import _ionq_gates

    gpi, gpi2 = _ionq_gates()
    make, n_params = {"rz": (lib.RZGate, 1), "p": (lib.PhaseGate, 1), "u1": (lib.U1Gate, 1), "rx": (lib.RXGate, 1),
                      "ry": (lib.RYGate, 1), "r": (lib.RGate, 2), "u": (lib.UGate, 3), "u3": (lib.U3Gate, 3),
                      "gpi": (gpi, 1), "gpi2": (gpi2, 1), "rzz": (lib.RZZGate, 1), "rxx": (lib.RXXGate, 1),
                      "ryy": (lib.RYYGate, 1)}[gate]
    angles = np.random.default_rng(0).uniform(-4, 4, (5, n_params))
    got = dmsim._gate_matrix(gate, [torch.tensor(a) for a in angles.T]).numpy()
    want = np.stack([Operator(make(*a)).data for a in angles])
    assert np.abs(got - want).max() < 1e-12


def test_parameter_expressions_affine_and_not():
    """Angles that are affine in the inputs (ISA circuits) and that are not (sympy path), with
    their gradients: against Qiskit's Statevector of the bound circuit."""
    from qiskit.quantum_info import Statevector

    x = ParameterVector("x", 3)
    qc = QuantumCircuit(2)
    qc.rx(2 * x[0] - x[2] / 3 + 0.4, 0)
    qc.ry(x[1] * x[2], 1)
    qc.cz(0, 1)
    qc.rz(x[0].sin() + 1.0, 0)
    qc.r(x[1], x[0] + 0.5, 1)
    obs = ["ZI", "IZ", "XY", "YX"]
    rows = torch.tensor(rows_for(qc, 3, seed=8), requires_grad=True)
    got = dmsim.expectation_values(dmsim.compile_circuit(qc), rows, obs)
    want = [[Statevector(qc.assign_parameters(r)).expectation_value(SparsePauliOp(o)).real for o in obs]
            for r in rows.detach().numpy()]
    assert np.abs(got.detach().numpy() - np.array(want)).max() < 1e-12
    (grad,) = torch.autograd.grad(got.sum(), rows)
    h = 1e-6
    for j in range(3):
        e = torch.zeros_like(rows)
        e[:, j] = h
        with torch.no_grad():
            fd = (dmsim.expectation_values(dmsim.compile_circuit(qc), rows + e, obs).sum(1)
                  - dmsim.expectation_values(dmsim.compile_circuit(qc), rows - e, obs).sum(1)) / (2 * h)
        assert torch.allclose(grad[:, j], fd, atol=1e-7)


# ---- exact values against Aer ------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_expectations_match_aer_on_every_template(name, device):
    """Every template of both shipped checkpoints (QLAM: also the memory prefixes k = 1..8),
    compacted onto its active qubits with qssm's noise model: Aer's exact noisy values to 1e-6."""
    for i, (tname, circuit, observables, active) in enumerate(compacted(name, device)):
        model = active_noise_model(device, active)
        rows = rows_for(circuit, 1 if circuit.num_parameters > 40 else 2, seed=i)  # Aer: ~0.3 s per binding at k=8
        program = dmsim.compile_circuit(circuit, noise_from_aer(model, circuit.num_qubits))
        got = dmsim.expectation_values(program, rows, observables).numpy()
        want = aer_values(circuit, observables, rows, model)
        assert np.abs(got - want).max() < AER_TOL, (tname, np.abs(got - want).max())


def test_tomography_groups_share_one_readout():
    """The 27 Pauli-basis groups of 3-qubit tomography (read jointly) and a tail with a gate of its
    own (run separately) equal each circuit compiled alone."""
    from qssm.pipeline.compile import CompileOptions, transpile
    from qssm.pipeline.tomography import tomography_paulis

    isa, _ = transpile(_braket_template()[0], fake_backend("fake_fez").target, CompileOptions(2, 0))
    circuit, _, active = compact(isa, [])
    noise = noise_from_aer(active_noise_model("fake_fez", active), circuit.num_qubits)
    groups = measurement_groups([SparsePauliOp(label) for label in tomography_paulis(3)])
    circuits = [with_measurement(circuit, g) for g in groups]
    entangled = circuit.copy()
    entangled.cz(0, 1)
    entangled.measure_all()
    circuits.append(entangled)
    shared = dmsim.compile_many(circuits, noise)
    assert len(groups) == 27 and len(shared.joint.tails) == 27
    rows = rows_for(circuit, 2, seed=6)
    for c, p in zip(circuits, dmsim.outcome_probabilities_many(shared, rows)):
        assert torch.allclose(p, dmsim.outcome_probabilities(dmsim.compile_circuit(c, noise), rows), atol=1e-12)


def test_shared_body_equals_separate_circuits_and_chunking_changes_nothing(monkeypatch):
    """compile_many (body once, then each group's tail) == each measurement-group circuit on its
    own, and rows in small chunks == rows in one chunk."""
    _, circuit, observables, active = compacted("qlam-digits", "fake_fez")[0]
    noise = noise_from_aer(active_noise_model("fake_fez", active), circuit.num_qubits)
    circuits = [with_measurement(circuit, g) for g in measurement_groups(observables)]
    rows = rows_for(circuit, 5, seed=3)
    shared = dmsim.outcome_probabilities_many(dmsim.compile_many(circuits, noise), rows)
    assert len(shared) == len(circuits) == 3
    for c, p in zip(circuits, shared):
        alone = dmsim.outcome_probabilities(dmsim.compile_circuit(c, noise), rows)
        assert torch.allclose(p, alone, atol=1e-12) and torch.allclose(p.sum(1), torch.ones(5, dtype=p.dtype))
    program = dmsim.compile_circuit(circuit, noise)
    whole = dmsim.expectation_values(program, rows, observables)
    monkeypatch.setattr(dmsim, "CHUNK_BYTES", 1)  # one row per chunk
    assert torch.allclose(dmsim.expectation_values(program, rows, observables), whole, atol=1e-13)


# ---- sampling against Aer's SamplerV2 ------------------------------------------------------------------


def test_sampled_values_agree_with_aer_sampler_within_shot_noise():
    """QLAM's 23 Paulis from its X, Y, Z measurement groups: engine counts (multinomial from the
    exact distribution) and Aer SamplerV2 counts give values within 4 standard errors."""
    from qiskit_aer.primitives import SamplerV2

    _, circuit, observables, active = compacted("qlam-digits", "fake_fez")[0]
    model = active_noise_model("fake_fez", active)
    groups = measurement_groups(observables)
    circuits = [with_measurement(circuit, g) for g in groups]
    rows, shots = rows_for(circuit, 3, seed=5), 4000
    probs = dmsim.outcome_probabilities_many(dmsim.compile_many(circuits, noise_from_aer(model, circuit.num_qubits)),
                                             rows)
    ours = [dmsim.sample_counts(p, shots, seed=11 + g).numpy() for g, p in enumerate(probs)]
    res = SamplerV2(options=aer_options(model), seed=3).run([(c, rows, shots) for c in circuits]).result()
    theirs = [histograms(bitarray_outcomes(r.data.meas), len(g.support)) for r, g in zip(res, groups)]
    v1, s1 = expectations(ours, observables, groups, shots)
    v2, s2 = expectations(theirs, observables, groups, shots)
    assert (np.abs(v1 - v2) <= 4 * np.hypot(s1, s2) + 1e-12).all()
    exact = dmsim.expectation_values(dmsim.compile_circuit(circuit, noise_from_aer(model, circuit.num_qubits)), rows,
                                     observables).numpy()
    # the measured Paulis also carry readout error and the basis change's noise: not `exact`, but close
    assert np.abs(v1 - exact).max() < 0.15


def test_sample_counts_reproducible_by_row():
    """A row's counts depend only on (seed, its row index): chunks equal the whole batch."""
    p = torch.softmax(torch.randn(10, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), 1)
    whole = dmsim.sample_counts(p, 1000, seed=7)
    parts = torch.cat([dmsim.sample_counts(p[i:i + 3], 1000, seed=7, first_row=i) for i in range(0, 10, 3)])
    assert whole.dtype == torch.int64 and whole.shape == (10, 16) and (whole.sum(1) == 1000).all()
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, dmsim.sample_counts(p, 1000, seed=8))


# ---- measurements: Aer's noise rules and mid-circuit measurements ------------------------------------


def _reference_distribution(circuit: QuantumCircuit, errors: dict, readout: dict) -> np.ndarray:
    """Exact clbit distribution from qiskit.quantum_info density matrices, one per recorded
    history (independent of dmsim). errors[(name, qubits)]: QuantumError (before a measurement,
    after anything else); readout[q]: P[true, recorded]."""
    n = circuit.num_qubits
    branches = {0: DensityMatrix.from_label("0" * n)}  # clbit integer -> unnormalized state

    def noisy(name, qs):
        err = errors.get((name, qs))
        if err is not None:
            for key in branches:
                branches[key] = branches[key].evolve(err.to_quantumchannel(), qargs=list(qs))

    for inst in circuit.data:
        name, op = inst.operation.name, inst.operation
        qs = tuple(circuit.find_bit(q).index for q in inst.qubits)
        if name == "barrier":
            continue
        if name == "measure":
            noisy(name, qs)
            (c,) = (circuit.find_bit(b).index for b in inst.clbits)
            conf = readout.get(qs[0], np.eye(2))
            new: dict = {}
            for key, rho in branches.items():
                for t in (0, 1):
                    part = rho.evolve(Operator(np.diag([1 - t, t])), qargs=list(qs))
                    for r in (0, 1):
                        k = key & ~(1 << c) | (r << c)
                        new[k] = new[k] + conf[t, r] * part if k in new else conf[t, r] * part
            branches = new
            continue
        if name == "reset":
            chan = Kraus([np.array([[1, 0], [0, 0]]), np.array([[0, 1], [0, 0]])])
            branches = {k: rho.evolve(chan, qargs=list(qs)) for k, rho in branches.items()}
        elif name not in ("delay", "id"):
            branches = {k: rho.evolve(Operator(op), qargs=list(qs)) for k, rho in branches.items()}
        noisy(name, qs)
    out = np.zeros(2**circuit.num_clbits)
    for key, rho in branches.items():
        out[key] += rho.trace().real
    return out


def _noise_model(errors: dict, readout: dict, default: dict | None = None):
    from qiskit_aer.noise import NoiseModel, ReadoutError

    model = NoiseModel(basis_gates=["cz", "rz", "sx", "x", "id", "delay", "reset"])
    for (name, qs), err in errors.items():
        model.add_quantum_error(err, name, list(qs), warnings=False)
    for name, err in (default or {}).items():
        model.add_all_qubit_quantum_error(err, name, warnings=False)
    for q, m in readout.items():
        model.add_readout_error(ReadoutError(m), [q])
    return model


def _sampled(circuit, model, shots: int, seed: int) -> np.ndarray:
    """Aer SamplerV2 frequencies over clbit integers (all registers joined)."""
    from qiskit_aer.primitives import SamplerV2

    res = SamplerV2(options=aer_options(model), seed=seed).run([(circuit, None, shots)]).result()[0]
    ints = np.zeros(shots, dtype=np.int64)
    for reg in circuit.cregs:
        arr = getattr(res.data, reg.name).array.astype(np.int64)
        ints |= (arr << (8 * np.arange(arr.shape[-1])[::-1])).sum(-1).reshape(-1) << circuit.find_bit(reg[0]).index
    return np.bincount(ints, minlength=2**circuit.num_clbits) / shots


def _within_shot_noise(exact: np.ndarray, freq: np.ndarray, shots: int) -> bool:
    se = np.sqrt(np.maximum(exact * (1 - exact), 1 / shots) / shots)
    return bool((np.abs(freq - exact) < 5 * se).all())


def test_aer_noise_rules():
    """Measure errors come before the measurement, reset errors after the reset, a qubit's own
    error replaces the all-qubit one, delays take their error, readout flips only the recorded
    bit (a second measurement sees the true outcome): against the reference and Aer's samples."""
    from qiskit_aer.noise import depolarizing_error, pauli_error, thermal_relaxation_error

    flip = lambda p: pauli_error([("X", p), ("I", 1 - p)])  # noqa: E731
    errors = {("measure", (0,)): flip(0.1), ("reset", (1,)): flip(0.2), ("x", (0,)): flip(0.05),
              ("delay", (0,)): thermal_relaxation_error(50e-6, 40e-6, 20e-6),
              ("cz", (0, 1)): depolarizing_error(0.05, 2)}
    readout = {0: np.array([[0.9, 0.1], [0.25, 0.75]]), 1: np.array([[0.97, 0.03], [0.08, 0.92]])}
    default = {"x": flip(0.4)}
    qc = QuantumCircuit(2, 4)
    qc.x(0)
    qc.x(1)
    qc.delay(100, 0, unit="dt")
    qc.sx(1)
    qc.cz(0, 1)
    qc.measure(0, 0)
    qc.measure(0, 1)
    qc.reset(1)
    qc.measure(1, 2)
    qc.x(1)
    qc.measure(1, 3)
    model = _noise_model(errors, readout, default)
    reference_errors = dict(errors) | {("x", (1,)): default["x"]}
    want = _reference_distribution(qc, reference_errors, readout)
    got = dmsim.outcome_probabilities(dmsim.compile_circuit(qc, noise_from_aer(model, 2)), np.zeros((1, 0)))[0]
    assert np.abs(got.numpy() - want).max() < 1e-12
    assert _within_shot_noise(want, _sampled(qc, model, 40_000, seed=1), 40_000)


def test_delays_take_aer_relaxation_pass():
    """A model from NoiseModel.from_backend carries Aer's relaxation pass for delays: the engine
    runs it as Aer does (circuits with delays only), and the delays change the values."""
    from qiskit_aer.noise import NoiseModel
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    model = NoiseModel.from_backend(FakeManilaV2())
    qc = QuantumCircuit(5)
    qc.x(0)
    qc.sx(1)
    qc.delay(2000, 0, unit="dt")
    qc.delay(3, 1, unit="us")
    qc.cx(0, 1)
    obs = [SparsePauliOp.from_sparse_list([(p, [q], 1.0)], 5) for q in (0, 1) for p in "XYZ"]
    noise = noise_from_aer(model, 5)
    got = dmsim.expectation_values(dmsim.compile_circuit(qc, noise), np.zeros((1, 0)), obs).numpy()
    assert np.abs(got - aer_values(qc, obs, np.zeros((1, 0)), model)).max() < AER_TOL
    undelayed = qc.copy_empty_like()
    for inst in qc.data:
        if inst.operation.name != "delay":
            undelayed.append(inst)
    assert np.abs(dmsim.expectation_values(dmsim.compile_circuit(undelayed, noise), np.zeros((1, 0)), obs).numpy()
                  - got).max() > 0.01


def _cut_subexperiment():
    """A qiskit-addon-cutting subexperiment (one CZ cut) for FakeFez with a mid-circuit
    measurement whose qubit is used again, compacted onto its active qubits (registers kept)."""
    from qiskit.transpiler import generate_preset_pass_manager

    from qssm.pipeline.cutting import cut_experiments, plan_cut

    x = ParameterVector("x", 4)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.rx(x[q], q)
        qc.ry(0.3 + 0.2 * q, q)
    qc.cz(0, 1)
    qc.cz(2, 3)
    qc.cz(1, 2)
    for q in range(4):
        qc.ry(0.7 - 0.1 * q, q)
    qc.cz(0, 1)
    qc.cz(2, 3)
    obs = ("IIIZ", "ZIII", "IIXX", "ZZII")
    plan = plan_cut(qc, obs, 2, 100)
    pm = generate_preset_pass_manager(optimization_level=1, target=fake_backend("fake_fez").target, seed_transpiler=0)
    ex = cut_experiments(qc, obs, plan)
    for circuits in ex.subexperiments.values():
        for c in pm.run(circuits):
            data = [i for i in c.data if i.operation.name != "barrier"]
            reused = any(i.operation.name == "measure" and any(set(i.qubits) & set(j.qubits) for j in data[k + 1:])
                         for k, i in enumerate(data))
            if reused and c.num_parameters:
                active = sorted({c.find_bit(q).index for i in data for q in i.qubits})
                pos = {p: i for i, p in enumerate(active)}
                small = QuantumCircuit(len(active))
                for reg in c.cregs:
                    small.add_register(ClassicalRegister(reg.size, reg.name))
                for i in data:
                    small.append(i.operation, [small.qubits[pos[c.find_bit(q).index]] for q in i.qubits],
                                 [small.clbits[c.find_bit(b).index] for b in i.clbits])
                return small, tuple(active)
    raise AssertionError("no subexperiment with a mid-circuit measurement")


def test_mid_circuit_measurements_of_a_cut_subexperiment():
    """Exact distribution over both registers (qpd_measurements, observable_measurements) with
    FakeFez noise: against Aer's samples, and against the reference with the same channels."""
    circuit, active = _cut_subexperiment()
    assert set(r.name for r in circuit.cregs) == {"qpd_measurements", "observable_measurements"}
    model = active_noise_model("fake_fez", active)
    program = dmsim.compile_circuit(circuit, noise_from_aer(model, circuit.num_qubits))
    assert program.branches  # the qpd measurement splits the state
    rows = rows_for(circuit, 2, seed=4)
    got = dmsim.outcome_probabilities(program, rows).numpy()
    for r, row in enumerate(rows):
        bound = circuit.assign_parameters(row)
        errors = {(name, qs): e for name, by_q in model._local_quantum_errors.items() for qs, e in by_q.items()}
        readout = {qs[0]: np.asarray(e.probabilities) for qs, e in model._local_readout_errors.items()}
        assert np.abs(got[r] - _reference_distribution(bound, errors, readout)).max() < 1e-10
        assert _within_shot_noise(got[r], _sampled(bound, model, 40_000, seed=r), 40_000)


# ---- gradients ------------------------------------------------------------------------------------------


def test_gradients_match_finite_differences():
    """d/d(rows) of exact noisy values (QMamba template on FakeFez) and of a cut subexperiment's
    outcome distribution: autograd against central differences."""
    _, circuit, observables, active = compacted("qmamba-haystack", "fake_fez")[0]
    program = dmsim.compile_circuit(circuit, noise_from_aer(active_noise_model("fake_fez", active), circuit.num_qubits))
    cut, cut_active = _cut_subexperiment()
    cut_program = dmsim.compile_circuit(cut, noise_from_aer(active_noise_model("fake_fez", cut_active), cut.num_qubits))
    cases = [(program, lambda p, r: dmsim.expectation_values(p, r, observables)),
             (cut_program, dmsim.outcome_probabilities)]
    for prog, fn in cases:
        rows = torch.tensor(rows_for(prog, 2, seed=9), requires_grad=True)
        weights = torch.randn(fn(prog, rows).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

        def loss(r):
            return (fn(prog, r) * weights).sum()

        (grad,) = torch.autograd.grad(loss(rows), rows)
        h, fd = 1e-6, torch.zeros_like(rows)
        with torch.no_grad():
            for idx in np.ndindex(*rows.shape):
                e = torch.zeros_like(rows)
                e[idx] = h
                fd[idx] = (loss(rows + e) - loss(rows - e)) / (2 * h)
        assert torch.allclose(grad, fd, atol=1e-7), (grad - fd).abs().max()


# ---- Braket snapshot noise -----------------------------------------------------------------------------


def _braket_template():
    x = ParameterVector("x", 3)
    qc = QuantumCircuit(3)
    for q in range(3):
        qc.rx(x[q], q)
        qc.ry(0.4 + 0.3 * q, q)
    qc.cz(0, 1)
    qc.cz(1, 2)
    for q in range(3):
        qc.rz(0.2 * q - 0.5, q)
        qc.ry(x[q] * 0.5 + 0.1, q)
    qc.cz(0, 1)
    return qc, ("IIZ", "IZI", "ZII", "IXX", "YIZ")


def _braket_dm(circuit, rows, name: str, active) -> np.ndarray:
    """Density matrices from LocalSimulator("braket_dm") with devices.device_noise (Qiskit order)."""
    from braket.devices import LocalSimulator

    from qssm.backends.braket import convert, param_names, to_qiskit_order

    bc = convert(devices.to_braket_names(circuit))
    for q in range(circuit.num_qubits):
        if q not in bc.qubits:
            bc.i(q)
    bc = bc.density_matrix()
    sim = LocalSimulator("braket_dm", noise_model=devices.device_noise(name, active))
    names = param_names(circuit)
    out = [sim.run(bc, shots=0, inputs=dict(zip(names, map(float, r)))).result().values[0] for r in rows]
    return np.stack([to_qiskit_order(np.asarray(d), circuit.num_qubits) for d in out])


@pytest.mark.parametrize("name", devices.device_names())
def test_braket_snapshot_noise_matches_braket_dm(name):
    """devices.aer_noise_model carries device_noise's channels: the engine's exact values equal
    braket_dm's to 1e-6 (IonQ: GPI/GPI2 angles are expressions of the inputs); with measurement
    groups and readout flips, the engine's distributions give braket's readout-scaled values; Aer
    runs the same model where it knows the gates (IQM)."""
    from qssm.pipeline.compile import CompileOptions, transpile

    logical, labels = _braket_template()
    isa, _ = transpile(logical, devices.device_target(name), CompileOptions(2, 0))
    circuit, observables, active = compact(isa, [SparsePauliOp(lb).apply_layout(isa.layout) for lb in labels])
    model = devices.aer_noise_model(name, active)
    noise = noise_from_aer(model, circuit.num_qubits)
    rows = rows_for(circuit, 2, seed=2)
    got = dmsim.expectation_values(dmsim.compile_circuit(circuit, noise), rows, observables).numpy()
    rhos = _braket_dm(circuit, rows, name, active)
    want = np.array([[np.trace(o.to_matrix() @ rho).real for o in observables] for rho in rhos])
    assert np.abs(got - want).max() < 1e-6
    if name == "iqm_garnet":  # Aer has no instruction for qiskit_ionq's GPI gates nor for iswap
        assert np.abs(aer_values(circuit, observables, rows, model) - want).max() < 1e-6
    if name != "rigetti_ankaa3":  # elsewhere the groups' rz/sx basis change is noise-free, as braket's exact path
        groups = measurement_groups(observables)
        probs = dmsim.outcome_probabilities_many(dmsim.compile_many([with_measurement(circuit, g) for g in groups],
                                                                    noise), rows)
        ro = np.array(devices.readout_errors(name, active))
        values = np.zeros_like(want)
        for p, masks in zip(probs, parity_masks(observables, groups)):
            idx = np.arange(p.shape[1])
            for i, _, mask, coef in masks:
                values[:, i] += coef.real * (p.numpy() @ (1.0 - 2.0 * (np.bitwise_count(idx & mask) & 1)))
        shrink = np.array([np.prod(1 - 2 * ro[np.flatnonzero(o.paulis.x[0] | o.paulis.z[0])]) for o in observables])
        assert np.abs(values - want * shrink).max() < 1e-6


# ---- device discipline ------------------------------------------------------------------------------------


def test_rows_must_be_on_the_programs_device():
    qc = QuantumCircuit(1)
    qc.rx(ParameterVector("x", 1)[0], 0)
    program = dmsim.compile_circuit(qc, device="meta")
    with pytest.raises(ValueError, match="compile with device='cpu'"):
        dmsim.expectation_values(program, torch.zeros(2, 1), ["Z"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    _, circuit, observables, active = compacted("qmamba-haystack", "fake_fez")[0]
    noise = noise_from_aer(active_noise_model("fake_fez", active), circuit.num_qubits)
    rows = torch.tensor(rows_for(circuit, 4, seed=1))
    cpu = dmsim.expectation_values(dmsim.compile_circuit(circuit, noise), rows, observables)
    gpu = dmsim.expectation_values(dmsim.compile_circuit(circuit, noise, device="cuda"), rows.cuda(), observables)
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-12)


def test_noise_on_the_restricted_target_equals_the_full_device_model():
    """active_noise_model builds Aer's device errors on the active qubits' restricted Target: the
    same QuantumErrors and ReadoutErrors as the full-device constructors, renumbered."""
    from qiskit_aer.noise.device.models import basic_device_gate_errors, basic_device_readout_errors

    from qssm.backends.aer import active_noise_model
    from qssm.backends.fake_devices import fake_backend

    active = (1, 3, 4)
    pos = {p: i for i, p in enumerate(active)}
    target = fake_backend("fake_manila").target
    want = {(n, tuple(pos[q] for q in qs)): e for n, qs, e in basic_device_gate_errors(target=target)
            if set(qs) <= pos.keys()}
    nm = active_noise_model("fake_manila", active)
    got = {(n, tuple(qs)): e for n, by in nm._local_quantum_errors.items() for qs, e in by.items()}
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want)
    ro = {pos[qs[0]]: e for qs, e in basic_device_readout_errors(target=target) if qs[0] in pos}
    assert {qs[0]: e for qs, e in nm._local_readout_errors.items()} == ro
