"""split: gate cutting with qiskit-addon-cutting 0.10 (stateless functions over plain data).

    labels = choose_partition(circuit, max_width)            # networkx, fewest cut 2q gates
    plan = plan_cut(circuit, observables, max_width, budget)  # cuts + sampling overhead, or None
    experiments = cut_experiments(circuit, observables, plan) # logical subexperiments (addon)
    values, stderr = reconstruct(counts, experiments, rows, shots)  # from their outcome histograms

`CutSplit` is the pipeline's split stage: a cut template becomes one batch of its subexperiments,
which the compile stage transpiles (once per subexperiment and target) and dispatch runs like any
other batch (job store, retries, cost, readout mitigation); its post-processing reconstructs.

Decision (`should_cut`): "off" never cuts; "force" always cuts; "auto" cuts when the template is
wider than the target, or when cutting it in two removes routing swaps within the sampling-overhead
budget. The overhead of k gate cuts is the product of their QPD overheads (9 per CZ/CX cut), and
the shots needed for a given standard error grow by that factor.

Transpile once, bind many, also when cutting: as long as the cut gates do not depend on the inputs
(templates cut CZ/CX gates; inputs enter through single-qubit rotations), the subexperiments are
generated once from the parameterized subcircuits, transpiled once by the compile stage, and every
parameter row is bound by the backend.

Standard error: the reconstructed value is sum_i c_i prod_p m_ip, where m_ip is the mean of +-1
shot outcomes of subexperiment i on partition p (independent circuits, `shots` each). Its variance
is estimated by plug-in: Var(m_ip) = s_ip^2 / shots with the per-shot sample variance s_ip^2,
Var(prod_p m_ip) = prod_p (m_ip^2 + Var m_ip) - prod_p m_ip^2 (independent factors), and the
terms add with weights c_i^2. This is the honest shot-noise error of the exact-weight QPD
estimator (no sampling of QPD terms, so no extra Monte-Carlo error).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Hashable

import networkx as nx
import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import SamplerResult
from qiskit.quantum_info import PauliList
from qiskit.result import QuasiDistribution
from qiskit_addon_cutting import (
    generate_cutting_experiments,
    partition_problem,
    reconstruct_expectation_values,
)
from qiskit_addon_cutting.cutting_experiments import _get_pauli_indices
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

from qssm.circuits.templates import model_templates
from qssm.errors import QssmError
from qssm.pipeline.compile import CompileCache, CompileOptions, check_width, transpile
from qssm.pipeline.metrics import circuit_metrics, two_qubit_count
from qssm.pipeline.stages import SpecStage, first, map_batches
from qssm.types import merged

MAX_QPD_TERMS = 5_000  # exact-weight enumeration of QPD terms; beyond this the plan is refused


# ---- partition -------------------------------------------------------------------------------


def interaction_graph(circuit: QuantumCircuit) -> nx.Graph:
    """Qubits as nodes, two-qubit gates as edges weighted by how many act on the pair."""
    g = nx.Graph()
    g.add_nodes_from(range(circuit.num_qubits))
    for inst in circuit.data:
        if inst.operation.num_qubits == 2 and inst.operation.name != "barrier":
            a, b = (circuit.find_bit(q).index for q in inst.qubits)
            g.add_edge(a, b, weight=g.get_edge_data(a, b, {"weight": 0})["weight"] + 1)
    return g


def _cut_weight(g: nx.Graph, parts: list[set[int]]) -> int:
    part = {q: i for i, p in enumerate(parts) for q in p}
    return sum(d["weight"] for a, b, d in g.edges(data=True) if part[a] != part[b])


def _bisect(g: nx.Graph, nodes: set[int], max_width: int, seed: int) -> list[set[int]]:
    if len(nodes) <= max_width:
        return [nodes]
    a, b = nx.algorithms.community.kernighan_lin_bisection(g.subgraph(nodes), weight="weight", seed=seed)
    return _bisect(g, set(a), max_width, seed) + _bisect(g, set(b), max_width, seed)


def _merge(g: nx.Graph, parts: list[set[int]], max_width: int) -> list[set[int]]:
    """Greedily merge parts that fit together, heaviest shared edges first (fewer cuts)."""
    while True:
        best = None
        for i in range(len(parts)):
            for j in range(i + 1, len(parts)):
                if len(parts[i]) + len(parts[j]) <= max_width:
                    w = sum(d["weight"] for _, _, d in nx.edge_boundary(g, parts[i], parts[j], data=True))
                    if best is None or w > best[0]:
                        best = (w, i, j)
        if best is None:
            return parts
        _, i, j = best
        parts = [p for k, p in enumerate(parts) if k not in (i, j)] + [parts[i] | parts[j]]


def choose_partition(circuit: QuantumCircuit, max_width: int, seeds: int = 8) -> str:
    """One label per qubit ("AABB"), every part at most `max_width` qubits, few cut 2q gates:
    recursive Kernighan-Lin bisection of the weighted interaction graph (best of `seeds` seeds),
    then a greedy merge of parts that still fit together."""
    if max_width < 1:
        raise QssmError(f"cannot cut {circuit.name} into parts of {max_width} qubits; need at least 1")
    g = interaction_graph(circuit)
    best = None
    for seed in range(seeds):
        parts = _merge(g, _bisect(g, set(g.nodes), max_width, seed), max_width)
        score = (_cut_weight(g, parts), len(parts))
        if best is None or score < best[0]:
            best = (score, parts)
    parts = sorted(best[1], key=min)
    label = {q: chr(ord("A") + i) for i, part in enumerate(parts) for q in part}
    return "".join(label[q] for q in range(circuit.num_qubits))


# ---- plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutPlan:
    labels: str  # partition label per qubit (qubit 0 first)
    n_cuts: int
    overhead: float  # sampling overhead: product of the cut gates' QPD overheads
    widths: dict  # partition label -> qubits
    n_terms: int  # QPD terms enumerated (subexperiments = terms x measurement groups per partition)


def _problem(circuit: QuantumCircuit, labels: str, observables: tuple[str, ...] | None):
    try:
        return partition_problem(circuit, labels, observables=PauliList(list(observables)) if observables else None)
    except (ValueError, TypeError) as e:  # e.g. a cut gate whose angle is an unbound input
        raise QssmError(f"cannot cut {circuit.name} with partition {labels}: {e}; cut gates must not depend on "
                        "the inputs") from e


def partition_plan(circuit: QuantumCircuit, observables: tuple[str, ...], max_width: int) -> CutPlan:
    """The cut plan for parts of at most max_width qubits, whatever its overhead."""
    labels = choose_partition(circuit, max_width)
    problem = _problem(circuit, labels, tuple(observables))
    overhead = float(math.prod(b.overhead for b in problem.bases))
    n_terms = math.prod(len(b.coeffs) for b in problem.bases)
    widths = {k: c.num_qubits for k, c in problem.subcircuits.items()}
    return CutPlan(labels, len(problem.bases), overhead, widths, n_terms)


def within_budget(plan: CutPlan, max_overhead: float) -> bool:
    return plan.overhead <= max_overhead and plan.n_terms <= MAX_QPD_TERMS


def plan_cut(circuit: QuantumCircuit, observables: tuple[str, ...], max_width: int, max_overhead: float,
             *, strict: bool = False) -> CutPlan | None:
    """Partition into parts of at most max_width qubits. None (or, with strict, a QssmError naming
    the budget) when the sampling overhead exceeds max_overhead."""
    plan = partition_plan(circuit, observables, max_width)
    if within_budget(plan, max_overhead):
        return plan
    if not strict:
        return None
    why = (f"sampling overhead {plan.overhead:.3g} (budget {max_overhead:g}); raise [split] max_overhead"
           if plan.overhead > max_overhead else f"{plan.n_terms} QPD terms (at most {MAX_QPD_TERMS})")
    raise QssmError(f"cutting {circuit.name} into parts of <= {max_width} qubits needs {plan.n_cuts} gate cuts with "
                    f"{why} or use a backend with enough connected qubits")


# ---- experiments, reconstruction and the split stage ------------------------------------------------


@dataclass
class CutExperiments:
    """Everything the split stage needs for one (circuit, observables, plan), built once per template."""

    subexperiments: dict[Hashable, list[QuantumCircuit]]  # per partition, logical (compile transpiles them)
    columns: dict[Hashable, list[np.ndarray]]  # row columns that bind each subexperiment's parameters
    coefficients: list  # [(coefficient, WeightType)] per QPD term
    subobservables: dict[Hashable, PauliList]

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.subexperiments.values())


def cut_experiments(circuit: QuantumCircuit, observables: tuple[str, ...], plan: CutPlan) -> CutExperiments:
    """Generate the parameterized subexperiments of a plan."""
    problem = _problem(circuit, plan.labels, tuple(observables))
    experiments, coefficients = generate_cutting_experiments(
        problem.subcircuits, problem.subobservables, num_samples=np.inf)
    position = {p: i for i, p in enumerate(circuit.parameters)}
    columns = {label: [np.array([position[p] for p in c.parameters], dtype=np.int64) for c in circuits]
               for label, circuits in experiments.items()}
    return CutExperiments(experiments, columns, coefficients, problem.subobservables)


def _v1_order(circuit: QuantumCircuit) -> np.ndarray | None:
    """Outcome permutation to the addon's integer convention (observable bits low, QPD bits above),
    or None when the circuit's clbits are already in that order."""
    regs = {r.name: [circuit.find_bit(b).index for b in r] for r in circuit.cregs}
    order = regs.get("observable_measurements", []) + regs.get("qpd_measurements", [])
    if order == list(range(len(order))):
        return None
    idx = np.arange(2**len(order))
    return sum(((idx >> k) & 1) << pos for k, pos in enumerate(order))


