"""dmsim: exact noisy density-matrix simulation in torch, batched over parameter rows and
differentiable in them; qssm's engine for noisy dry runs (tested against Aer and Braket).

    noise = noise_from_aer(active_noise_model(device, active), n)   # backends/noise.py
    program = compile_circuit(circuit, noise)        # once per ISA circuit (Parameters left free)
    values = expectation_values(program, rows, observables)         # (B, K), exact Tr(rho O)
    probs = outcome_probabilities(program, rows)                      # (B, 2**num_clbits)
    counts = sample_counts(probs, shots, seed)                        # multinomial histograms
    shared = compile_many(group_circuits, noise)      # a common body simulated once per row
    probs_per_circuit = outcome_probabilities_many(shared, rows)

State. The density matrix of n qubits is held in the Pauli basis: v_P = Tr(rho P), a real vector
of 4^n numbers per row, and every channel is a real Pauli transfer matrix (PTM, backends/noise.py).
Real arithmetic does a quarter of the complex work on half the memory, and a Pauli observable is
one entry. A batch is a (B, C, 4, ..., 4) tensor: B parameter rows, C = 2^m branches for m
mid-circuit measurements (one per recorded outcome, exact, no sampling), one axis per qubit.

Compilation, once per circuit:
  * each instruction becomes a fixed channel (gate with numeric angles, its noise channel, reset,
    the noise Aer puts before a measurement), a parameterized gate (its matrix built per row in
    torch from the bound angles, then its PTM), or a measurement;
  * consecutive operations on the same qubits join (a gate and its noise channel, a qubit's run
    of single-qubit gates around an input rotation): one pass over the state instead of several;
  * operations are scheduled in phases, taking as many fixed channels as the dependencies allow
    before the next parameterized gate or mid-circuit measurement, so fixed stretches are long;
  * the first fixed phase acts on |0..0> for every row: it is applied once at compile time;
  * every other fixed phase is fused into blocks of at most w qubits (greedy, in circuit order),
    one PTM per block composed from the local channels (never a full-width SuperOp.compose); w is
    chosen per phase by a cost model measured on this machine (`_block_cost`);
  * the last fixed phase is folded into the observables (expectation values: one (B, 4^n) x
    (4^n, K) product) or, as far as it is single-qubit per qubit, into the readout;
  * the order of the state's qubit axes is planned at compile time: a block whose qubits sit on
    adjacent axes is applied where they are, any other moves its axes last (one copy); nothing
    moves back.
At run time, per-row gate PTMs are built once per batch and rows run in chunks whose state fits in
the CPU's L2 cache. `compile_many` simulates the body that circuits share once per row, then each
circuit's tail; tails that only read the state (a measurement group's basis change and
measurements) are read together, one contraction for all of them.

Measurements follow Aer (backends/noise.py): noise before the measurement, readout error on the
recorded bit. A terminal measurement (nothing later touches its qubit or clbit) is read from the
final state; a mid-circuit one splits each branch into the two recorded outcomes, each carrying
sum_t P(recorded | t) Pi_t rho Pi_t, so the distribution over clbits is exact (a clbit holds the
value of its last measurement; no classical feed-forward).

Limits: a state is 4^n x 8 bytes per row and branch (6 qubits: 32 KB, 10 qubits: 8 MB), so this
is for compacted circuits of up to ~10 qubits, like Aer's density matrix in backends/aer.py.
Readout errors are per qubit (Aer's device models); correlated ones are refused.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch
from qiskit.circuit import ParameterExpression
from qiskit.quantum_info import Operator, SparsePauliOp
from threadpoolctl import threadpool_limits

from qssm.backends.noise import RESET, Noise, apply_ptm, compose, error_ptm, paulis, ptm
from qssm.backends.sampling import sample_counts as draw

MAX_WIDTH = 5  # widest fused block considered (a 5-qubit PTM is 1024 x 1024)
_H = np.array([[0.5, 0.5], [0, 0], [0, 0], [0.5, -0.5]])  # Pauli component -> P(true outcome t)
_TRACE = np.array([1.0, 0, 0, 0])


def _one_blas_thread(fn):
    """Compile-time numpy products are small (<= 1024 x 1024): BLAS threads only add
    synchronization, and on a loaded 2-core machine they made them 10-20x slower."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


# ---- parameterized gates: per-row matrices in torch -------------------------------------------


def _m(rows) -> torch.Tensor:
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def _e(t: torch.Tensor) -> torch.Tensor:
    return torch.polar(torch.ones_like(t), t)  # exp(i t), differentiable


