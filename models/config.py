"""Model configs: the one source of truth for the torch model, its circuits and its reports.

Everything else (parameter shapes, gate lists, observables, Qiskit templates, report labels) is
derived from these dataclasses; nothing downstream keeps its own copy of a number defined here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from qssm.errors import QssmError

ROTATIONS = ("rx", "ry", "rz")
ENTANGLERS = ("cz", "cx")
PATTERNS = ("ring", "chain")  # entangler topology: shifting ring, or nearest-neighbour chain i -- i+1
READOUTS = ("local", "pairs")  # QLAM Pauli readout sets (QLAMConfig.paulis)


@dataclass(frozen=True)
class AnsatzConfig:
    """A budgeted strongly entangling ansatz on `n_qubits` (DESIGN §1.1)."""

    n_qubits: int
    n_params: int
    reupload: int = 1  # encoding repeated r times between ansatz blocks
    rotations: tuple[str, ...] = ("rz", "ry")  # cycled, one gate per qubit per rotation layer
    entangler: str = "cz"
    pattern: str = "ring"

    def __post_init__(self) -> None:
        if self.n_qubits < 1:
            raise QssmError(f"n_qubits must be >= 1, got {self.n_qubits}")
        if self.n_params < 0 or self.reupload < 1:
            raise QssmError("n_params must be >= 0 and reupload >= 1")
        if not self.rotations or any(r not in ROTATIONS for r in self.rotations):
            raise QssmError(f"rotations must be a non-empty list from {ROTATIONS}, got {self.rotations}")
        if self.entangler not in ENTANGLERS:
            raise QssmError(f"entangler must be one of {ENTANGLERS}, got {self.entangler!r}")
        if self.pattern not in PATTERNS:
            raise QssmError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")


@dataclass(frozen=True)
class QMambaConfig:
    vocab_size: int
    d_model: int = 16
    n_layers: int = 2
    n_qubits: int = 4  # = d_state N
    q_budget: int = 80  # quantum parameters per layer, split 2:1:1:1 over A:B:C:Delta
    reupload: int = 1
    rotations: tuple[str, ...] = ("rz", "ry")
    entangler: str = "cz"
    pattern: str = "ring"  # entangler topology of every sub-circuit (see PATTERNS)
    alpha_init: float = 0.5
    quantum: bool = True  # False: the classical baseline (each circuit replaced by a classical map)
    task: dict[str, Any] = field(default_factory=dict)
    kind: str = "qmamba"

    SUBCIRCUITS = ("A", "B", "C", "Delta")
    SPLIT = {"A": 2, "B": 1, "C": 1, "Delta": 1}

    def __post_init__(self) -> None:
        for sub in self.SUBCIRCUITS:  # a bad rotation, entangler or pattern fails at load, not at first use
            self.ansatz(sub)

    @property
    def d_state(self) -> int:
        return self.n_qubits

    def ansatz(self, sub: str) -> AnsatzConfig:
        share = self.q_budget * self.SPLIT[sub] // sum(self.SPLIT.values())
        return AnsatzConfig(self.n_qubits, share, self.reupload, tuple(self.rotations), self.entangler,
                            self.pattern)


@dataclass(frozen=True)
class QLAMConfig:
    input_dim: int  # features per token
    n_classes: int
    n_qubits: int = 6
    w_budget: int = 36  # trained parameters of the shared entangling block W(theta)
    rotations: tuple[str, ...] = ("rz", "ry")
    entangler: str = "cz"
    pattern: str = "ring"  # entangler topology of the memory block W(theta) (see PATTERNS)
    reupload: int = 1  # r uploads per step: (R_j(x_t) W_j) x r, 2n r input angles per token
    n_heads: int = 8  # query-dependent readout heads
    pool_memory: bool = False  # the head also reads the memory readouts averaged over the sequence
    w_init: float = 0.3  # std of the initial memory weights (angles pi tanh(w)); small = W near its CZ skeleton
    readout: str = "local"  # Pauli set: "local" (X_i, Y_i, Z_i, Z_i Z_i+1) or "pairs" (+ all P_i Q_i+1)
    quantum: bool = True
    task: dict[str, Any] = field(default_factory=dict)
    kind: str = "qlam"

    def __post_init__(self) -> None:
        self.memory_ansatz()
        if self.readout not in READOUTS:
            raise QssmError(f"readout must be one of {READOUTS}, got {self.readout!r}")

    def memory_ansatz(self) -> AnsatzConfig:
        return AnsatzConfig(self.n_qubits, self.w_budget, self.reupload, tuple(self.rotations), self.entangler,
                            self.pattern)

    def paulis(self) -> list[str]:
        """The fixed readout set (Qiskit labels, qubit 0 rightmost): every X_i, Y_i, Z_i and
        neighbouring Z_i Z_{i+1}; readout "pairs" adds the other eight P_i Q_{i+1} of each
        neighbouring pair (3n + 9(n-1) in all)."""
        n = self.n_qubits
        out = []
        for p in "XYZ":
            for i in range(n):
                out.append(_pauli_label(n, {i: p}))
        for i in range(n - 1):
            out.append(_pauli_label(n, {i: "Z", i + 1: "Z"}))
        if self.readout == "pairs":
            for i in range(n - 1):
                out += [_pauli_label(n, {i: a, i + 1: b}) for a in "XYZ" for b in "XYZ" if a + b != "ZZ"]
        return out


def _pauli_label(n: int, ops: dict[int, str]) -> str:
    return "".join(ops.get(q, "I") for q in reversed(range(n)))


@dataclass(frozen=True)
class GRUConfig:
    vocab_size: int = 0  # token input (haystack) when > 0
    input_dim: int = 0  # dense input (digits) when vocab_size == 0
    n_out: int = 0
    d_hidden: int = 32
    cell: str = "gru"  # "gru" or "rnn" (a tanh RNN)
    task: dict[str, Any] = field(default_factory=dict)
    kind: str = "gru"

    def __post_init__(self) -> None:
        if self.cell not in ("gru", "rnn"):
            raise QssmError(f'cell must be "gru" or "rnn", got {self.cell!r}')


CONFIG_KINDS = {"qmamba": QMambaConfig, "qlam": QLAMConfig, "gru": GRUConfig}
ModelConfig = QMambaConfig | QLAMConfig | GRUConfig


def config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    kind = d.get("kind")
    if kind not in CONFIG_KINDS:
        raise QssmError(f"unknown model kind {kind!r}; expected one of {sorted(CONFIG_KINDS)}")
    cls = CONFIG_KINDS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise QssmError(f"unknown {kind} config fields {sorted(unknown)}; remove them or fix their names")
    d = {k: tuple(v) if isinstance(v, list) and k == "rotations" else v for k, v in d.items()}
    try:
        return cls(**d)
    except TypeError as e:
        raise QssmError(f"invalid {kind} config: {e}") from None
