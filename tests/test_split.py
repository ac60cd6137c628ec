"""QLAM on noisy devices: shallow hand-off preparation, shadows and the fitted estimate, purification,
operator back-propagation, and segment = "auto" (docs/architecture.md, "QLAM segments")."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector, random_hermitian

from qssm.app.inference import run_inference
from qssm.backends.registry import get_backend
from qssm.circuits.shallow_prep import fidelity, fit_hea, hea_circuit, hea_states, n_hea_params
from qssm.circuits.stateprep import n_prep_params, prep_circuit
from qssm.circuits.templates import memory_template
from qssm.jobs.spec import parse_spec
from qssm.models import checkpoint
from qssm.models.evaluator import fused_program
from qssm.models.statevector import pauli_expectations, run_program
from qssm.models.tasks import test_set
from qssm.pipeline.compile import CompileOptions, compile_circuit
from qssm.pipeline.handoff import Handoff
from qssm.pipeline.obp import pauli_coefficients
from qssm.pipeline.shadows import basis_angles, basis_labels, fit_depolarized, pauli_estimates, random_bases
from qssm.pipeline.tomography import tomography_paulis

RING, CHAIN = "checkpoints/qlam-digits.safetensors", "checkpoints/qlam-digits-chain.safetensors"


def handoff_states(path: str, n: int, token: int = 4) -> np.ndarray:
    """Real QLAM hand-off states: the exact memory after `token` of 8 tokens of test images."""
    model = checkpoint.load(path)[0].double()
    x = test_set(model.cfg.task, 10007).inputs[:n].double()
    with torch.no_grad():
        call = model.memory_call(x)
        prog, state = fused_program(call), None
        for t in range(token):
            state = run_program(prog, call.inputs[:, t], state)
    return state.numpy()


def spec(path, backend="exact", shots=0, n=6, split=None, mitigation=None):
    return parse_spec({"model": {"checkpoint": path}, "data": {"n": n}, "backend": {"name": backend, "shots": shots},
                       "split": split or {}, "mitigation": mitigation or {}})


# -- shallow preparation -----------------------------------------------------------------------------
def test_shallow_prep_is_a_quarter_of_mottonen_on_fez_at_fidelity_099():
    """The acceptance goal: <= 25% of Moettoenen's two-qubit gates after transpiling to Fez, at
    fidelity >= 0.99 to real hand-off states (ring checkpoint, after 4 of 8 tokens)."""
    fez, opts = get_backend("dm:fake_fez"), CompileOptions(2, 7)
    mottonen = compile_circuit(prep_circuit(6, ParameterVector("p", n_prep_params(6))), ("ZIIIII",), fez, opts)
    shallow = compile_circuit(hea_circuit(6, 12, ParameterVector("p", n_hea_params(6, 12))), ("ZIIIII",), fez, opts)
    assert shallow.metrics["two_qubit"] <= 0.25 * mottonen.metrics["two_qubit"], (shallow.metrics, mottonen.metrics)
    assert shallow.metrics["swaps"] == 0
    targets = handoff_states(RING, 6)
    angles, fid = fit_hea(targets, 12)
    assert fid.min() >= 0.99, fid
    # the Qiskit template bound with the fitted angles prepares what the torch fit says
    for row, target in zip(angles[:2], targets[:2]):
        sv = Statevector(hea_circuit(6, 12, row)).data
        assert fidelity(sv[None], target[None])[0] >= 0.99


def test_hea_states_match_qiskit():
    p = np.random.default_rng(1).normal(size=(3, n_hea_params(4, 3)))
    ours = hea_states(torch.as_tensor(p), 4, 3).numpy()
    ref = np.stack([Statevector(hea_circuit(4, 3, row)).data for row in p])
    assert np.abs(ours - ref).max() < 1e-10


def test_shadow_template_parameter_order():
    model = checkpoint.load(RING)[0].double()
    call = model.memory_call(torch.zeros(1, 8, model.cfg.input_dim, dtype=torch.float64))
    t = memory_template(call, 2, prepared="hea2", basis=True)
    names = [p.name.split("[")[0] for p in t.circuit.parameters]
    assert names == sorted(names) and names[0] == "p" and names[-1] == "x" and "v" in names
    assert t.name == "memory.k2.hea2.shadow"


# -- state estimation --------------------------------------------------------------------------------
def _basis_values(psi: np.ndarray, bases: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Exact Z-string values of (lam psi + (1 - lam) I/d) in each basis: (R, M, 2^n - 1)."""
    e = pauli_expectations(torch.as_tensor(psi), basis_labels(bases)).numpy()
    return lam * e.reshape(len(psi), len(bases), -1)


