"""Model configs: the one source of truth for the torch model, its circuits and its reports.

Everything else (parameter shapes, gate lists, observables, Qiskit templates, report labels) is
derived from these dataclasses; nothing downstream keeps its own copy of a number defined here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from qssm.errors import QssmError
from qssm.models.tasks import check_task, task_shape

ROTATIONS = ("rx", "ry", "rz")
ENTANGLERS = ("cz", "cx")
PATTERNS = ("ring", "chain")  # entangler topology: shifting ring, or nearest-neighbour chain i -- i+1
READOUTS = ("local", "pairs")  # QLAM Pauli readout sets (QLAMConfig.paulis)
READOUT_NORMS = ("none", "rms")  # QLAM memory readouts as measured, or divided by their RMS per step
CELLS = ("gru", "rnn")  # GRU baseline cells
CHOICES = {"entangler": ENTANGLERS, "pattern": PATTERNS, "readout": READOUTS, "cell": CELLS,
           "readout_norm": READOUT_NORMS}


@dataclass(frozen=True)
class AnsatzConfig:
    """A budgeted strongly entangling ansatz on `n_qubits`."""

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
    # "rms": each step's readouts divided by their root mean square, times learned per-Pauli gains
    # (a per-example post-measurement normalization: a noise that shrinks every readout of a step by
    # the same factor leaves the logits unchanged)
    readout_norm: str = "none"
    quantum: bool = True
    task: dict[str, Any] = field(default_factory=dict)
    kind: str = "qlam"

    def __post_init__(self) -> None:
        self.memory_ansatz()
        if self.readout not in READOUTS:
            raise QssmError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.readout_norm not in READOUT_NORMS:
            raise QssmError(f"readout_norm must be one of {READOUT_NORMS}, got {self.readout_norm!r}")

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


@dataclass(frozen=True)
class TransformerConfig:
    """A small causal transformer baseline over feature tokens (image rows): a linear embedding plus
    learned positions, n_layers pre-norm encoder layers with a causal mask, the class read at the
    last token (registry.TransformerBaseline)."""

    input_dim: int
    n_out: int
    max_len: int  # learned positions 0..max_len-1: the longest sequence the model reads
    d_model: int = 64
    n_layers: int = 2
    n_attn_heads: int = 4
    d_ff: int = 128
    task: dict[str, Any] = field(default_factory=dict)
    kind: str = "transformer"

    def __post_init__(self) -> None:
        if self.d_model % self.n_attn_heads:
            raise QssmError(f"d_model {self.d_model} must be a multiple of n_attn_heads {self.n_attn_heads}")


CONFIG_KINDS = {"qmamba": QMambaConfig, "qlam": QLAMConfig, "gru": GRUConfig, "transformer": TransformerConfig}
ModelConfig = QMambaConfig | QLAMConfig | GRUConfig | TransformerConfig


def config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


# Numeric config fields: (type, low, high). The bounds are checked before a model is built from
# the config, so a bad one cannot allocate (embeddings, 2^n x 2^n unitaries) or loop for long first.
LIMITS: dict[str, tuple[type, float, float]] = {
    "vocab_size": (int, 1, 65536), "d_model": (int, 1, 1024), "n_layers": (int, 1, 64),
    "n_qubits": (int, 1, 12), "q_budget": (int, 0, 100_000), "reupload": (int, 1, 64),
    "alpha_init": (float, -1e3, 1e3), "input_dim": (int, 1, 4096), "n_classes": (int, 2, 65536),
    "w_budget": (int, 0, 100_000), "n_heads": (int, 1, 256), "d_hidden": (int, 1, 4096), "n_out": (int, 1, 65536),
    "w_init": (float, 0.0, 10.0), "max_len": (int, 1, 4096), "n_attn_heads": (int, 1, 64), "d_ff": (int, 1, 16384),
}
GRU_LIMITS = {"vocab_size": (int, 0, 65536), "input_dim": (int, 0, 4096)}  # one of the two is 0


# A noise-tuned checkpoint's record["noise_tuning"] (models/registry.py NoiseTuning, every field):
# (type, low, high) for numbers, (str,) for the device name (checked against the known devices).
NOISE_TUNING_LIMITS: dict[str, tuple] = {
    "device": (str,), "steps": (int, 0, 10_000_000), "lr": (float, 0.0, 1.0), "batch_size": (int, 1, 100_000),
    "shots": (int, 0, 100_000_000), "w_noisy": (float, 0.0, 1e3), "w_exact": (float, 0.0, 1e3),
    "w_consistency": (float, 0.0, 1e3), "seed": (int, 0, 2**63 - 1), "n_eval": (int, 0, 100_000),
    "readout_norm": ("", *READOUT_NORMS), "target": ("labels", "teacher"),
    "tune": ("all", "readout"),
}


def check_noise_tuning(d: Any) -> None:
    """record["noise_tuning"] of a checkpoint: a table of NOISE_TUNING_LIMITS' fields, each checked."""
    if not isinstance(d, dict):
        raise QssmError(f"noise_tuning must be a table, got {d!r:.60}")
    unknown = sorted(set(d) - set(NOISE_TUNING_LIMITS))
    if unknown:
        raise QssmError(f"unknown noise_tuning fields {unknown}")
    for name, value in d.items():
        rule = NOISE_TUNING_LIMITS[name]
        if not isinstance(rule[0], type):
            if value not in rule:
                raise QssmError(f"noise_tuning {name} must be one of {rule}, got {value!r:.60}")
            continue
        if rule[0] is str:
            if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.replace("_", "").isalnum():
                raise QssmError(f"noise_tuning device must be a device name like fake_fez, got {value!r:.60}")
            continue
        want, lo, hi = rule
        if not (type(value) is int or (want is float and type(value) is float)):
            raise QssmError(f"noise_tuning {name} must be {'a number' if want is float else 'an integer'}, got {value!r:.60}")
        if not (math.isfinite(value) and lo <= value <= hi):
            raise QssmError(f"noise_tuning {name} must be {lo:g}..{hi:g}, got {value}")