def _gate_matrix(name: str, a: list[torch.Tensor]) -> torch.Tensor:
    """(B, 2^k, 2^k) matrix of a parameterized gate (Qiskit conventions) from (B,) angles."""
    def cs(t):
        return torch.cos(t / 2).to(_complex(t.dtype)), torch.sin(t / 2).to(_complex(t.dtype))

    zero = torch.zeros_like(a[0]).to(_complex(a[0].dtype))
    one = zero + 1
    if name == "rz":
        return _m([[_e(-a[0] / 2), zero], [zero, _e(a[0] / 2)]])
    if name in ("p", "u1"):
        return _m([[one, zero], [zero, _e(a[0])]])
    if name == "rx":
        c, s = cs(a[0])
        return _m([[c, -1j * s], [-1j * s, c]])
    if name == "ry":
        c, s = cs(a[0])
        return _m([[c, -s], [s, c]])
    if name == "r":  # IQM prx: exp(-i theta/2 (cos phi X + sin phi Y))
        c, s = cs(a[0])
        return _m([[c, -1j * _e(-a[1]) * s], [-1j * _e(a[1]) * s, c]])
    if name in ("u", "u3"):
        c, s = cs(a[0])
        return _m([[c, -_e(a[2]) * s], [_e(a[1]) * s, _e(a[1] + a[2]) * c]])
    if name == "gpi":  # qiskit_ionq: angles in turns
        return _m([[zero, _e(-2 * math.pi * a[0])], [_e(2 * math.pi * a[0]), zero]])
    if name == "gpi2":
        r = 1 / math.sqrt(2)
        return _m([[one * r, -1j * r * _e(-2 * math.pi * a[0])], [-1j * r * _e(2 * math.pi * a[0]), one * r]])
    if name == "rzz":
        m, p = _e(-a[0] / 2), _e(a[0] / 2)
        return torch.diag_embed(torch.stack([m, p, p, m], -1))
    if name in ("rxx", "ryy"):
        c, s = cs(a[0])
        sign = -1 if name == "ryy" else 1  # YY = -XX on |00>,|11> coupling, +XX on |01>,|10>
        return _m([[c, zero, zero, -1j * sign * s], [zero, c, -1j * s, zero],
                   [zero, -1j * s, c, zero], [-1j * sign * s, zero, zero, c]])
    raise NotImplementedError(f"parameterized gate {name!r} is not supported; bind it or add its matrix to "
                              "backends/dmsim.py _gate_matrix")


PARAMETERIZED_GATES = ("rz", "p", "u1", "rx", "ry", "r", "u", "u3", "gpi", "gpi2", "rzz", "rxx", "ryy")


def _complex(real: torch.dtype) -> torch.dtype:
    return torch.complex128 if real == torch.float64 else torch.complex64


def unitary_ptms(u: torch.Tensor, pauli: torch.Tensor) -> torch.Tensor:
    """(B, 4^k, 4^k) PTMs of (B, 2^k, 2^k) unitaries: R_ij = 2^-k Re Tr(P_i U P_j U^dagger)."""
    images = u[:, None] @ pauli[None] @ u.conj().transpose(-1, -2)[:, None]  # U P_j U^dagger
    return torch.einsum("ivu,bjuv->bij", pauli, images).real / u.shape[-1]


# ---- angles: ParameterExpressions evaluated on rows, differentiably ---------------------------

_TORCH_FUNCS = {"sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "exp": torch.exp, "log": torch.log,
                "sqrt": torch.sqrt, "asin": torch.asin, "acos": torch.acos, "atan": torch.atan,
                "Abs": torch.abs, "sign": torch.sign, "pi": math.pi, "E": math.e}


def _angle(value, column: dict[str, int]):
    """A float, or a function rows (B, P) -> (B,) for an expression of the circuit's Parameters:
    affine ones (all of qssm's: input + offset, scaled turns) as const + rows @ coefficients,
    others through sympy.lambdify with torch functions."""
    if not isinstance(value, ParameterExpression) or not value.parameters:
        return float(value)
    params = sorted(value.parameters, key=lambda p: column[p.name])
    cols = [column[p.name] for p in params]
    slopes = [value.gradient(p) for p in params]
    if all(isinstance(s, (int, float)) for s in slopes):
        const = float(value.bind({p: 0 for p in params}))
        return _Affine(const, tuple(cols), tuple(float(s) for s in slopes))

    expr = value.sympify()
    symbols = sorted(expr.free_symbols, key=lambda s: column[str(s)])
    fn = sympy.lambdify(symbols, expr, modules=[_TORCH_FUNCS, "math"])
    sym_cols = [column[str(s)] for s in symbols]
    return lambda rows: fn(*(rows[:, c] for c in sym_cols))


@dataclass(frozen=True)
class _Affine:
    const: float
    cols: tuple[int, ...]
    slopes: tuple[float, ...]

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        out = rows[:, self.cols[0]] * self.slopes[0] + self.const
        for c, s in zip(self.cols[1:], self.slopes[1:]):
            out = out + rows[:, c] * s
        return out


# ---- circuit -> local operations ---------------------------------------------------------------


@dataclass
class _Op:
    """A local operation. `factors` (time order, on `qubits` in that order, qubits[0] least
    significant) are PTMs (np arrays) and parameterized gates (name, angles); a fixed operation has
    one factor."""

    kind: str  # "fixed" | "param" | "measure"
    qubits: tuple[int, ...]
    clbits: tuple[int, ...] = ()
    factors: list = field(default_factory=list)
    confusion: np.ndarray | None = None  # measure: P[true, recorded]; None = ideal

    @property
    def ptm(self) -> np.ndarray:
        return self.factors[0]


_GATE_PTMS: dict[tuple, np.ndarray] = {}  # (name, angles) -> PTM: ISA circuits repeat a few gates


def _gate_ptm(op) -> np.ndarray:
    try:
        key = (op.name, tuple(float(p) for p in op.params))
    except (TypeError, ValueError):  # e.g. a UnitaryGate's matrix parameter
        return ptm(Operator(op).data)
    if key not in _GATE_PTMS:
        if len(_GATE_PTMS) > 100_000:
            _GATE_PTMS.clear()
        _GATE_PTMS[key] = ptm(Operator(op).data)
    return _GATE_PTMS[key]