def test_shadows_over_every_basis_are_exact():
    """With each of the 3^n bases once, the shadow estimator 3^|S| mean[match] <P>_b is <P> exactly."""
    n = 3
    psi = handoff_states(CHAIN, 2)[:, :: 2 ** 3]  # any states; renormalised below
    psi = psi / np.linalg.norm(psi, axis=1, keepdims=True)
    bases = np.array(np.meshgrid(*[range(3)] * n, indexing="ij")).reshape(n, -1).T
    est = pauli_estimates(_basis_values(psi, bases), bases, groups=1)
    exact = pauli_expectations(torch.as_tensor(psi), tomography_paulis(n)).numpy()
    assert np.abs(est - exact).max() < 1e-10


def test_basis_angles_rotate_each_basis_to_z():
    from qiskit import QuantumCircuit

    for letter, state in [(0, "+"), (1, "r"), (2, "0")]:
        ry, rz = basis_angles(np.array([[letter]]))[0]
        qc = QuantumCircuit(1)
        qc.rz(rz, 0)
        qc.ry(ry, 0)
        assert Statevector.from_label(state).evolve(qc).expectation_value(SparsePauliOp("Z")).real == pytest.approx(1)


def test_fit_recovers_a_depolarized_state_from_few_bases():
    """Targeted estimation: 16 of the 729 bases pin down a depolarized pure state (purification
    recovers the noiseless state; lam is the shrink)."""
    psi = handoff_states(RING, 3)
    bases = random_bases(16, 6, seed=3)
    init = psi + 0.3 * np.random.default_rng(0).normal(size=psi.shape)  # a rough start
    fit, lam = fit_depolarized(_basis_values(psi, bases, lam=0.6), bases, init / np.linalg.norm(init, axis=1, keepdims=True))
    assert fidelity(fit, psi).min() > 0.99
    assert np.allclose(lam, 0.6, atol=0.02)


def test_purification_removes_depolarizing_noise():
    """The dominant eigenvector of lam |psi><psi| + (1 - lam) I/d is psi: with purification the
    hand-off is exact at lam = 0.3; without it the re-prepared mixture has fidelity ~lam."""
    psi = handoff_states(RING, 4)
    d = psi.shape[1]
    rho = 0.3 * np.einsum("bi,bj->bij", psi, psi.conj()) + 0.7 * np.eye(d)[None] / d
    pure, weight = Handoff().targets(rho, np.random.default_rng(0))
    assert fidelity(pure, psi).min() > 1 - 1e-9 and np.allclose(weight, 0.3 + 0.7 / d)
    mixed, _ = Handoff(purify=False, mixture=64).targets(rho, np.random.default_rng(0))
    assert mixed.shape == (4 * 64, d)
    f = fidelity(mixed, np.repeat(psi, 64, axis=0)).reshape(4, 64).mean(1)
    assert np.all(np.abs(f - (0.3 + 0.7 / d)) < 4 * math.sqrt(0.3 * 0.7 / 64))  # binomial band


# -- runs through the pipeline ------------------------------------------------------------------------
def test_shallow_prep_segments_track_the_exact_run():
    r = run_inference(spec(RING, split={"segment": 4, "prep": "shallow"}), progress=False)
    assert r["min_prep_fidelity"] >= 0.99 and r["round_trips"] == 2
    # a 1 - F infidelity moves readouts by at most 2 sqrt(1 - F) each: a small logit error
    assert r["logit_error_mean"] < 0.3 and r["agreement"] == 1.0


@pytest.mark.parametrize("tomography,bases", [("fit", 16), ("shadows", 64)])
def test_random_basis_handoffs_send_fewer_circuits(tomography, bases):
    split = {"segment": 4, "tomography": tomography, "shadow_bases": bases}
    r = run_inference(spec(RING, shots=4000, n=6, split=split), progress=False)
    # readout groups per prefix + one circuit per distinct random basis (repeats among the draws
    # from 3^6 bases are sent once), against 729 bases per hand-off for Pauli tomography
    assert 6 * (8 * 3 + 0.9 * bases) <= r["executions"] <= 6 * (8 * 3 + bases)
    if tomography == "fit":  # the fitted hand-off is as good as 729-basis tomography at this shot count
        assert r["logit_error_mean"] < 0.6 and r["agreement"] >= 5 / 6


