"""split: gate cutting with qiskit-addon-cutting (stateless: partition, generate, reconstruct).

A template is cut when it is wider than the target, or (mode "auto") when cutting removes routing
swaps within the sampling-overhead budget, or always (mode "force"). Partitions come from the
qubit-interaction graph (networkx Kernighan-Lin bisection, repeated until every part fits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import PauliList

from qssm.errors import QssmError


def interaction_graph(circuit: QuantumCircuit) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(circuit.num_qubits))
    for inst in circuit.data:
        if len(inst.qubits) == 2:
            a, b = (circuit.find_bit(q).index for q in inst.qubits)
            w = g.get_edge_data(a, b, {"weight": 0})["weight"]
            g.add_edge(a, b, weight=w + 1)
    return g


def choose_partition(circuit: QuantumCircuit, max_width: int, seed: int = 0) -> list[str]:
    """Labels per qubit: bisect the heaviest part (fewest cut gates, by edge weight) until every
    part has at most max_width qubits."""
    g = interaction_graph(circuit)
    parts = [set(g.nodes)]
    while max(len(p) for p in parts) > max_width:
        big = max(parts, key=len)
        parts.remove(big)
        a, b = nx.algorithms.community.kernighan_lin_bisection(g.subgraph(big), weight="weight", seed=seed)
        parts += [set(a), set(b)]
    label = {q: chr(ord("A") + i) for i, part in enumerate(sorted(parts, key=min)) for q in part}
    return [label[q] for q in range(circuit.num_qubits)]


@dataclass
class CutPlan:
    labels: list[str]
    n_cuts: int
    overhead: float  # sampling overhead: product of the cut gates' gamma^2


def plan_cut(circuit: QuantumCircuit, max_width: int, max_overhead: float) -> CutPlan:
    from qiskit_addon_cutting import partition_problem

    labels = choose_partition(circuit, max_width)
    problem = partition_problem(circuit, labels)
    overhead = float(np.prod([b.overhead for b in problem.bases])) if problem.bases else 1.0
    if overhead > max_overhead:
        raise QssmError(f"cutting {circuit.name} into parts of {max_width} qubits needs {len(problem.bases)} cuts, "
                        f"sampling overhead {overhead:.3g} > budget {max_overhead:g}; raise [split] max_overhead "
                        "or pick a wider backend")
    return CutPlan(labels, len(problem.bases), overhead)


def run_cut(circuit: QuantumCircuit, observables: tuple[str, ...], rows: np.ndarray, plan: CutPlan,
            sampler, shots: int, transpile=None) -> tuple[np.ndarray, np.ndarray]:
    """Expectation values for each parameter row from the cut subexperiments.

    The standard error is the QPD bound gamma / sqrt(shots), gamma = sum |coefficients|: each
    subexperiment's parity estimate has variance <= 1/shots and the estimator is their
    coefficient-weighted sum (conservative: it ignores the products' |values| < 1)."""
    from qiskit_addon_cutting import generate_cutting_experiments, partition_problem, reconstruct_expectation_values

    values = np.zeros((len(rows), len(observables)))
    stderr = np.zeros_like(values)
    paulis = PauliList(list(observables))
    for r, row in enumerate(rows):
        bound = circuit.assign_parameters(row) if circuit.num_parameters else circuit
        problem = partition_problem(bound, plan.labels, observables=paulis)
        experiments, coefficients = generate_cutting_experiments(
            problem.subcircuits, problem.subobservables, num_samples=np.inf)
        results = {}
        for label, circuits in experiments.items():
            circuits = [transpile(c) for c in circuits] if transpile else circuits
            results[label] = sampler.run(circuits, shots=shots).result()
        values[r] = reconstruct_expectation_values(results, coefficients, problem.subobservables)
        gamma = sum(abs(c) for c, _ in coefficients)
        stderr[r] = gamma / math.sqrt(shots)
    return values, stderr


def routing_swaps(circuit: QuantumCircuit, target, optimization_level: int = 1, seed: int = 7) -> tuple[int, int]:
    """(swaps, depth) of the circuit routed on the target."""
    from qiskit.transpiler import generate_preset_pass_manager

    swaps = []

    def count(pass_, dag, **_):
        if pass_.name().endswith(("Swap", "SabreLayout")):
            swaps.append(dag.count_ops().get("swap", 0))

    pm = generate_preset_pass_manager(optimization_level=optimization_level, target=target, seed_transpiler=seed)
    isa = pm.run(circuit, callback=count)
    return (swaps[-1] if swaps else 0), isa.depth()


def cut_report(circuit: QuantumCircuit, target, max_width: int, max_overhead: float = math.inf) -> dict:
    """Depth and swaps with and without cuts (the compile report's split columns)."""
    swaps, depth = routing_swaps(circuit, target)
    out = {"swaps": swaps, "depth": depth}
    if circuit.num_qubits <= 1:
        return out
    try:
        plan = plan_cut(circuit, max_width, max_overhead)
    except QssmError as e:
        return {**out, "cut_error": str(e)}
    from qiskit_addon_cutting import partition_problem

    parts = partition_problem(circuit, plan.labels).subcircuits
    routed = [routing_swaps(_decompose_cuts(c), target) for c in parts.values()]
    return {**out, "cuts": plan.n_cuts, "sampling_overhead": plan.overhead,
            "swaps_cut": sum(s for s, _ in routed), "depth_cut": max(d for _, d in routed)}


def _decompose_cuts(circuit: QuantumCircuit) -> QuantumCircuit:
    """Subcircuits hold TwoQubitQPDGate placeholders on one qubit; drop them for routing."""
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        if inst.operation.name.startswith("qpd"):
            continue
        out.append(inst)
    return out
