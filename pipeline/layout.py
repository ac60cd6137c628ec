"""Noise-aware initial layout: the lowest-error connected physical qubits for a logical circuit.

The device's coupling graph is weighted by calibration data from the Target: each edge by
-log(1 - two-qubit gate error), each node by -log(1 - readout error) + -log(1 - sx error). The
logical circuit's interaction graph weights each pair by its number of two-qubit gates.

1. Candidates: every connected subset of n physical qubits (exhaustive enumeration while that is
   small, else subsets grown greedily from each qubit, cheapest neighbour first), ranked by a
   mapping-free cost (node costs + the minimum spanning tree of edge costs).
2. Mapping: for the best subsets, the permutation of logical qubits onto them minimizing
   sum over interactions of count * edge cost, where a pair that is not adjacent pays
   (1 + 3 * extra hops) times the cost of a path (the swaps routing will insert); plus readout.
3. Selection: the few best (subset, mapping) candidates are transpiled with that initial layout and
   scored by pipeline.metrics' estimated success probability (what `qssm compile` reports); the
   best one wins. The default layout (Sabre + VF2PostLayout, itself noise-aware when a perfect
   layout exists) is computed beside it for the report and is not a candidate, so a noise-aware
   result that beats it does so on its own.

QMamba's and QLAM's templates share one width per model, so `build_pipeline` computes one layout
from all templates of that width together (their interaction counts summed, success averaged).
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
from qiskit import QuantumCircuit
from qiskit.transpiler import Target

from qssm.backends.registry import device_coordinates, device_target
from qssm.errors import QssmError
from qssm.pipeline.compile import CompileOptions, transpile
from qssm.pipeline.metrics import circuit_metrics, final_layout

MAX_ENUMERATED = 20_000  # connected subsets enumerated exhaustively up to this many
MAX_PERMUTED = 7  # brute-force mappings up to this many qubits (7! = 5040)


def _cost(err) -> float:
    return -math.log1p(-min(float(err), 0.999999)) if err else 0.0


def device_graph(target: Target) -> nx.Graph:
    """Undirected coupling graph: node weight "cost" (readout + sx), edge weight "cost" (best 2q gate)."""
    g = nx.Graph()
    for q in range(target.num_qubits):
        cost = 0.0
        for name in ("measure", "sx"):
            if name in target.operation_names:
                props = target[name].get((q,))
                cost += _cost(props.error if props is not None else None)
        g.add_node(q, cost=cost)
    for name in target.operation_names:
        op = target.operation_from_name(name) if hasattr(target, "operation_from_name") else None
        if getattr(op, "num_qubits", 0) != 2 or getattr(op, "params", None):
            continue
        for qargs, props in target[name].items():
            if qargs is None or len(qargs) != 2:
                continue
            a, b = qargs
            cost = _cost(props.error if props is not None else None)
            if not g.has_edge(a, b) or cost < g[a][b]["cost"]:
                g.add_edge(a, b, cost=cost)
    return g


def interaction_graph(circuits: list[QuantumCircuit]) -> nx.Graph:
    """Logical qubits, edges weighted by their two-qubit gate count summed over `circuits`."""
    n = circuits[0].num_qubits
    h = nx.Graph()
    h.add_nodes_from(range(n))
    for qc in circuits:
        for inst in qc.data:
            if inst.operation.num_qubits == 2 and inst.operation.name != "barrier":
                a, b = (qc.find_bit(q).index for q in inst.qubits)
                w = h[a][b]["count"] + 1 if h.has_edge(a, b) else 1
                h.add_edge(a, b, count=w)
    return h


def connected_subsets(g: nx.Graph, k: int, limit: int = MAX_ENUMERATED) -> list[tuple[int, ...]] | None:
    """Every connected k-subset (ESU enumeration); None when there are more than `limit`."""
    out: list[tuple[int, ...]] = []

    def extend(sub: list[int], ext: set[int], v: int) -> bool:
        if len(sub) == k:
            out.append(tuple(sorted(sub)))
            return len(out) <= limit
        ext = set(ext)
        while ext:
            w = ext.pop()
            excl = {u for s in sub for u in g[s]} | set(sub)
            new = ext | {u for u in g[w] if u > v and u not in excl}
            if not extend(sub + [w], new, v):
                return False
        return True

    for v in g.nodes:
        if not extend([v], {u for u in g[v] if u > v}, v):
            return None
    return out


def grown_subsets(g: nx.Graph, k: int) -> list[tuple[int, ...]]:
    """From each qubit, add the cheapest neighbouring qubit (node + connecting edge) until k."""
    out = set()
    for start in g.nodes:
        sub = [start]
        while len(sub) < k:
            best = min(((g.nodes[u]["cost"] + g[s][u]["cost"], u) for s in sub for u in g[s] if u not in sub),
                       default=None)
            if best is None:
                break
            sub.append(best[1])
        if len(sub) == k:
            out.add(tuple(sorted(sub)))
    return sorted(out)


def subset_cost(g: nx.Graph, sub: tuple[int, ...]) -> float:
    tree = nx.minimum_spanning_tree(g.subgraph(sub), weight="cost")
    return sum(g.nodes[q]["cost"] for q in sub) + tree.size(weight="cost")


def mapping_cost(g: nx.Graph, h: nx.Graph, phys: tuple[int, ...], dist, path_cost) -> float:
    cost = sum(g.nodes[p]["cost"] for p in phys)
    for a, b, d in h.edges(data=True):
        pa, pb = phys[a], phys[b]
        hops = dist[pa][pb]
        cost += d["count"] * (path_cost[pa][pb] * (1 + 3 * (hops - 1)) if hops > 1 else g[pa][pb]["cost"])
    return cost


def best_mapping(g: nx.Graph, h: nx.Graph, sub: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
    sg = g.subgraph(sub)
    dist = dict(nx.all_pairs_shortest_path_length(sg))
    path_cost = dict(nx.all_pairs_dijkstra_path_length(sg, weight="cost"))
    n = h.number_of_nodes()
    if n <= MAX_PERMUTED:
        return min((mapping_cost(g, h, perm, dist, path_cost), perm) for perm in itertools.permutations(sub))
    # larger: most-interacting logical qubit on the cheapest physical one, then greedily by neighbours
    order = sorted(h.nodes, key=lambda q: -h.degree(q, weight="count"))
    free = sorted(sub, key=lambda p: g.nodes[p]["cost"])
    phys: dict[int, int] = {}
    for q in order:
        placed = [(phys[r], h[q][r]["count"]) for r in h[q] if r in phys]
        p = min(free, key=lambda p: sum(c * path_cost[p][pr] * dist[p][pr] for pr, c in placed) + g.nodes[p]["cost"])
        phys[q] = p
        free.remove(p)
    perm = tuple(phys[q] for q in range(n))
    return mapping_cost(g, h, perm, dist, path_cost), perm


def estimated_success(target: Target, circuits: list[QuantumCircuit], layout=None, optimization_level: int = 2,
                      seed_transpiler: int = 0) -> tuple[float, list[int]]:
    """(mean estimated success probability over `circuits`, initial layout used) after transpiling
    with `layout` (None: the default layout pass)."""
    options = CompileOptions(optimization_level, seed_transpiler, layout)
    successes, initial = [], None
    for qc in circuits:
        isa, swaps = transpile(qc, target, options)
        successes.append(circuit_metrics(isa, target, swaps=swaps, measured=final_layout(isa))["success_probability"])
        if initial is None:
            initial = list(isa.layout.initial_index_layout()[: qc.num_qubits])
    return float(np.mean(successes)), initial


def _gate_cost(target: Target, name: str, qargs: tuple[int, ...]) -> float:
    for q in (qargs, qargs[::-1]) if len(qargs) == 2 else (qargs,):
        try:
            props = target[name].get(q)
        except (KeyError, TypeError):
            props = None
        if props is not None or (q in target[name] if name in target.operation_names else False):
            return _cost(props.error if props is not None else None)
    return _cost(0.999999)  # not available there: effectively forbidden


def reembed(target: Target, g: nx.Graph, isa: QuantumCircuit, measured: list[int], limit: int = 50_000) -> dict | None:
    """The cheapest relabelling of a routed ISA circuit's physical qubits: every embedding of its
    (coupling-compatible) interaction graph into the device graph, scored by the exact sum of gate
    and readout costs that pipeline.metrics multiplies up. {old physical: new physical} or None."""
    index = {q: i for i, q in enumerate(isa.qubits)}
    gates: dict[tuple[str, tuple[int, ...]], int] = {}
    for inst in isa.data:
        if inst.operation.name != "barrier":
            qargs = tuple(index[q] for q in inst.qubits)
            gates[(inst.operation.name, qargs)] = gates.get((inst.operation.name, qargs), 0) + 1
    for q in measured:
        gates[("measure", (q,))] = gates.get(("measure", (q,)), 0) + 1
    routed = nx.Graph()
    routed.add_nodes_from({q for _, qargs in gates for q in qargs})
    routed.add_edges_from(qargs for _, qargs in gates if len(qargs) == 2)
    best, best_cost = None, math.inf
    matcher = nx.algorithms.isomorphism.GraphMatcher(g, routed)
    for k, mono in enumerate(matcher.subgraph_monomorphisms_iter()):
        if k >= limit:
            break
        pi = {v: u for u, v in mono.items()}
        cost = sum(c * _gate_cost(target, name, tuple(pi[q] for q in qargs)) for (name, qargs), c in gates.items())
        if cost < best_cost:
            best, best_cost = pi, cost
    return best


def noise_aware_layout(target: Target, circuit, *, candidates: int = 12, optimization_level: int = 2,
                       seed_transpiler: int = 0, details: dict | None = None) -> list[int]:
    """Physical qubit per logical qubit of `circuit` (or of a list of equal-width circuits) on the
    lowest-error connected subset of `target`'s coupling graph (see module docstring). `details`,
    if given, receives the candidates' scores."""
    circuits = list(circuit) if isinstance(circuit, (list, tuple)) else [circuit]
    n = circuits[0].num_qubits
    if any(c.num_qubits != n for c in circuits):
        raise QssmError("noise_aware_layout needs circuits of one width; compute one layout per width")
    g = device_graph(target)
    g.remove_edges_from([(a, b) for a, b, d in g.edges(data=True) if d["cost"] >= _cost(0.999999) - 1e-9])
    if n > target.num_qubits:
        raise QssmError(f"circuit needs {n} qubits but the target has {target.num_qubits}; enable cutting")
    if n == 1:
        return [min(g.nodes, key=lambda q: g.nodes[q]["cost"])]
    h = interaction_graph(circuits)
    subsets = connected_subsets(g, n)
    if subsets is None:
        subsets = grown_subsets(g, n)
    if not subsets:
        raise QssmError(f"no connected set of {n} working qubits on this target; use [backend] layout = \"default\"")
    ranked = sorted(subsets, key=lambda s: subset_cost(g, s))[: max(4 * candidates, 24)]
    mapped = sorted(best_mapping(g, h, s) for s in ranked)[:candidates]
    scored, seen = [], set()

    def score(model_cost: float, perm: list[int]) -> None:
        if tuple(perm) not in seen:
            seen.add(tuple(perm))
            success, _ = estimated_success(target, circuits, perm, optimization_level, seed_transpiler)
            scored.append((success, -model_cost, perm))

    for model_cost, perm in mapped:
        score(model_cost, list(perm))
        # routing may have used other qubits or swaps: move the routed circuit as a whole onto the
        # cheapest place it fits (exact gate-by-gate cost), for the most two-qubit-heavy circuit

        widest = max(circuits, key=lambda c: sum(i.operation.num_qubits == 2 for i in c.data))
        isa, _ = transpile(widest, target, CompileOptions(optimization_level, seed_transpiler, tuple(perm)))
        pi = reembed(target, g, isa, final_layout(isa))
        if pi is not None:
            score(model_cost, [pi.get(p, p) for p in perm])
    scored.sort(reverse=True)
    if details is not None:
        details["candidates"] = [{"layout": p, "success_probability": s, "model_cost": -c} for s, c, p in scored]
    return scored[0][2]