def _signs(cog, num_outcomes: int) -> np.ndarray:
    """(outcomes, commuting observables) +-1 values of each outcome integer in the addon's convention:
    the QPD sign (parity of the QPD bits) times each observable's parity."""
    n_obs_bits = len(_get_pauli_indices(cog))
    idx = np.arange(num_outcomes)
    qpd = 1 - 2 * (np.bitwise_count(idx >> n_obs_bits) & 1).astype(np.int64)
    obs = idx & ((1 << n_obs_bits) - 1)
    return np.stack([qpd * (1 - 2 * (np.bitwise_count(obs & m) & 1).astype(np.int64)) for m in cog.pauli_bitmasks], 1)


def reconstruct(counts: dict, ex: CutExperiments, n_rows: int, shots: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, stderr), each (rows, n_obs), from the subexperiments' outcome histograms.

    Values are qiskit-addon-cutting's own `reconstruct_expectation_values`, row by row, on the
    histograms as quasi-distributions. Standard errors (the addon has none) are the plug-in
    estimate of the module docstring, vectorized over rows."""
    probs = {}
    for label, hists in counts.items():
        ps = []
        for c, h in zip(ex.subexperiments[label], hists):
            p = np.asarray(h, dtype=np.float64) / shots
            perm = _v1_order(c)
            if perm is not None:
                q = np.zeros_like(p)
                q[:, perm] = p
                p = q
            ps.append(np.broadcast_to(p, (n_rows, p.shape[-1])))  # parameter-free: one row for all
        probs[label] = ps
    values = np.zeros((n_rows, len(next(iter(ex.subobservables.values())))))
    for r in range(n_rows):
        results = {label: SamplerResult([QuasiDistribution({j: float(v) for j, v in enumerate(p[r]) if v != 0})
                                         for p in ps], [{}] * len(ps)) for label, ps in probs.items()}
        values[r] = reconstruct_expectation_values(results, ex.coefficients, ex.subobservables)
    var = np.zeros_like(values)
    collections = {label: ObservableCollection(so) for label, so in ex.subobservables.items()}
    for i, (coeff, _) in enumerate(ex.coefficients):
        m2v = np.ones_like(values)  # prod (m^2 + v)
        mean = np.ones_like(values)  # prod m
        for label, oc in collections.items():
            stats = []
            for k, cog in enumerate(oc.groups):
                p = probs[label][i * len(oc.groups) + k]
                m = p @ _signs(cog, p.shape[1])
                stats.append((m, np.clip(1 - m**2, 0, None) / max(shots - 1, 1)))
            for j, sub in enumerate(ex.subobservables[label]):
                where = oc.lookup[sub]
                m = sum(stats[g][0][:, n] for g, n in where) / len(where)
                vv = sum(stats[g][1][:, n] for g, n in where) / len(where) ** 2
                mean[:, j] *= m
                m2v[:, j] *= m * m + vv
        var += coeff**2 * np.maximum(m2v - mean**2, 0.0)
    return values, np.sqrt(var)


DEFAULT_CUT_SHOTS = 10_000  # cut circuits are always sampled; shots per subexperiment when a run asks for exact values


class CutSplit(SpecStage):
    """The split stage: templates that must (or, in "auto" mode, had better) be cut become one batch
    of their cut subexperiments; the post-processing reconstructs the template's values."""

    name = "split"

    @classmethod
    def from_spec(cls, spec, ctx):
        return cls(ctx.backend, ctx.options, spec.split.cutting, spec.split.max_overhead, ctx.cache, ctx.tracker)

    @classmethod
    def validate(cls, spec, backend, model=None) -> None:
        if spec.split.cutting == "off" and model is not None:  # uncut, the widest template must fit the device
            widest = max(model_templates(model), key=lambda t: t.circuit.num_qubits)
            check_width(widest.name, widest.circuit, backend)
        if spec.split.cutting == "force" and not backend.capabilities.mid_circuit_measurement:
            raise QssmError(f"cut circuits measure mid-circuit and {backend.name} does not run them; "
                            'set [split] cutting = "off" or use an aer or ibm backend')

    def __init__(self, backend, options=None, mode: str = "off", max_overhead: float = 1000.0, cache=None,
                 tracker=None):
        self.backend = backend
        self.options = options or CompileOptions()
        self.mode = mode
        self.max_overhead = max_overhead
        self.cache = cache or CompileCache()
        self.tracker = tracker
        self._plans: dict[tuple, tuple[CutPlan, CutExperiments]] = {}

    def __call__(self, batches):
        if self.mode != "off":  # the cut decision reads each template's transpilation: all at once
            self.cache.prefetch([b.template for b in batches if b.template is not None], self.backend, self.options)
        return map_batches(batches, self._one)

    def _experiments(self, t) -> tuple[CutPlan, CutExperiments]:
        key = (t.hash, self.backend.name, self.backend.calibration, self.options)
        if key not in self._plans:  # planned and generated once per template and target
            plan = plan_cut(t.circuit, t.observables, cut_width(t, self.backend), self.max_overhead, strict=True)
            self._plans[key] = (plan, cut_experiments(t.circuit, t.observables, plan))
        return self._plans[key]

    def _one(self, batch):
        t = batch.template
        if t is None or self.mode == "off" or not should_cut(t, self.backend, self.mode, self.max_overhead,
                                                             options=self.options, cache=self.cache):
            return [batch], first
        plan, ex = self._experiments(t)
        labels = list(ex.subexperiments)
        circuits = [c for label in labels for c in ex.subexperiments[label]]
        columns = [cols for label in labels for cols in ex.columns[label]]
        shots = batch.shots or DEFAULT_CUT_SHOTS
        cut = {"cuts": plan.n_cuts, "sampling_overhead": plan.overhead, "partition": plan.labels}
        child = batch.derive(circuits=tuple(circuits), observables=(), columns=tuple(columns), shots=shots,
                             template=None, meta={"template": f"{t.name}.cut", "cut": cut})
        if self.tracker is not None:
            self.tracker.add(cut_batches=1, cut_subexperiments=len(circuits))
        n_rows = len(batch.parameters)

        def combine(results):
            counts, k = {}, 0
            for label in labels:
                counts[label] = results[0].counts[k:k + len(ex.subexperiments[label])]
                k += len(ex.subexperiments[label])
            values, stderr = reconstruct(counts, ex, n_rows, shots)
            return dataclasses.replace(merged(results, values, stderr, cut=cut), shots=shots)

        return [child], combine


