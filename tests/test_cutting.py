"""split: partitions from the interaction graph, cut plans within the overhead budget, cut
reconstruction that converges to the uncut values, the cut decision and report."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from test_compile import TargetBackend, exact_values, ring_template

from qssm.backends.aer import AerBackend
from qssm.errors import QssmError
from qssm.pipeline.compile import Compile, CompileCache, CompileOptions, circuit_digest
from qssm.pipeline.cutting import (
    CutSplit,
    choose_partition,
    cut_experiments,
    cut_report,
    interaction_graph,
    plan_cut,
    should_cut,
)
from qssm.pipeline.measure import Measure
from qssm.pipeline.plan import make_batch
from qssm.pipeline.stages import Pipeline
from qssm.types import Template

OBS = ("IIIZ", "IIZI", "IZII", "ZIII", "ZZII", "IIXX", "XIIZ")


def two_clusters(bridges: int = 1) -> Template:
    """Qubits {0,1} and {2,3} entangled inside, `bridges` CZs between 1 and 2, inputs on RX."""
    x = ParameterVector("x", 4)
    qc = QuantumCircuit(4, name="clusters")
    for q in range(4):
        qc.rx(x[q], q)
        qc.ry(0.3 + 0.2 * q, q)
    qc.cz(0, 1)
    qc.cz(2, 3)
    for b in range(bridges):
        qc.cz(1, 2)
        for q in range(4):
            qc.rz(0.5 - 0.1 * q + b, q)
            qc.ry(0.7 + 0.1 * b, q)
    qc.cz(0, 1)
    qc.cz(2, 3)
    return Template("clusters", qc, OBS, f"clusters-{bridges}")


def square() -> Template:
    """A 4-cycle of CZs: heavy-hex has no 4-cycles, so routing needs swaps; cut in halves it
    needs none (2 cuts, overhead 81)."""
    x = ParameterVector("x", 4)
    qc = QuantumCircuit(4, name="square")
    for q in range(4):
        qc.rx(x[q], q)
    for a, b in ((0, 1), (2, 3), (1, 2), (3, 0)):
        qc.cz(a, b)
    return Template("square", qc, ("IIIZ", "ZIII"), "square")


def test_partition_cuts_the_fewest_gates():
    t = two_clusters(bridges=1)
    g = interaction_graph(t.circuit)
    assert g[0][1]["weight"] == 2 and g[1][2]["weight"] == 1
    assert choose_partition(t.circuit, 2) == "AABB"
    assert choose_partition(t.circuit, 4) == "AAAA"
    six = ring_template(n=6, layers=1).circuit
    labels = choose_partition(six, 4)
    assert max(labels.count(c) for c in set(labels)) <= 4 and len(set(labels)) == 2
    with pytest.raises(QssmError):
        choose_partition(six, 0)


def test_plan_overhead_and_budget():
    plan = plan_cut(two_clusters(1).circuit, OBS, 2, 100)
    assert plan.n_cuts == 1 and plan.overhead == pytest.approx(9.0) and plan.widths == {"A": 2, "B": 2}
    assert plan_cut(two_clusters(2).circuit, OBS, 2, 100).overhead == pytest.approx(81.0)  # 9 per CZ cut
    assert plan_cut(two_clusters(2).circuit, OBS, 2, 50) is None
    with pytest.raises(QssmError, match="max_overhead"):
        plan_cut(two_clusters(3).circuit, OBS, 2, 100, strict=True)


ROWS = np.random.default_rng(3).uniform(-3, 3, (2, 4))


def cut_pipeline(backend, mode: str = "force", max_overhead: float = 100) -> Pipeline:
    cache = CompileCache()
    return Pipeline([CutSplit(backend, mode=mode, max_overhead=max_overhead, cache=cache),
                     Compile(backend, cache=cache), Measure(backend)], backend.run, backend=backend)


def test_cut_reconstruction_converges_to_uncut_values():
    """Within 3 standard errors at two shot counts; the error bar shrinks like 1/sqrt(shots); the
    subexperiments are one sampled batch that went through dispatch."""
    t = two_clusters(1)
    exact = exact_values(t, ROWS)
    errs = {}
    for shots, seed in ((500, 11), (4000, 20011)):
        pipe = cut_pipeline(AerBackend(None, seed=seed))
        sent = []
        pipe.observe(lambda e: sent.extend(e.batches) if e.stage == "dispatch" else None)
        [res] = pipe([make_batch(t, ROWS, shots)])
        assert len(sent) == 1 and sent[0].sampled and len(sent[0].circuits) == cut_experiments(
            t.circuit, OBS, plan_cut(t.circuit, OBS, 2, 100)).count
        assert res.values.shape == res.stderr.shape == exact.shape and (res.stderr > 0).all()
        assert (np.abs(res.values - exact) < 3 * res.stderr + 1e-9).all(), (res.values - exact) / res.stderr
        errs[shots] = res.stderr.mean()
    assert errs[500] / errs[4000] == pytest.approx(math.sqrt(8), rel=0.25)


def test_cut_subexperiments_transpiled_once_for_a_device():
    """ISA subexperiments for FakeFez (mid-circuit measurements included), transpiled once each,
    all rows bound by the backend: a second round trip transpiles nothing, same values."""
    t = two_clusters(1)
    backend = AerBackend("fake_fez", seed=7, noise=False)
    pipe = cut_pipeline(backend)
    ex = cut_experiments(t.circuit, OBS, plan_cut(t.circuit, OBS, 2, 100))
    distinct = len({circuit_digest(c) for cs in ex.subexperiments.values() for c in cs})  # some terms repeat
    first, second = make_batch(t, ROWS, 2000), make_batch(t, ROWS[::-1] + 0.5, 2000)
    [res] = pipe([first])
    cache = pipe["compile"].cache
    assert cache.transpile_calls == distinct
    [again] = pipe([second])
    assert cache.transpile_calls == distinct
    for r, b in ((res, first), (again, second)):
        assert (np.abs(r.values - exact_values(t, b.parameters)) < 4 * r.stderr + 1e-9).all()


def test_should_cut_modes():
    fez, cache = TargetBackend("FakeFez"), CompileCache()
    sq = square()
    assert not should_cut(sq, fez, "off", 1000)
    assert should_cut(sq, fez, "force", 1000)
    assert not should_cut(sq, TargetBackend(None), "auto", 1000)  # logical simulator: nothing to gain
    # routing a 4-cycle on heavy-hex needs swaps, the halves need none: cut when 81 fits the budget
    assert should_cut(sq, fez, "auto", 1000, cache=cache)
    assert not should_cut(sq, fez, "auto", 50, cache=cache)
    # a line embeds without swaps: never cut in auto mode
    x = ParameterVector("x", 4)
    line = QuantumCircuit(4)
    for q in range(4):
        line.rx(x[q], q)
    for q in range(3):
        line.cz(q, q + 1)
    assert not should_cut(Template("line", line, ("IIIZ",), "line"), fez, "auto", 1e6)
    # wider than the target: cut in auto mode, whatever the swaps
    wide = ring_template(n=6, layers=1, name="wide")
    assert should_cut(wide, TargetBackend("FakeManilaV2"), "auto", 1000)
    with pytest.raises(QssmError, match="cutting"):
        should_cut(sq, fez, "sometimes", 1000)


def test_cut_report():
    fez, cache = TargetBackend("FakeFez"), CompileCache()
    rep = cut_report(square(), fez, CompileOptions(), 1000, cache=cache)
    assert rep["cuts"] == 2 and rep["sampling_overhead"] == pytest.approx(81.0) and rep["within_budget"]
    assert rep["swaps"] > 0 and rep["swaps_cut"] == 0 and rep["depth_cut"] < rep["depth"]
    assert 0 < rep["success_probability"] < rep["success_probability_cut"] <= 1
    calls = cache.transpile_calls
    assert cut_report(square(), fez, CompileOptions(), 1000, cache=cache) == rep and cache.transpile_calls == calls
    wide = cut_report(ring_template(n=6, layers=1, name="wide"), TargetBackend("FakeManilaV2"), CompileOptions(), 1e9)
    assert wide["too_wide"] and wide["swaps"] is None and wide["cuts"] > 0