def test_obp_without_truncation_is_exact_and_truncation_is_bounded():
    exact = run_inference(spec(CHAIN, split={"obp_steps": 2, "obp_max_weight": 0, "obp_tol": 0.0}), progress=False)
    assert exact["logit_error_max"] < 1e-8 and exact["obp_truncation_bound"] < 1e-9
    cut = run_inference(spec(CHAIN, split={"obp_steps": 1, "obp_max_weight": 3}), progress=False)
    assert 0 < cut["obp_truncation_bound"] and cut["obp_terms"] < exact["obp_terms"]
    assert cut["logit_error_mean"] < 0.5


def test_pauli_coefficients_match_qiskit():
    a = random_hermitian(8, seed=2).data
    ref = SparsePauliOp.from_operator(a)
    table = dict(zip(ref.paulis.to_labels(), ref.coeffs.real))
    ours = pauli_coefficients(a[None])[0]
    assert max(abs(c - table.get(lab, 0.0)) for c, lab in zip(ours, tomography_paulis(3))) < 1e-12


# -- segment = "auto" ---------------------------------------------------------------------------------
def test_choose_respects_budget_and_prefers_cheaper_within_noise():
    from qssm.app.auto import choose, predict
    from qssm.errors import QssmError

    rows = [{"segment": 0, "predicted_accuracy": 0.90, "shots_per_image": 100},
            {"segment": 2, "predicted_accuracy": 0.905, "shots_per_image": 500},
            {"segment": 1, "predicted_accuracy": 0.95, "shots_per_image": 1000}]
    assert choose(rows, 0.01, 0)["segment"] == 1
    assert choose(rows, 0.01, 600)["segment"] == 0  # 0.905 vs 0.90: within noise, the cheaper
    with pytest.raises(QssmError, match="max_shots_per_image"):
        choose(rows, 0.01, 50)
    assert predict([(0.2, 0.5), (0.6, 0.9)], 0.4, 0.1, 0.97) == pytest.approx(0.7)  # monotone, interpolated
    assert predict([(0.2, 0.5), (0.6, 0.9)], 0.9, 0.1, 0.97) >= 0.9


def _frontier():
    from qssm.app.auto import FRONTIER

    if not FRONTIER.exists():
        pytest.skip("no measured frontier (python -m bench.generate.qlam_split --frontier)")
    return json.loads(FRONTIER.read_text())


BASE = {"prep": "shallow", "tomography": "fit", "shadow_bases": 32}


def _auto_on(target, frontier):
    """split_choice on `target` among the splits measured there (ring checkpoint, spec hand-off
    BASE); returns the measured row of the choice and every measured row."""
    from qssm.app import auto

    points = _frontier()
    measured = {(r["split"].get("segment", 0), r["split"].get("obp_steps", 0)): r for r in points
                if r["target"] == target and r["checkpoint"] == "qlam-digits" and not r["mitigation"]
                and ({k: r["split"].get(k) for k in BASE} == BASE or not (set(r["split"]) - {"obp_steps"}))}
    assert len(measured) >= 3, f"too few measured splits on {target}"
    s = spec(RING, target, 4000, n=200, split={**BASE, "segment": "auto", "obp_steps": "auto"})
    model = checkpoint.load(RING)[0]
    original = auto.candidates
    auto.candidates = lambda split, t: [c for c in original(split, t) if (c["segment"], c["obp_steps"]) in measured]
    try:
        choice = auto.split_choice(s, model, get_backend(target), frontier=frontier(points, target))
    finally:
        auto.candidates = original
    return measured[choice["chosen"]["segment"], choice["chosen"]["obp_steps"]], list(measured.values())


def _dominating(got, rows):
    """The measured splits both as cheap as `got` and better by more than two standard errors (none:
    `got` is on the frontier)."""
    return [r for r in rows if r["shots_per_image"] <= got["shots_per_image"]
            and r["accuracy"] > got["accuracy"] + 2 * max(r["accuracy_stderr"], got["accuracy_stderr"])]