# ---- decision and report -------------------------------------------------------------------------


def cut_width(template, backend) -> int:
    """Parts for cutting: halves of the template, never wider than the target."""
    n = template.circuit.num_qubits
    half = max(1, (n + 1) // 2)
    return half if backend.target is None else max(1, min(half, backend.target.num_qubits))


def _without_qpd(circuit: QuantumCircuit) -> QuantumCircuit:
    """A subcircuit with its single-qubit QPD placeholders dropped, for routing estimates (each
    QPD term adds at most a few 1q gates and one mid-circuit measurement per cut: no 2q gates)."""
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        if not inst.operation.name.startswith("qpd"):
            out.append(inst)
    return out


def cut_report(template, backend, options, max_overhead: float = math.inf, *, cache=None) -> dict:
    """Depth / swaps / success probability without and with cutting the template in two
    (cuts, sampling overhead, within budget). Used by `qssm compile` and `should_cut`."""
    circuit, target = template.circuit, backend.target
    key = (template.hash, backend.name, backend.calibration, options, max_overhead)
    if cache is not None and key in cache.cut_decisions:
        return dict(cache.cut_decisions[key])
    if target is None:
        out = {"depth": circuit.depth(), "two_qubit": two_qubit_count(circuit), "swaps": 0}
    elif circuit.num_qubits > target.num_qubits:
        out = {"depth": None, "two_qubit": None, "swaps": None, "too_wide": True}
    else:
        m = (cache or CompileCache()).get(template, backend, options).metrics
        out = {k: m[k] for k in ("depth", "two_qubit", "swaps", "success_probability")}
    out.update(cuts=0, sampling_overhead=1.0, within_budget=True)
    if circuit.num_qubits > 1:
        plan = partition_plan(circuit, template.observables, cut_width(template, backend))
        out.update(cuts=plan.n_cuts, sampling_overhead=plan.overhead, partition=plan.labels,
                   within_budget=within_budget(plan, max_overhead))
        parts = _problem(circuit, plan.labels, None).subcircuits.values()
        if target is None:
            out.update(depth_cut=max(c.depth() for c in parts), swaps_cut=0)
        else:
            plain = dataclasses.replace(options, initial_layout=None)
            routed = [(transpile(_without_qpd(c), target, plain), c) for c in parts]
            stats = [circuit_metrics(isa, target, swaps=swaps) for (isa, swaps), _ in routed]
            out.update(depth_cut=max(s["depth"] for s in stats), swaps_cut=sum(s["swaps"] for s in stats),
                       two_qubit_cut=sum(s["two_qubit"] for s in stats),
                       success_probability_cut=math.prod(s["success_probability"] for s in stats))
    if cache is not None:
        cache.cut_decisions[key] = dict(out)
    return out


def should_cut(template, backend, mode: str, max_overhead: float, *, options=None, cache=None) -> bool:
    """Whether to cut `template` for `backend` (see module docstring). Wider-than-target templates
    are cut in "auto" mode even above budget: plan_cut(strict=True) then names the budget."""
    return cut_decision(template, backend, mode, max_overhead, options=options, cache=cache)[0]


def cut_decision(template, backend, mode: str, max_overhead: float, *, options=None, cache=None) -> tuple[bool, str]:
    """(cut or not, why): the split stage acts on the first, `qssm compile` prints both."""
    if mode not in ("off", "auto", "force"):
        raise QssmError(f"[split] cutting must be off, auto or force, got {mode!r}")
    if mode == "off":
        return False, "not cut: cutting = off"
    if template.circuit.num_qubits < 2:
        return False, "not cut: one qubit"
    if mode == "force":
        return True, "cut: cutting = force"
    target = backend.target
    if target is None:
        return False, "not cut: no device target (logical simulator)"
    if template.circuit.num_qubits > target.num_qubits:
        return True, f"cut: {template.circuit.num_qubits} qubits on a {target.num_qubits}-qubit device"

    options = options or CompileOptions()
    cache = cache if cache is not None else CompileCache()
    key = ("should_cut", template.hash, backend.name, backend.calibration, options, max_overhead)
    if key not in cache.cut_decisions:
        # cheapest test first: no swaps to remove, or no cut within budget, needs no routing of parts
        swaps = cache.get(template, backend, options).metrics["swaps"]
        if not swaps:
            decision = False, "not cut: no routing swaps to remove"
        else:
            plan = partition_plan(template.circuit, template.observables, cut_width(template, backend))
            if not plan.n_cuts:
                decision = False, "not cut: no partition into halves"
            elif not within_budget(plan, max_overhead):
                decision = False, f"not cut: overhead {plan.overhead:.3g} > max_overhead {max_overhead:g}"
            else:
                after = cut_report(template, backend, options, max_overhead, cache=cache)["swaps_cut"]
                decision = (after < swaps, f"{'cut' if after < swaps else 'not cut'}: swaps {swaps} -> {after} "
                                           f"at overhead {plan.overhead:.3g}")
        cache.cut_decisions[key] = decision
    return cache.cut_decisions[key]