def layout_report(target: Target, circuits: list[QuantumCircuit], optimization_level: int = 2,
                  seed_transpiler: int = 0) -> dict:
    """Noise-aware layout beside the default one, with the estimated success probability of each."""
    default_success, default_layout = estimated_success(target, circuits, None, optimization_level, seed_transpiler)
    details: dict = {}
    layout = noise_aware_layout(target, circuits, optimization_level=optimization_level,
                                seed_transpiler=seed_transpiler, details=details)
    success = details["candidates"][0]["success_probability"]
    return {"default_layout": default_layout, "default_success": default_success,
            "noise_aware_layout": layout, "noise_aware_success": success}


def device_layouts(rows: list[dict], targets: dict | None = None) -> list[dict]:
    """Per target of `rows`: the device coupling graph, its qubit coordinates where IBM publishes
    them, and the physical qubits the templates landed on (the report's layout plots). `targets`:
    name -> Target already at hand (the run's backend); others are looked up by name."""
    out = []
    for name in dict.fromkeys(r["target"] for r in rows):
        target = (targets or {}).get(name) or device_target(name)
        if target is None:
            continue
        edges = sorted({tuple(sorted(e)) for e in target.build_coupling_map().get_edges()})
        used = sorted({q for r in rows if r["target"] == name for q in (r.get("layout") or [])})
        out.append({"target": name, "num_qubits": target.num_qubits, "edges": [list(e) for e in edges], "used": used,
                    "coordinates": device_coordinates(name)})
    return out