@pytest.mark.parametrize("target", ["dm:fake_fez", "dm:fake_sherbrooke", "dm:iqm_garnet"])
def test_auto_picks_a_frontier_point_on_each_target(target):
    """With the shipped frontier (the target's own measurements included), the split chosen is on the
    target's measured accuracy-cost frontier."""
    got, rows = _auto_on(target, lambda points, t: points)
    assert not _dominating(got, rows), got


@pytest.mark.parametrize("target", [
    "dm:fake_fez", "dm:iqm_garnet",
    pytest.param("dm:fake_sherbrooke", marks=pytest.mark.xfail(strict=True, reason=(
        "a known limit of predicting from the estimated success: segments of 1 have S = 0.31 on "
        "Sherbrooke and 0.33 on Garnet, but measure 0.51 and 0.92; S does not see that Eagle's "
        "errors (long ECRs, relaxation) survive purification (README, QLAM levers)")))])
def test_auto_predicts_an_unmeasured_target_from_the_others(target):
    """Leave the target's own measurements out: predicted from the other targets' through the
    transpilation estimate, the choice is still on the target's measured frontier."""
    got, rows = _auto_on(target, lambda points, t: [r for r in points if r["target"] != t])
    assert not _dominating(got, rows), got


def test_compile_shows_the_auto_choice(tmp_path, capsys):
    from qssm.cli import main

    path = tmp_path / "auto.toml"
    path.write_text(f'[model]\ncheckpoint = "{CHAIN}"\n[data]\nn = 4\n[backend]\nname = "dm:fake_fez"\nshots = 1000\n'
                    '[split]\nsegment = "auto"\n')
    assert main(["compile", str(path), "--no-cuts"]) == 0
    out = capsys.readouterr().out
    assert "split = auto on dm:fake_fez" in out and "why:" in out and "<-" in out


def test_purified_readouts_are_exact_on_an_exact_backend():
    r = run_inference(spec(CHAIN, n=4, split={"segment": 4, "purify_readout": True}), progress=False)
    assert r["logit_error_max"] < 1e-6 and r["round_trips"] == 2


def test_report_renders_the_frontier_section():
    from qssm.report import pareto, render_html

    rows = [{"target": t, "label": lab, "accuracy": a, "accuracy_stderr": 0.01, "exact_accuracy": 0.97,
             "qpu_seconds_per_image": c, "shots_per_image": c * 1000}
            for t in ("dm:fake_fez", "dm:iqm_garnet") for lab, a, c in (("none", 0.7, 20.0), ("seg2", 0.94, 120.0),
                                                                         ("worse", 0.8, 300.0))]
    assert [p["label"] for p in pareto(rows[:3])] == ["none", "seg2"]
    html = render_html({"split_frontier": rows, "split_choice": [
        {"target": "dm:fake_fez", "chosen": {"segment": 2, "obp_steps": 0}, "why": "because",
         "candidates": [{"segment": 2, "obp_steps": 0, "predicted_accuracy": 0.94}]}]})
    assert "accuracy against cost per target" in html and "data:image/png;base64" in html
    assert "segment = auto on dm:fake_fez" in html


def test_obp_agrees_with_qiskit_addon_obp():
    """The exact 64 x 64 Heisenberg picture against the addon's slice-by-slice propagation (no
    truncation) on one sequence's last memory step."""
    from qiskit_addon_obp import backpropagate as addon_backpropagate

    from qssm.pipeline.obp import backpropagate

    model = checkpoint.load(RING)[0].double()
    x = test_set(model.cfg.task, 10007).inputs[:1].double()
    with torch.no_grad():
        call = model.memory_call(x)
    ours = backpropagate(call, 7, 1)[0]  # (n_obs, 4^n - 1)
    step = memory_template(call, 1).circuit
    bound = step.assign_parameters(call.inputs[0, 7].detach().numpy())
    labels = tomography_paulis(6)
    for k in (0, 9, 18):
        op, _, _ = addon_backpropagate(SparsePauliOp(call.observables[k]), [bound])
        ref = dict(zip(op.paulis.to_labels(), op.coeffs.real))
        assert max(abs(c - ref.get(lab, 0.0)) for c, lab in zip(ours[k], labels)) < 1e-6  # the addon trims |c| < 1e-8
