"""Gate lists: the contract between the torch simulator and the Qiskit templates.

A sub-circuit is a flat list of `Op`s. Each rotation angle comes either from a per-token input
(`src="in"`) or from a trained weight (`src="w"`, re-mapped by phi(w) = pi * tanh(w) before use).
Both the torch simulator (models/statevector.py) and the Qiskit builder (circuits/) consume these
lists, so the two can never disagree about which gate goes where.
"""

from __future__ import annotations

from dataclasses import dataclass

from qssm.models.config import AnsatzConfig


@dataclass(frozen=True)
class Op:
    gate: str  # rx | ry | rz | cz | cx
    qubits: tuple[int, ...]
    src: str = ""  # "in" or "w" for rotations, "" for fixed two-qubit gates
    index: int = 0  # which input / weight feeds the angle


def entangler_ring(n: int, layer: int, gate: str) -> list[Op]:
    """A ring of two-qubit gates whose offset shifts with the layer (as in strongly entangling
    layers). Duplicate pairs are dropped: CZ is symmetric, so (i, j) and (j, i) would cancel."""
    if n < 2:
        return []
    offset = layer % (n - 1) + 1
    seen: set[frozenset[int]] = set()
    ops = []
    for i in range(n):
        j = (i + offset) % n
        pair = frozenset((i, j))
        if pair in seen:
            continue
        seen.add(pair)
        ops.append(Op(gate, (i, j)))
    return ops


def entangler_chain(n: int, gate: str) -> list[Op]:
    """Nearest-neighbour two-qubit gates along a line, (0, 1), (1, 2), ..., (n-2, n-1): n - 1 gates
    that embed without swaps in any coupling map containing a path of n qubits (heavy-hex, square
    lattices)."""
    return [Op(gate, (i, i + 1)) for i in range(n - 1)]


def entangler(cfg: AnsatzConfig, layer: int) -> list[Op]:
    """The two-qubit layer after rotation layer `layer`, in the config's topology."""
    if cfg.pattern == "chain":
        return entangler_chain(cfg.n_qubits, cfg.entangler)
    return entangler_ring(cfg.n_qubits, layer, cfg.entangler)


def ansatz_block(cfg: AnsatzConfig, n_params: int, first_weight: int, first_layer: int) -> list[Op]:
    """Rotation layers (cycling cfg.rotations, one gate per qubit) each followed by an entangling
    layer (cfg.pattern: shifting ring or nearest-neighbour chain), until `n_params` weights are
    spent; the last rotation layer may be partial.

    With the chain and the default RZ/RY cycle, the chain after an RY layer and the chain after the
    next RZ layer meet across diagonal gates only (CZ commutes with RZ, CZ^2 = I), so a transpiler
    cancels two of every three chains; the unitary, and so the model, is the same either way."""
    ops: list[Op] = []
    w, layer = first_weight, first_layer
    remaining = n_params
    while remaining > 0:
        rot = cfg.rotations[layer % len(cfg.rotations)]
        width = min(cfg.n_qubits, remaining)
        ops += [Op(rot, (q,), "w", w + q) for q in range(width)]
        w += width
        remaining -= width
        ops += entangler(cfg, layer)
        layer += 1
    return ops


def encoding(n_qubits: int, gate: str = "rx", first_input: int = 0) -> list[Op]:
    return [Op(gate, (q,), "in", first_input + q) for q in range(n_qubits)]


def reuploading_circuit(cfg: AnsatzConfig) -> list[Op]:
    """QMamba sub-circuit: (encode, block) x reupload. Inputs are the n encoding angles (the same
    angles at every upload); the weight budget is split as evenly as possible over the blocks."""
    ops: list[Op] = []
    w, layer = 0, 0
    for r in range(cfg.reupload):
        share = cfg.n_params // cfg.reupload + (1 if r < cfg.n_params % cfg.reupload else 0)
        ops += encoding(cfg.n_qubits)
        block = ansatz_block(cfg, share, w, layer)
        ops += block
        w += share
        layer += -(-share // cfg.n_qubits)
    return ops


def memory_step(cfg: AnsatzConfig, first_input: int = 0) -> list[Op]:
    """QLAM step W(theta) R(x_t): RY then RZ per qubit from 2n inputs, then the shared block. With
    cfg.reupload = r > 1 the step is (R_j(x_t), W_j) for j = 1..r: every upload reads its own 2n
    inputs (2nr per step) and the weight budget is split over the r blocks as evenly as possible."""
    n = cfg.n_qubits
    ops: list[Op] = []
    w, layer = 0, 0
    for r in range(cfg.reupload):
        share = cfg.n_params // cfg.reupload + (1 if r < cfg.n_params % cfg.reupload else 0)
        first = first_input + 2 * n * r
        ops += encoding(n, "ry", first) + encoding(n, "rz", first + n) + ansatz_block(cfg, share, w, layer)
        w += share
        layer += -(-share // n)
    return ops


def n_inputs(ops: list[Op]) -> int:
    return 1 + max((op.index for op in ops if op.src == "in"), default=-1)


def n_weights(ops: list[Op]) -> int:
    return 1 + max((op.index for op in ops if op.src == "w"), default=-1)