def _ops(circuit, noise: Noise, column: dict[str, int]) -> list[_Op]:
    """The circuit as fixed channels, parameterized gates and measurements, with Aer's noise."""
    ops: list[_Op] = []
    for inst in circuit.data:
        op = inst.operation
        name = op.name
        qs = tuple(circuit.find_bit(q).index for q in inst.qubits)
        cs = tuple(circuit.find_bit(c).index for c in inst.clbits)
        if name == "barrier":
            continue
        if getattr(op, "condition", None) is not None or name in ("if_else", "while_loop", "for_loop", "switch_case"):
            raise NotImplementedError(f"classically controlled {name!r} is not supported (no feed-forward)")
        if name == "measure":
            before = noise.channel("measure", qs)  # Aer applies measure errors before it
            if before is not None:
                ops.append(_Op("fixed", qs, factors=[before]))
            ops.append(_Op("measure", qs, cs, confusion=noise.confusion(qs[0])))
            continue
        if hasattr(op, "_quantum_error"):  # an Aer QuantumChannelInstruction (noise passes insert them)
            ops.append(_Op("fixed", qs, factors=[error_ptm(op._quantum_error)]))
            continue
        if name == "reset":
            ops.append(_Op("fixed", qs, factors=[RESET]))
        elif name in ("delay", "id"):
            pass  # identity; Aer may attach noise to it
        elif getattr(op, "is_parameterized", lambda: False)():
            if name not in PARAMETERIZED_GATES:
                _gate_matrix(name, [torch.zeros(1)])  # raises the unsupported-gate error
            ops.append(_Op("param", qs, factors=[(name, tuple(_angle(p, column) for p in op.params))]))
        elif hasattr(op, "to_matrix") or hasattr(op, "__array__"):
            ops.append(_Op("fixed", qs, factors=[_gate_ptm(op)]))
        else:
            raise NotImplementedError(f"instruction {name!r} is not supported")
        after = noise.channel(name, qs)
        if after is not None:
            ops.append(_Op("fixed", qs, factors=[after]))
    return ops


def _reorder(order, qubits) -> np.ndarray:
    """For each Pauli index in qubit order `order`, the same Pauli's index in order `qubits`."""
    k = len(order)
    digits = np.indices((4,) * k).reshape(k, -1)[::-1]  # digits[j] = digit of order[j]
    return sum(digits[j] * 4 ** qubits.index(q) for j, q in enumerate(order))


def _chains(ops: list[_Op]) -> list[_Op]:
    """Join each operation to the previous one when both act on the same qubits and nothing
    came between (a gate and its noise, a run of single-qubit gates): one pass over the state
    instead of several, and parameterized gates take their fixed neighbours along."""
    out: list[_Op] = []
    latest: dict = {}
    for op in ops:
        j = latest.get(op.qubits[0])
        prev = out[j] if j is not None else None
        if (prev is not None and "measure" not in (op.kind, prev.kind) and set(prev.qubits) == set(op.qubits)
                and all(latest.get(q) == j for q in op.qubits)
                and (op.kind == "fixed" or op.qubits == prev.qubits)):
            factors = op.factors
            if op.qubits != prev.qubits:  # a fixed PTM in the other qubit order
                idx = _reorder(prev.qubits, op.qubits)
                factors = [op.ptm[np.ix_(idx, idx)]]
            if prev.kind == op.kind == "fixed":
                out[j] = _Op("fixed", prev.qubits, factors=[factors[0] @ prev.ptm])
            else:
                out[j] = _Op("param", prev.qubits, factors=prev.factors + factors)
        else:
            out.append(op)
            j = len(out) - 1
        for w in op.qubits:
            latest[w] = j
        for c in op.clbits:
            latest[("c", c)] = j
    return out


def _split_terminal(ops: list[_Op]) -> tuple[list[_Op], list[_Op]]:
    """(ops without terminal measurements, terminal measurements): a measurement is terminal
    when no later operation touches its qubit or its clbit; it is read from the final state."""
    touched: set = set()
    keep, terminal = [], []
    for op in reversed(ops):
        wires = {("q", q) for q in op.qubits} | {("c", c) for c in op.clbits}
        if op.kind == "measure" and not wires & touched:
            terminal.append(op)
        else:
            keep.append(op)
        touched |= wires
    return keep[::-1], terminal[::-1]


