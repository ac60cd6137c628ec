"""The torch simulator against an independent dense-matrix reference, and its gradients."""

import numpy as np
import pytest
import torch

from qssm.models.ansatz import Op, memory_step, n_inputs, n_weights, reuploading_circuit
from qssm.models.config import AnsatzConfig
from qssm.models.evaluator import ExactEvaluator, QuantumCall, z_labels
from qssm.models.statevector import compile_ops, pauli_expectations, run_ops, run_program, z_expectations

# ---- independent reference: full 2^n x 2^n matrices from numpy kron products ----------------
I2 = np.eye(2)
PAULI = {"I": I2, "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]), "Z": np.diag([1, -1])}


def rot(gate, t):
    c, s = np.cos(t / 2), np.sin(t / 2)
    return {"rx": np.array([[c, -1j * s], [-1j * s, c]]), "ry": np.array([[c, -s], [s, c]]),
            "rz": np.diag([np.exp(-1j * t / 2), np.exp(1j * t / 2)])}[gate]


def embed(mats: dict[int, np.ndarray], n: int) -> np.ndarray:
    """Kron with qubit n-1 leftmost (Qiskit order)."""
    out = np.array([[1.0]])
    for q in reversed(range(n)):
        out = np.kron(out, mats.get(q, I2))
    return out


def dense(op: Op, n: int, angle: float) -> np.ndarray:
    if len(op.qubits) == 1:
        return embed({op.qubits[0]: rot(op.gate, angle)}, n)
    a, b = op.qubits
    p0, p1 = np.diag([1, 0]), np.diag([0, 1])
    target = PAULI["Z"] if op.gate == "cz" else PAULI["X"]
    return embed({a: p0}, n) + embed({a: p1, b: target}, n)


def reference_state(ops, n, inputs, weights):
    psi = np.zeros(2**n, complex)
    psi[0] = 1
    for op in ops:
        angle = 0.0 if op.src == "" else (inputs[op.index] if op.src == "in" else weights[op.index])
        psi = dense(op, n, angle) @ psi
    return psi


def random_ops(rng, n, length):
    ops, ni, nw = [], 0, 0
    for _ in range(length):
        kind = rng.integers(4) if n > 1 else rng.integers(2)
        if kind < 2:
            src = "in" if kind == 0 else "w"
            idx = ni if src == "in" else nw
            ni, nw = ni + (src == "in"), nw + (src == "w")
            ops.append(Op(str(rng.choice(["rx", "ry", "rz"])), (int(rng.integers(n)),), src, idx))
        else:
            a, b = rng.choice(n, 2, replace=False)
            ops.append(Op(str(rng.choice(["cz", "cx"])), (int(a), int(b))))
    return ops


@pytest.mark.parametrize("seed", range(12))
def test_simulator_matches_dense_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    ops = random_ops(rng, n, 25)
    batch = 3
    inputs = torch.tensor(rng.uniform(-4, 4, (batch, max(n_inputs(ops), 1))))
    weights = torch.tensor(rng.uniform(-4, 4, max(n_weights(ops), 1)))
    slow = run_ops(ops, n, inputs, weights)
    fast = run_program(compile_ops(ops, n, weights), inputs)
    for b in range(batch):
        ref = reference_state(ops, n, inputs[b].numpy(), weights.numpy())
        np.testing.assert_allclose(slow[b].numpy(), ref, atol=1e-10)
        np.testing.assert_allclose(fast[b].numpy(), ref, atol=1e-10)


def test_pauli_and_z_expectations_match_dense():
    rng = np.random.default_rng(1)
    n = 4
    psi = rng.normal(size=(2, 2**n)) + 1j * rng.normal(size=(2, 2**n))
    psi /= np.linalg.norm(psi, axis=1, keepdims=True)
    labels = ["IIIX", "IYII", "ZIIZ", "XYZI", "YYYY", "IIZZ"]
    got = pauli_expectations(torch.tensor(psi), labels).numpy()
    for k, lab in enumerate(labels):
        mat = embed({q: PAULI[p] for q, p in enumerate(reversed(lab))}, n)
        want = np.einsum("bi,ij,bj->b", psi.conj(), mat, psi).real
        np.testing.assert_allclose(got[:, k], want, atol=1e-12)
    np.testing.assert_allclose(z_expectations(torch.tensor(psi), n).numpy(),
                               pauli_expectations(torch.tensor(psi), list(z_labels(n))).numpy(), atol=1e-12)


@pytest.mark.parametrize("reupload,entangler", [(1, "cz"), (2, "cx")])
def test_gradients_match_finite_differences(reupload, entangler):
    torch.manual_seed(0)
    cfg = AnsatzConfig(3, 10, reupload, ("rz", "ry"), entangler)
    ops = tuple(reuploading_circuit(cfg))
    w = torch.randn(n_weights(list(ops)), dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    ev = ExactEvaluator()
    f = lambda w, x: ev.evaluate([QuantumCall("t", ops, 3, w, x, z_labels(3))])[0]
    assert torch.autograd.gradcheck(f, (w, x), eps=1e-6, atol=1e-6)


def test_sequential_memory_gradients():
    torch.manual_seed(1)
    cfg = AnsatzConfig(3, 6, 1, ("rz", "ry"), "cz")
    ops = tuple(memory_step(cfg))
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    ev = ExactEvaluator()
    f = lambda w, x: ev.evaluate([QuantumCall("m", ops, 3, w, x, ("IIX", "YII", "ZZI"), sequential=True)])[0]
    assert torch.autograd.gradcheck(f, (w, x), eps=1e-6, atol=1e-6)


def test_budget_split_and_partial_layers():
    from qssm.models.config import QMambaConfig

    cfg = QMambaConfig(vocab_size=8, n_qubits=4, q_budget=90)
    counts = {s: n_weights(reuploading_circuit(cfg.ansatz(s))) for s in cfg.SUBCIRCUITS}
    assert counts == {"A": 36, "B": 18, "C": 18, "Delta": 18}  # 2:1:1:1, last layer partial (18 = 4*4 + 2)


def test_inference_program_cache_follows_in_place_weight_updates():
    """ExactEvaluator caches fused programs at inference; an in-place weight update must miss it."""
    torch.manual_seed(1)
    cfg = AnsatzConfig(4, 16, 1, ("rz", "ry"), "cz")
    ops = tuple(reuploading_circuit(cfg))
    w = torch.randn(n_weights(list(ops)), dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)
    call = QuantumCall("t", ops, 4, w, x, z_labels(4))
    with torch.no_grad():
        first = ExactEvaluator().evaluate([call])[0]
        again = ExactEvaluator().evaluate([call])[0]
        w.add_(0.3)  # bumps the tensor's version
        moved = ExactEvaluator().evaluate([call])[0]
    assert torch.equal(first, again)
    assert not torch.allclose(first, moved)
    w.requires_grad_(True)
    reference = ExactEvaluator().evaluate([call])[0]  # autograd path: never cached
    torch.testing.assert_close(moved, reference.detach())
