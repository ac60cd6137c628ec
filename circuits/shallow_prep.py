"""Shallow approximate state preparation for QLAM hand-offs (docs/architecture.md, "QLAM segments").

Moettoenen's exact preparation of a 6-qubit state is 228 CX (244 CZ on Fez after routing): on a
noisy device it mixes the state it hands over more than the segment it replaces. Here the state is
prepared by a hardware-efficient ansatz on the native nearest-neighbour chain instead,

    |psi(p)> = L_L ... L_1 R_0 |0...0>,   L_l = R_l . CZ(0,1) CZ(1,2) ... CZ(n-2,n-1),
    R_l = prod_q RZ(p) RY(p) on qubit q,

whose angles are fitted classically to each target state (batched, differentiable torch statevector;
every row of the batch is its own independent fit). `layers` chain layers cost (n-1) * layers
two-qubit gates and embed without swaps on heavy-hex and square lattices. The circuit's structure is
fixed and every angle is a parameter p[i], so one transpiled template serves every hand-off
(transpile once, bind many), exactly as Moettoenen's does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from qiskit import QuantumCircuit

from qssm.models.statevector import apply_1q, rotation_matrix


def n_hea_params(n: int, layers: int) -> int:
    return 2 * n * (layers + 1)


def hea_circuit(n: int, layers: int, p) -> QuantumCircuit:
    """The ansatz on n qubits with `layers` CZ-chain layers; angles p[0..n_hea_params)."""
    qc = QuantumCircuit(n, name=f"hea{layers}")
    k = 0
    for layer in range(layers + 1):
        if layer:
            for q in range(n - 1):
                qc.cz(q, q + 1)
        for q in range(n):
            qc.ry(p[k], q)
            qc.rz(p[k + 1], q)
            k += 2
    return qc


def _chain_signs(n: int) -> torch.Tensor:
    idx = torch.arange(2**n)
    bits = (idx[:, None] >> torch.arange(n)[None, :]) & 1
    parity = (bits[:, :-1] & bits[:, 1:]).sum(1) & 1
    return (1 - 2 * parity).to(torch.complex128)


def hea_states(params: torch.Tensor, n: int, layers: int) -> torch.Tensor:
    """(B, n_hea_params) angles -> (B, 2^n) states, differentiable (Qiskit amplitude order)."""
    b = params.shape[0]
    signs = _chain_signs(n)
    state = torch.zeros(b, 2**n, dtype=torch.complex128)
    state[:, 0] = 1
    p = params.reshape(b, layers + 1, n, 2)
    for layer in range(layers + 1):
        if layer:
            state = state * signs
        mats = rotation_matrix("rz", p[:, layer, :, 1]) @ rotation_matrix("ry", p[:, layer, :, 0])  # (B, n, 2, 2)
        for q in range(n):
            state = apply_1q(state, mats[:, q], q, n)
    return state


def fit_hea(targets: np.ndarray, layers: int, steps: int = 300, restarts: int = 3, goal: float = 0.995,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Angles preparing each target state (B, 2^n): maximise |<target|psi(p)>|^2 per row with Adam.
    Rows below `goal` after a run are fitted again from new random angles (up to `restarts` runs)
    and keep their best. Returns (angles (B, n_hea_params), fidelities (B,))."""
    # callers run under no_grad (inference); one thread: the result must be bit-identical when a
    # resumed job recomputes it, or the next round trip's batch keys would miss the job store
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            angles, fid = _fit(targets, layers, steps, restarts, goal, seed)
    finally:
        torch.set_num_threads(saved)
    return np.round(angles, 12), fid


def _fit(targets, layers, steps, restarts, goal, seed):
    psi = torch.as_tensor(np.atleast_2d(targets), dtype=torch.complex128)
    psi = psi / psi.norm(dim=1, keepdim=True)
    b, d = psi.shape
    n = d.bit_length() - 1
    gen = torch.Generator().manual_seed(seed)
    best = torch.zeros(b, n_hea_params(n, layers), dtype=torch.float64)
    best_f = torch.full((b,), -1.0, dtype=torch.float64)
    todo = torch.arange(b)
    for run in range(restarts):
        if len(todo) == 0:
            break
        # small angles near the identity: a trainable start without barren plateaus at 6 qubits
        theta = (0.3 if run == 0 else math.pi / 2) * torch.randn(len(todo), best.shape[1], generator=gen,
                                                                 dtype=torch.float64)
        theta.requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=0.08)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.002)
        tgt = psi[todo].conj()
        for _ in range(steps):
            opt.zero_grad()
            fid = ((tgt * hea_states(theta, n, layers)).sum(1).abs() ** 2)
            (1 - fid).sum().backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            fid = ((tgt * hea_states(theta, n, layers)).sum(1).abs() ** 2)
            better = fid > best_f[todo]
            best[todo[better]] = theta.detach()[better]
            best_f[todo[better]] = fid[better]
        todo = todo[best_f[todo] < goal]
    return best.numpy(), best_f.numpy()


def fidelity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|<a|b>|^2 per row of two (B, d) state batches."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.abs((a.conj() * b).sum(1)) ** 2