def _check_field(kind: str, name: str, value: Any) -> None:
    if name in ("kind", "task"):
        return
    if name in ("quantum", "pool_memory"):
        if type(value) is not bool:
            raise QssmError(f"{name} must be true or false, got {value!r:.60}")
    elif name == "rotations":
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 16 or any(r not in ROTATIONS for r in value):
            raise QssmError(f"rotations must be a list of 1 to 16 gates from {ROTATIONS}, got {value!r:.60}")
    elif name in CHOICES:
        if value not in CHOICES[name]:
            raise QssmError(f"{name} must be one of {CHOICES[name]}, got {value!r:.60}")
    else:
        want, lo, hi = (GRU_LIMITS if kind == "gru" else {}).get(name) or LIMITS[name]
        ok = type(value) is int or (want is float and type(value) is float)
        if not ok:
            raise QssmError(f"{name} must be {'a number' if want is float else 'an integer'}, got {value!r:.60}")
        if not (math.isfinite(value) and lo <= value <= hi):
            raise QssmError(f"{name} must be {lo:g}..{hi:g}, got {value}")


def _check_task_fit(cfg: ModelConfig) -> None:
    """The model reads what its task produces: token ids below vocab_size, or feature rows of
    input_dim, and has an output for every class."""
    shape = task_shape(cfg.task)
    tokens, features, classes = shape.get("tokens"), shape.get("features"), shape["classes"]
    takes_tokens = cfg.kind == "qmamba" or (cfg.kind == "gru" and cfg.vocab_size > 0)
    if takes_tokens and tokens is None:
        raise QssmError(f"a {cfg.kind} model reads token ids, and task {cfg.task['name']} gives feature rows")
    if not takes_tokens and features is None:
        raise QssmError(f"a {cfg.kind} model reads feature rows, and task {cfg.task['name']} gives token ids")
    if takes_tokens and cfg.vocab_size < tokens:
        raise QssmError(f"vocab_size {cfg.vocab_size} is smaller than task {cfg.task['name']}'s {tokens} tokens")
    if not takes_tokens and cfg.input_dim != features:
        raise QssmError(f"input_dim {cfg.input_dim} does not match task {cfg.task['name']}'s rows of {features} features")
    outputs = getattr(cfg, {"qmamba": "vocab_size", "qlam": "n_classes", "gru": "n_out", "transformer": "n_out"}[cfg.kind])
    if outputs < classes:
        raise QssmError(f"{cfg.kind} model has {outputs} outputs, and task {cfg.task['name']} has {classes} classes")


def config_from_dict(d: Any) -> ModelConfig:
    """A config from its JSON form, every field checked for type and range (one-line QssmError)."""
    if not isinstance(d, dict):
        raise QssmError(f"config must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in CONFIG_KINDS:
        raise QssmError(f"unknown model kind {kind!r:.60}; expected one of {sorted(CONFIG_KINDS)}")
    cls = CONFIG_KINDS[kind]
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = set(d) - names
    if unknown:
        raise QssmError(f"unknown {kind} config fields {sorted(unknown)}; remove them or fix their names")
    missing = [f.name for f in fields if f.name not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise QssmError(f"{kind} config is missing {missing}")
    try:
        for name, value in d.items():
            _check_field(kind, name, value)
        check_task(d.get("task", {}))
    except QssmError as e:
        raise QssmError(f"invalid {kind} config: {e}") from None
    d = {k: tuple(v) if k == "rotations" else float(v) if k == "alpha_init" else v for k, v in d.items()}
    try:
        cfg = cls(**d)
    except QssmError as e:
        raise QssmError(f"invalid {kind} config: {e}") from None
    if kind == "gru" and (cfg.vocab_size > 0) == (cfg.input_dim > 0):
        raise QssmError("invalid gru config: exactly one of vocab_size (tokens) and input_dim (features) must be > 0")
    try:
        _check_task_fit(cfg)
    except QssmError as e:
        raise QssmError(f"invalid {kind} config: {e}") from None
    return cfg