def _phases(ops: list[_Op]) -> list[tuple[str, list[_Op]]]:
    """Topological order in phases of one kind: as many fixed channels as the dependencies allow,
    then the parameterized gates that became ready, then (last resort) measurements."""
    succ: list[list[int]] = [[] for _ in ops]
    indeg = [0] * len(ops)
    last: dict = {}
    for i, op in enumerate(ops):
        for w in {("q", q) for q in op.qubits} | {("c", c) for c in op.clbits}:
            if w in last:
                succ[last[w]].append(i)
                indeg[i] += 1
            last[w] = i
    ready: dict[str, list[int]] = {"fixed": [], "param": [], "measure": []}
    for i, op in enumerate(ops):
        if indeg[i] == 0:
            heapq.heappush(ready[op.kind], i)
    phases = []
    while any(ready.values()):
        kind = next(k for k in ("fixed", "param", "measure") if ready[k])
        phase = []
        while ready[kind]:
            i = heapq.heappop(ready[kind])
            phase.append(ops[i])
            for j in succ[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(ready[ops[j].kind], j)
        phases.append((kind, phase))
    return phases


# ---- fusion ------------------------------------------------------------------------------------


def _block_cost(k: int) -> float:
    """Relative time of one k-qubit block on the state, per state entry: the product (4^k
    multiply-adds; a 4 x 4 product runs no faster than a 16 x 16 one) plus a pass over memory
    worth about 32 of them. Measured on 6 qubits, 16 rows, 1 thread: 12 / 10 / 16 / 49 / 200 us
    per row for k = 1..5."""
    return 4 ** max(k, 2) + 32


def _fuse(ops: list[_Op], width: int) -> list[tuple[tuple[int, ...], list[_Op]]]:
    """Greedy fusion in circuit order: an operation joins the latest block touching its qubits
    when the union stays within `width` (nothing after that block touches them, so moving the
    operation there keeps the order on every qubit)."""
    blocks: list[tuple[set, list[_Op]]] = []
    latest: dict[int, int] = {}
    for op in ops:
        cand = max((latest[q] for q in op.qubits if q in latest), default=None)
        if cand is None or len(blocks[cand][0] | set(op.qubits)) > width:
            blocks.append((set(), []))
            cand = len(blocks) - 1
        blocks[cand][0].update(op.qubits)
        blocks[cand][1].append(op)
        for q in op.qubits:
            latest[q] = cand
    return [(tuple(sorted(qs)), block_ops) for qs, block_ops in blocks]


def _best_fusion(ops: list[_Op], n: int):
    widest = max(len(op.qubits) for op in ops)
    options = [_fuse(ops, w) for w in range(widest, max(widest, min(n, MAX_WIDTH)) + 1)]
    return min(options, key=lambda blocks: sum(_block_cost(len(qs)) for qs, _ in blocks))


# ---- PTMs on a few qubits, at compile time (numpy) ---------------------------------------------


def _block_ptm(block_ops: list[_Op], order: tuple[int, ...]) -> np.ndarray:
    """The PTM of a block's operations in local qubit order `order` (order[0] least significant)."""
    pos = {q: i for i, q in enumerate(order)}
    return compose([(op.ptm, [pos[q] for q in op.qubits]) for op in block_ops], len(order))


# ---- runtime steps -------------------------------------------------------------------------------


@dataclass
class _Step:
    """One local operation on a (B, C, 4, ..., 4) state: axes permuted by `perm` (or kept), then
    the operation acts on qubit axes at .. at+k-1 (local qubit k-1 first)."""

    perm: tuple[int, ...] | None
    at: int
    k: int
    matrix: torch.Tensor | None = None  # a fixed block's PTM (4^k, 4^k)
    factors: list | None = None  # per-row chain: tensors (4^k, 4^k) and (gate, angles), time order
    pauli: torch.Tensor | None = None
    reorder: torch.Tensor | None = None  # chain PTMs are in the gate's qubit order: to local order
    split: tuple[torch.Tensor, torch.Tensor] | None = None  # mid-circuit measurement (E_0, E_1)

    def __call__(self, x: torch.Tensor, row_ptms: torch.Tensor | None) -> torch.Tensor:
        """The step on x; `row_ptms` (B, 4^k, 4^k): this chunk's rows of `row_ptms(rows)`."""
        if self.perm is not None:
            x = x.permute(self.perm)
        if self.split is not None:
            shape = x.shape
            y = torch.stack([_contract(x, e, self.at, 1) for e in self.split], 1)
            return y.reshape((shape[0], 2 * shape[1]) + shape[2:])
        return _contract(x, self.matrix if self.matrix is not None else row_ptms, self.at, self.k)

    def row_ptms(self, rows: torch.Tensor) -> torch.Tensor | None:
        """A chain's PTM for each row (built once per batch, before the rows are chunked)."""
        if self.factors is None:
            return None
        r = None
        for f in self.factors:
            if isinstance(f, torch.Tensor):
                m = f
            else:
                gate, angles = f
                vals = [a(rows) if callable(a) else rows.new_full((rows.shape[0],), a) for a in angles]
                m = unitary_ptms(_gate_matrix(gate, vals), self.pauli)
            r = m if r is None else m @ r
        if r.dim() == 2:  # a chain whose angles are all numbers (rare): same for every row
            r = r.expand(rows.shape[0], -1, -1)
        return r if self.reorder is None else r[:, self.reorder][:, :, self.reorder]


def _contract(x: torch.Tensor, m: torch.Tensor, at: int, k: int) -> torch.Tensor:
    """M (d, d), or one per row (B, d, d), applied to qubit axes at .. at+k-1 of x. torch.einsum
    picks a good kernel wherever the axes are (a broadcast matmul is 10x slower in the middle)."""
    y = x.reshape(x.shape[0], x.shape[1] * 4**at, 4**k, 4 ** (x.dim() - 2 - at - k))
    y = torch.einsum("ij,bljr->blir" if m.dim() == 2 else "bij,bljr->blir", m, y)
    return y.reshape(x.shape)


def _place(layout: tuple[int, ...], qubits) -> tuple[tuple | None, int, tuple[int, ...], tuple[int, ...]]:
    """Where a step on `qubits` acts: (permutation or None, first axis, local qubit order, new
    layout). layout[i] is the qubit on axis 2 + i. Adjacent axes are used where they are; others
    are moved to the end (one copy), the rest keeping their order."""
    k, n = len(qubits), len(layout)
    at = min(layout.index(q) for q in qubits)
    if set(layout[at:at + k]) == set(qubits):
        return None, at, tuple(reversed(layout[at:at + k])), layout
    new = tuple(q for q in layout if q not in qubits) + tuple(q for q in layout if q in qubits)
    perm = (0, 1) + tuple(2 + layout.index(q) for q in new)
    return perm, n - k, tuple(reversed(new[-k:])), new


def _lower(phases, n: int, layout: tuple[int, ...], tensor, torch_pauli) -> tuple[list[_Step], tuple, list]:
    """Runtime steps for phases starting from `layout`: (steps, final layout, mid-circuit measurements)."""
    steps, mids = [], []
    for kind, phase in phases:
        if kind == "fixed":
            for qubits, block_ops in _best_fusion(phase, n):
                perm, at, order, layout = _place(layout, qubits)
                steps.append(_Step(perm, at, len(order), matrix=tensor(_block_ptm(block_ops, order))))
            continue
        for op in phase:
            perm, at, order, layout = _place(layout, op.qubits)
            if kind == "param":
                factors = [tensor(f) if isinstance(f, np.ndarray) else f for f in op.factors]
                reorder = None if order == op.qubits else torch.as_tensor(_reorder(order, op.qubits),
                                                                         device=torch_pauli(1).device)
                steps.append(_Step(perm, at, len(order), factors=factors, pauli=torch_pauli(len(order)),
                                   reorder=reorder))
            else:
                conf = op.confusion if op.confusion is not None else np.eye(2)
                effects = [sum(conf[t, r] * np.outer([1, 0, 0, 1 - 2 * t], _H[:, t]) for t in (0, 1)) for r in (0, 1)]
                steps.append(_Step(perm, at, 1, split=tuple(tensor(e) for e in effects)))
                mids.append(op)
    return steps, layout, mids


def _split_tail(tail: list[_Op]) -> tuple[list[_Op], dict[int, list[_Op]]]:
    """(operations applied to the state, {qubit: trailing single-qubit channels}) for the readout:
    a single-qubit channel folds into its qubit's readout when no multi-qubit one follows it."""
    blocked: set[int] = set()
    forward, folded = [], {}
    for op in reversed(tail):
        if len(op.qubits) == 1 and op.qubits[0] not in blocked:
            folded.setdefault(op.qubits[0], []).insert(0, op)
        else:
            forward.append(op)
            blocked.update(op.qubits)
    return forward[::-1], folded


# ---- the program ---------------------------------------------------------------------------------


@dataclass
class Program:
    """A compiled circuit (see the module docstring). Rows bind `parameters` in order."""

    num_qubits: int
    num_clbits: int
    parameters: list
    dtype: torch.dtype
    device: torch.device
    init: torch.Tensor | None  # (4^n,) state after the first fixed phase; None: continues a state
    steps: list[_Step]
    layout: tuple[int, ...]  # qubit on each axis after `steps`
    branches: list[int]  # clbit of each mid-circuit measurement (bit j of the branch index)
    final: list[tuple[tuple[int, ...], np.ndarray]]  # the last fixed phase as fused (qubits, PTM)
    readout_steps: list[_Step]  # the part of the last phase applied before the per-qubit readout
    readout: list[torch.Tensor]  # per axis after readout_steps: (4, 2) measured or (4, 1) traced
    readout_index: torch.Tensor  # flat (branch, terminal outcomes) -> clbit integer
    measured: bool
    observables: dict = field(default_factory=dict)  # cache: observables -> (4^n, K)


def _device(device) -> torch.device:
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _compile_ops(ops: list[_Op], n: int, num_clbits: int, parameters, *, dtype, device, layout=None,
                 prior_branches=(), body=False) -> Program:
    """Lower operations (from |0..0> when layout is None, else continuing a state in `layout`).
    A `body` is continued by tails: every measurement branches and every phase is applied."""
    device = _device(device)
    pauli_cache: dict[int, torch.Tensor] = {}

    def tensor(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    def torch_pauli(k):
        if k not in pauli_cache:
            pauli_cache[k] = torch.as_tensor(paulis(k), dtype=_complex(dtype), device=device)
        return pauli_cache[k]

    ops, terminal = (ops, []) if body else _split_terminal(ops)
    phases = _phases(_chains(ops))
    init = None
    if layout is None:
        layout = tuple(range(n - 1, -1, -1))
        state = np.array([1.0])
        for _ in range(n):
            state = np.kron([1.0, 0, 0, 1], state)  # |0><0| = (I + Z) / 2 on every qubit
        state = state[None]
        if phases and phases[0][0] == "fixed":  # the same for every row: apply it now
            for op in phases.pop(0)[1]:
                state = apply_ptm(state, op.ptm, op.qubits, n)
        init = tensor(state[0])
    tail = phases.pop()[1] if not body and phases and phases[-1][0] == "fixed" else []
    steps, layout, mids = _lower(phases, n, layout, tensor, torch_pauli)
    forward, folded = _split_tail(tail)
    readout_steps, readout_layout, _ = _lower([("fixed", forward)] if forward else [], n, layout, tensor,
                                              torch_pauli)
    branches = list(prior_branches) + [op.clbits[0] for op in mids]
    readout, index = _readout(terminal, folded, readout_layout, branches, num_clbits)
    final = [(qs, _block_ptm(block, qs)) for qs, block in _best_fusion(tail, n)] if tail else []
    return Program(n, num_clbits, list(parameters), dtype, device, init, steps, layout, branches, final,
                   readout_steps, [tensor(f) for f in readout], torch.as_tensor(index, device=device),
                   bool(branches or terminal))


def _readout(terminal: list[_Op], folded: dict[int, list[_Op]], layout, branches: list[int], num_clbits: int):
    """Per-axis readout functionals and the clbit integer of each (branch, outcomes) entry.
    Axes contract to (B, C, outcome of each terminal qubit in axis order)."""
    by_qubit = {op.qubits[0]: op for op in terminal}
    funcs = []
    for q in layout:
        if q in by_qubit:
            conf = by_qubit[q].confusion
            f = _H @ (conf if conf is not None else np.eye(2))  # (4, recorded)
        else:
            f = _TRACE[:, None]
        for op in reversed(folded.get(q, [])):  # Heisenberg picture: f <- R^T f
            f = op.ptm.T @ f
        funcs.append(f)
    measured = [q for q in layout if q in by_qubit]
    grid = np.indices((2 ** len(branches),) + (2,) * len(measured)).reshape(1 + len(measured), -1)
    value = np.zeros(grid.shape[1], dtype=np.int64)
    bits: dict[int, np.ndarray] = {}
    for j, clbit in enumerate(branches):  # later writes of a clbit replace earlier ones
        bits[clbit] = (grid[0] >> j) & 1
    for i, q in enumerate(measured):
        bits[by_qubit[q].clbits[0]] = grid[1 + i]
    for clbit, b in bits.items():
        value |= b.astype(np.int64) << clbit
    return funcs, value


def _with_noise_passes(circuit, noise: Noise):
    """As Aer: the noise model's custom passes (relaxation on delays) run on circuits with delays."""
    if noise.passes is not None and any(i.operation.name == "delay" for i in circuit.data):
        return noise.passes(circuit)
    return circuit


@_one_blas_thread
def compile_circuit(circuit, noise: Noise | None = None, *, dtype=torch.float64, device=None) -> Program:
    """Compile a (compacted ISA) circuit once; rows of parameters bind `circuit.parameters`."""
    n = circuit.num_qubits
    noise = noise if noise is not None else Noise(n)
    circuit = _with_noise_passes(circuit, noise)
    column = {p.name: i for i, p in enumerate(circuit.parameters)}
    ops = _ops(circuit, noise, column)
    return _compile_ops(ops, n, circuit.num_clbits, circuit.parameters, dtype=dtype, device=device)


# ---- running -------------------------------------------------------------------------------------


def _rows(program: Program, params) -> torch.Tensor:
    if isinstance(params, torch.Tensor) and _device(params.device) != program.device:
        raise ValueError(f"parameter rows are on {params.device} but the program on {program.device}; "
                         f"compile with device={str(params.device)!r}")
    if params is None:  # a circuit without parameters: one row
        params = torch.zeros((1, 0), dtype=program.dtype, device=program.device)
    rows = torch.as_tensor(params, dtype=program.dtype, device=program.device)
    if rows.dim() == 1:
        rows = rows[None] if program.parameters else rows[:, None][:, :0]
    if rows.shape[1] != len(program.parameters):
        raise ValueError(f"parameter rows have {rows.shape[1]} columns; the circuit has "
                         f"{len(program.parameters)} parameters")
    return rows


CHUNK_BYTES = 1 << 20  # CPU: rows are simulated in chunks whose state fits in the L2 cache


def _chunks(rows: torch.Tensor, n: int, branches: int) -> list[slice]:
    """Row chunks: a 6-qubit state of 32 rows (1 MB) moves several times faster through a step
    than one of 200 rows (6.5 MB; bench/noisy_sim.py). On a GPU the whole batch is one chunk."""
    b = rows.shape[0]
    if rows.device.type != "cpu":
        return [slice(0, b)]
    size = max(1, CHUNK_BYTES // (2**branches * 4**n * rows.element_size()))
    return [slice(i, min(b, i + size)) for i in range(0, b, size)] or [slice(0, 0)]


def _prepare(steps: list[_Step], rows: torch.Tensor) -> list[torch.Tensor | None]:
    return [s.row_ptms(rows) for s in steps]


def _run(steps: list[_Step], ptms: list, part: slice, state: torch.Tensor) -> torch.Tensor:
    """Apply steps to the state of rows `part` (ptms from _prepare on all rows)."""
    for step, m in zip(steps, ptms):
        state = step(state, m[part] if m is not None else None)
    return state


def _initial(program: Program, rows: int) -> torch.Tensor:
    n = program.num_qubits
    return program.init.reshape((1, 1) + (4,) * n).expand((rows, 1) + (4,) * n)


def _layout_perm(layout: tuple[int, ...]) -> list[int]:
    """Axes of a canonical (qubit n-1 first) tensor in `layout` order."""
    n = len(layout)
    return [n - 1 - q for q in layout]


def _observable_matrix(program: Program, observables) -> torch.Tensor:
    """(4^n, K): Pauli coefficients of each observable, pulled back through the last fixed phase
    (cached per observables on the program)."""
    obs = [o if isinstance(o, SparsePauliOp) else SparsePauliOp(o) for o in observables]
    key = tuple(tuple((label, complex(c)) for label, c in o.to_list()) for o in obs)
    if key not in program.observables:
        program.observables[key] = _pull_back(program, obs)
    return program.observables[key]


@_one_blas_thread
def _pull_back(program: Program, observables) -> torch.Tensor:
    n, k = program.num_qubits, len(observables)
    w = np.zeros((k, 4**n))
    code = {"I": 0, "X": 1, "Y": 2, "Z": 3}
    for i, o in enumerate(observables):
        if o.num_qubits != n:
            raise ValueError(f"observable on {o.num_qubits} qubits for a {n}-qubit circuit")
        for label, c in o.to_list():
            w[i, sum(code[p] * 4**q for q, p in enumerate(reversed(label)))] += c.real
    for qubits, r in reversed(program.final):  # Heisenberg picture: w <- R^T w
        w = apply_ptm(w, r.T, qubits, n)
    w = w.reshape((k,) + (4,) * n).transpose([0] + [1 + a for a in _layout_perm(program.layout)])
    return torch.as_tensor(w.reshape(k, -1).T.copy(), dtype=program.dtype, device=program.device)


def expectation_values(program: Program, params, observables) -> torch.Tensor:
    """(B, K) exact noisy <O_k> = Tr(rho O_k) per row of a measurement-free circuit."""
    if program.measured:
        raise ValueError("expectation_values needs a circuit without measurements; use outcome_probabilities")
    rows = _rows(program, params)
    w = _observable_matrix(program, observables)
    ptms = _prepare(program.steps, rows)
    parts = _chunks(rows, program.num_qubits, 0)
    return torch.cat([_run(program.steps, ptms, p, _initial(program, p.stop - p.start)).flatten(1) @ w
                      for p in parts])


def _read(state: torch.Tensor, funcs: list[torch.Tensor]) -> torch.Tensor:
    """(B, branches x outcomes): each qubit axis contracted with its functional (4, outcomes)."""
    b = state.shape[0]
    y = state.reshape(b * state.shape[1], 4 ** len(funcs), 1)  # (rows x branches, qubit axes, outcomes so far)
    for f in reversed(funcs):  # the last qubit axis each time: one small product per qubit
        m, rest, o = y.shape
        y = torch.einsum("mlqo,qp->mlpo", y.reshape(m, rest // 4, 4, o), f).reshape(m, rest // 4, f.shape[1] * o)
    return y.reshape(b, state.shape[1] * y.shape[2])  # branch, then the outcomes of each axis, axis 0 most significant


def _to_clbits(program: Program, flat: torch.Tensor) -> torch.Tensor:
    probs = flat.new_zeros((flat.shape[0], 2**program.num_clbits))
    return probs.index_add(1, program.readout_index, flat)


def _probabilities(program: Program, state: torch.Tensor) -> torch.Tensor:
    for step in program.readout_steps:
        state = step(state, None)
    return _to_clbits(program, _read(state, program.readout))


def outcome_probabilities(program: Program, params) -> torch.Tensor:
    """(B, 2**num_clbits) exact distribution of the recorded clbits (clbit k = bit k of the
    index), readout error included."""
    rows = _rows(program, params)
    ptms = _prepare(program.steps, rows)
    parts = _chunks(rows, program.num_qubits, len(program.branches))
    return torch.cat([_probabilities(program, _run(program.steps, ptms, p, _initial(program, p.stop - p.start)))
                      for p in parts])


# ---- shared bodies -------------------------------------------------------------------------------


@dataclass
class Shared:
    """Circuits with a common body: the body's program and each circuit's tail. Tails that only
    read the state (basis changes and measurements fold into per-qubit readouts) are read together
    (`joint`)."""

    body: Program
    tails: list[Program]
    joint: _JointReadout | None = None


@dataclass
class _JointReadout:
    """The readouts of many tails at once: per qubit axis, every distinct functional of those tails
    side by side, contracted with the state once; each tail then gathers its own entries.
    Measurement groups repeat a few functionals per qubit (X, Y, Z bases), so QLAM's 729
    tomography groups cost one contraction instead of 729."""

    tails: list[int]  # which of Shared.tails
    funcs: list[torch.Tensor]  # per axis: (4, columns)
    gather: list[torch.Tensor]  # per tail: its flat readout entries in the joint output


def _joint_readout(tails: list[Program], dtype, device, limit: int = 1 << 16) -> _JointReadout | None:
    """A joint readout for the tails without steps of their own, if its output per row and branch
    stays within `limit` entries."""
    which = [i for i, t in enumerate(tails) if not t.steps and not t.readout_steps]
    if len(which) < 2:
        return None
    n = tails[which[0]].num_qubits
    columns: list[dict[bytes, tuple[int, np.ndarray]]] = [{} for _ in range(n)]  # per axis: func -> (offset, f)
    for i in which:
        for axis, f in enumerate(tails[i].readout):
            f = f.cpu().numpy()
            seen = columns[axis]
            if f.tobytes() not in seen:
                seen[f.tobytes()] = (sum(g.shape[1] for _, g in seen.values()), f)
    widths = [sum(f.shape[1] for _, f in seen.values()) for seen in columns]
    if math.prod(widths) > limit:
        return None
    strides = [math.prod(widths[a + 1:]) for a in range(n)]
    gather = []
    for i in which:
        funcs = [f.cpu().numpy() for f in tails[i].readout]
        grid = np.indices((2 ** len(tails[i].branches),) + tuple(f.shape[1] for f in funcs)).reshape(n + 1, -1)
        index = grid[0] * math.prod(widths)
        for axis, f in enumerate(funcs):
            index = index + (columns[axis][f.tobytes()][0] + grid[1 + axis]) * strides[axis]
        gather.append(torch.as_tensor(index, device=device))
    stacked = [torch.as_tensor(np.concatenate([f for _, f in seen.values()], axis=1), dtype=dtype, device=device)
               for seen in columns]
    return _JointReadout(which, stacked, gather)


def _key(circuit, inst) -> tuple:
    return (inst.operation.name, tuple(str(p) for p in inst.operation.params),
            tuple(circuit.find_bit(q).index for q in inst.qubits),
            tuple(circuit.find_bit(c).index for c in inst.clbits))


def _first_terminal_measure(circuit) -> int:
    """Index of the first measurement that nothing after it touches (qubit or clbit), or len."""
    touched, first = set(), len(circuit.data)
    for i in range(len(circuit.data) - 1, -1, -1):
        inst = circuit.data[i]
        wires = {circuit.find_bit(q).index for q in inst.qubits} | {-1 - circuit.find_bit(c).index for c in inst.clbits}
        if inst.operation.name == "measure" and not wires & touched:
            first = i
        touched |= wires
    return first


@_one_blas_thread
def compile_many(circuits, noise: Noise | None = None, *, dtype=torch.float64, device=None) -> Shared:
    """Compile circuits that share their first instructions (e.g. one template with each
    measurement group's basis change and measurements): the common body is simulated once per
    row, then each circuit's tail from the body's state."""
    n = circuits[0].num_qubits
    noise = noise if noise is not None else Noise(n)
    circuits = [_with_noise_passes(c, noise) for c in circuits]
    first = circuits[0]
    if any(c.num_qubits != n or list(c.parameters) != list(first.parameters) for c in circuits):
        raise ValueError("compile_many needs circuits on the same qubits with the same parameters")
    keys = [[_key(c, inst) for inst in c.data] for c in circuits]
    common = min(_first_terminal_measure(c) for c in circuits)  # those are read, not branched on
    for i in range(common):
        if any(k[i] != keys[0][i] for k in keys):
            common = i
            break
    column = {p.name: i for i, p in enumerate(first.parameters)}
    body_circuit = first.copy_empty_like()
    for inst in first.data[:common]:
        body_circuit.append(inst)
    body = _compile_ops(_ops(body_circuit, noise, column), n, first.num_clbits, first.parameters, dtype=dtype,
                        device=device, body=True)
    tails = []
    for c in circuits:
        tail_circuit = c.copy_empty_like()
        for inst in c.data[common:]:
            tail_circuit.append(inst)
        ops = _ops(tail_circuit, noise, column)
        tails.append(_compile_ops(ops, n, c.num_clbits, c.parameters, dtype=dtype, device=device,
                                  layout=body.layout, prior_branches=body.branches))
    return Shared(body, tails, _joint_readout(tails, dtype, body.device))


def outcome_probabilities_many(shared: Shared, params) -> list[torch.Tensor]:
    """Per circuit of `compile_many`: (B, 2**num_clbits) exact distributions."""
    rows = _rows(shared.body, params)
    body = shared.body
    ptms = [_prepare(body.steps, rows)] + [_prepare(t.steps, rows) for t in shared.tails]
    joint = shared.joint
    together = set(joint.tails) if joint is not None else set()
    out = []
    for p in _chunks(rows, body.num_qubits, max(len(t.branches) for t in shared.tails)):
        state = _run(body.steps, ptms[0], p, _initial(body, p.stop - p.start))
        probs = {i: _probabilities(t, _run(t.steps, ptms[1 + i], p, state))
                 for i, t in enumerate(shared.tails) if i not in together}
        if joint is not None:
            flat = _read(state, joint.funcs)
            probs |= {i: _to_clbits(shared.tails[i], flat[:, g]) for i, g in zip(joint.tails, joint.gather)}
        out.append([probs[i] for i in range(len(shared.tails))])
    return [torch.cat(per_tail) for per_tail in zip(*out)]


# ---- sampling ------------------------------------------------------------------------------------


def sample_counts(probs, shots: int, seed: int, *, first_row: int = 0) -> torch.Tensor:
    """(B, outcomes) int64 histograms of `shots` draws from each row's distribution.

    Reproducible by row: row i draws from numpy's PCG64 seeded with SeedSequence((seed, first_row
    + i)), whatever else is in the batch, so a batch split into chunks (pass each chunk's first
    row index) gives the same counts as the whole batch."""
    counts = draw(torch.as_tensor(probs).detach().to("cpu", torch.float64).numpy(), shots, seed, first_row)
    device = probs.device if isinstance(probs, torch.Tensor) else "cpu"
    return torch.as_tensor(counts, device=device)
