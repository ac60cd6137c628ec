"""compile: transpile once per template and target, bind many; observables follow the layout;
one-line errors for too-wide templates and too many shots (the preflight); transpilation metrics."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector

from qssm.backends.base import Backend, Capabilities
from qssm.errors import QssmError
from qssm.pipeline.compile import CompileCache, CompileOptions, _columns, compile_batch
from qssm.pipeline.metrics import circuit_metrics
from qssm.types import CircuitBatch, Template

OBS = ("IIIZ", "IIZI", "IZII", "ZIII", "XXII", "IYZI")


@lru_cache(maxsize=None)
def fake(name: str):
    import qiskit_ibm_runtime.fake_provider as fp

    return getattr(fp, name)()


class TargetBackend(Backend):
    """A backend stub: a fake device's target, limits and calibration; runs nothing."""

    def __init__(self, device: str | None, max_shots: int | None = 100_000, calibration: str = "cal-1"):
        super().__init__()
        self.name = device or "logical"
        self.target = fake(device).target if device else None
        self.max_shots = max_shots
        self.calibration = calibration

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_shots=self.max_shots, max_qubits=None if self.target is None else self.target.num_qubits)


def ring_template(n: int = 4, layers: int = 2, name: str = "ring", obs: tuple[str, ...] | None = None) -> Template:
    """Input RX per qubit, then RY + a CZ ring with a shifting offset per layer (as the models)."""
    x = ParameterVector("x", n)
    qc = QuantumCircuit(n, name=name)
    for q in range(n):
        qc.rx(x[q], q)
    for layer in range(layers):
        for q in range(n):
            qc.ry(0.3 * q + 0.7 * layer + 0.1, q)
        pairs = {frozenset((q, (q + 1 + layer % (n - 1)) % n)) for q in range(n)}
        for a, b in sorted(tuple(sorted(p)) for p in pairs):
            qc.cz(a, b)
    obs = obs or tuple("I" * (n - 1 - q) + "Z" + "I" * q for q in range(n))
    return Template(name, qc, obs, f"{name}-{n}-{layers}-{','.join(obs)}")


def exact_values(t: Template, rows: np.ndarray) -> np.ndarray:
    return np.array([[Statevector(t.circuit.assign_parameters(r)).expectation_value(SparsePauliOp(o)).real
                      for o in t.observables] for r in rows])


def batch(t: Template, rows: np.ndarray, shots: int | None = 100) -> CircuitBatch:
    return CircuitBatch((t.circuit,), rows, tuple(SparsePauliOp(o) for o in t.observables), shots,
                        meta={"template": t.name}, template=t, inverse=np.arange(len(rows)))


ROWS = np.random.default_rng(0).uniform(-3, 3, (5, 4))


def test_transpile_once_bind_many():
    t, backend, cache = ring_template(obs=OBS), TargetBackend("FakeFez"), CompileCache()
    rng = np.random.default_rng(1)
    keys = set()
    for i in range(12):
        rows = rng.uniform(-3, 3, (1 + i, 4))
        cb = compile_batch(batch(t, rows, shots=100 + i % 3), backend, CompileOptions(), cache)
        keys.add(cb.key)
        assert cb.parameters.shape == (1 + i, 4) and len(cb.observables) == len(OBS)
        assert all(o.num_qubits == backend.target.num_qubits for o in cb.observables)
    assert cache.transpile_calls == 1 and len(keys) == 12
    # same inputs -> same key (a fresh cache transpiles again, deterministically); any change -> new key
    a = compile_batch(batch(t, ROWS), backend, CompileOptions(), CompileCache())
    assert a.key == compile_batch(batch(t, ROWS), backend, CompileOptions(), cache).key
    assert a.key != compile_batch(batch(t, ROWS, shots=101), backend, CompileOptions(), cache).key
    assert a.meta["template"] == "ring" and len(a.meta["layout"]) == 4 and "depth" in a.meta["metrics"]
    # a new calibration, options or template is a new transpile
    compile_batch(batch(t, ROWS), TargetBackend("FakeFez", calibration="cal-2"), CompileOptions(), cache)
    compile_batch(batch(t, ROWS), backend, CompileOptions(optimization_level=1), cache)
    compile_batch(batch(ring_template(layers=3, obs=OBS), ROWS), backend, CompileOptions(), cache)
    assert cache.transpile_calls == 4


KEY_SCRIPT = """
import numpy as np, sys
sys.path.insert(0, {tests!r})
from test_compile import ring_template, batch, TargetBackend, ROWS, OBS
from qssm.pipeline.compile import CompileCache, CompileOptions, compile_batch
b = batch(ring_template(obs=OBS), ROWS)
print(compile_batch(b, TargetBackend("FakeFez"), CompileOptions(), CompileCache()).key)
"""


def test_key_is_stable_across_processes():
    """The job store finds finished batches by key after a restart: no random UUIDs in it."""
    import os

    b = batch(ring_template(obs=OBS), ROWS)
    here = compile_batch(b, TargetBackend("FakeFez"), CompileOptions(), CompileCache())
    code = KEY_SCRIPT.format(tests=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == here.key


@pytest.mark.parametrize("device", ["FakeFez", "FakeSherbrooke"])
def test_observables_follow_the_layout(device):
    """Ideal Aer on the ISA circuit with layout-mapped observables == Statevector on the logical one."""
    from qiskit_aer.primitives import EstimatorV2

    t = ring_template(obs=OBS)
    cb = compile_batch(batch(t, ROWS), TargetBackend(device), CompileOptions(), CompileCache())
    assert cb.meta["metrics"]["swaps"] > 0  # a K4 interaction graph needs routing on heavy-hex
    evs = EstimatorV2().run([(cb.circuit, [list(cb.observables)], cb.rows()[:, None, :])]).result()[0].data.evs
    np.testing.assert_allclose(evs, exact_values(t, ROWS), atol=1e-9)


def test_initial_layout_is_respected():
    target = TargetBackend("FakeFez").target
    a, b = next(iter(target.build_coupling_map().get_edges()))
    c = next(q for q in target.build_coupling_map().neighbors(b) if q != a)
    x = ParameterVector("x", 3)
    qc = QuantumCircuit(3)
    for q in range(3):
        qc.rx(x[q], q)
    qc.cz(0, 1)
    qc.cz(1, 2)
    t = Template("line", qc, ("IIZ", "ZZI"), "line")
    cb = compile_batch(batch(t, ROWS[:, :3]), TargetBackend("FakeFez"), CompileOptions(initial_layout=[a, b, c]),
                       CompileCache())
    assert cb.meta["layout"] == [a, b, c] and cb.meta["metrics"]["swaps"] == 0
    assert cb.observables[0] == SparsePauliOp.from_sparse_list([("Z", [a], 1)], target.num_qubits)
    with pytest.raises(QssmError, match="initial_layout"):
        compile_batch(batch(t, ROWS[:, :3]), TargetBackend("FakeFez"), CompileOptions(initial_layout=[a, b]),
                      CompileCache())


def test_logical_backend_runs_the_template_as_is():
    t, cache = ring_template(obs=OBS), CompileCache()
    cb = compile_batch(batch(t, ROWS, None), TargetBackend(None), CompileOptions(), cache)
    assert cache.transpile_calls == 0 and cb.circuit is t.circuit and cb.key
    assert [o.paulis.to_labels()[0] for o in cb.observables] == list(OBS)


def test_too_wide_names_the_fix():
    t = ring_template(n=6, name="memory.k1")
    with pytest.raises(QssmError) as e:
        compile_batch(batch(t, np.zeros((1, 6))), TargetBackend("FakeManilaV2"), CompileOptions(), CompileCache())
    msg = str(e.value)
    assert "memory.k1 needs 6 qubits" in msg and "has 5" in msg and 'cutting = "auto"' in msg


def test_too_many_shots_names_the_limit():
    from qssm.app.validate import validate
    from qssm.jobs.spec import BackendSpec, JobSpec

    spec = JobSpec("", backend=BackendSpec(name="FakeFez", shots=5000))
    with pytest.raises(QssmError, match="limit of 1000 shots"):
        validate(spec, TargetBackend("FakeFez", max_shots=1000))
    validate(spec, TargetBackend("FakeFez", max_shots=5000))


def test_parameter_columns():
    t = ring_template()
    assert _columns(t.circuit, t.circuit.copy(), t.name) is None
    dropped = t.circuit.assign_parameters({t.circuit.parameters[0]: 0.5})
    with pytest.raises(QssmError, match="changed its inputs"):
        _columns(t.circuit, dropped, t.name)


def test_multi_circuit_batches_bind_their_own_columns():
    """A batch of several circuits (cut subexperiments) binds each circuit's own row columns, on
    the target as on the logical backend."""
    x = ParameterVector("x", 4)
    halves = []
    for a, b in ((0, 1), (2, 3)):
        qc = QuantumCircuit(2, 2)
        qc.rx(x[a], 0)
        qc.ry(x[b], 1)
        qc.cz(0, 1)
        qc.measure([0, 1], [0, 1])
        halves.append(qc)
    b = CircuitBatch(tuple(halves), ROWS, shots=100, columns=(np.array([0, 1]), np.array([2, 3])))
    for backend in (TargetBackend("FakeFez"), TargetBackend(None)):
        cb = compile_batch(b, backend, CompileOptions(), CompileCache())
        for i, c in enumerate(cb.circuits):
            names = [p.name for p in c.parameters]
            assert cb.rows(i).shape == (len(ROWS), 2)
            np.testing.assert_array_equal(cb.rows(i), ROWS[:, [int(n[2]) for n in names]])
        assert cb.sampled and cb.key


def test_metrics_sanity():
    backend, cache = TargetBackend("FakeFez"), CompileCache()
    prev = None
    for layers in (1, 3, 6):
        t = ring_template(layers=layers, name=f"r{layers}")
        m = cache.get(t, backend, CompileOptions()).metrics
        assert 0 < m["success_probability"] <= 1 and m["duration_us"] > 0 and m["two_qubit"] >= 2 * layers
        assert m["extra_two_qubit"] == m["two_qubit"] - sum(1 for i in t.circuit.data if i.operation.name == "cz")
        if prev is not None:
            assert m["success_probability"] < prev["success_probability"]
            assert m["depth"] > prev["depth"] and m["duration_us"] > prev["duration_us"]
        prev = m
    # product of (1 - error) by hand for a tiny ISA circuit: one sx and the readout of qubit 0
    target = backend.target
    qc = QuantumCircuit(target.num_qubits)
    qc.sx(0)
    m = circuit_metrics(qc, target, measured=[0])
    expect = (1 - target["sx"][(0,)].error) * (1 - target["measure"][(0,)].error)
    assert m["success_probability"] == pytest.approx(expect, rel=1e-12)
    assert m["duration_us"] == pytest.approx((target["sx"][(0,)].duration + target["measure"][(0,)].duration) * 1e6)


# ---- qssm compile shows what the run runs (one code path: pipeline/compile_report.py) -------------

HAYSTACK_CKPT = "checkpoints/qmamba-haystack.safetensors"


def _spec(checkpoint_path, name, layout="default", **sections):
    from qssm.jobs.spec import parse_spec

    raw = {"model": {"checkpoint": checkpoint_path}, "data": {"n": 2},
           "backend": {"name": name, "shots": 100, "layout": layout}, **sections}
    return parse_spec(raw, "test")


def test_compile_shows_the_runs_noise_aware_qubits():
    """layout = "noise_aware": compile's qubits and P(success) per template are the run's."""
    from qssm.app.compile_report import target_report
    from qssm.app.inference import run_inference
    from qssm.models import checkpoint

    spec = _spec(HAYSTACK_CKPT, "dm:fake_fez", layout="noise_aware")
    model, _ = checkpoint.load(spec.checkpoint)
    rep = target_report(spec, model, "dm:fake_fez", cuts=False)
    ran = run_inference(spec, progress=False)
    assert rep["layout_choice"]["used"] == ran["layout_choice"]["used"] == "noise_aware"
    shown = {r["template"]: (r["layout"], r["success_probability"]) for r in rep["rows"]}
    run = {r["template"]: (r["layout"], r["success_probability"]) for r in ran["compiled"]}
    assert shown == run and len(shown) == 8
    default = target_report(_spec(HAYSTACK_CKPT, "dm:fake_fez"), model, "dm:fake_fez", cuts=False)
    assert {tuple(sorted(r["layout"])) for r in default["rows"]} != {tuple(sorted(v[0])) for v in shown.values()}
    assert all(r["cut_decision"].startswith("not cut: overhead") for r in default["rows"])  # the decision, stated


@pytest.mark.parametrize("split,expected", [
    ({}, {"memory.k1", "memory.k8"}),
    ({"segment": 4, "prep": "shallow", "prep_layers": 2, "tomography": "fit"}, {"memory.k1", "memory.k4", "memory.k1.hea2"}),
    ({"obp_steps": 2}, {"memory.k1", "memory.k6"}),
])
def test_compile_shows_the_templates_the_split_produces(split, expected):
    """QLAM: the templates the spec's segment / prep / obp_steps make, as the run plans them (not
    always memory.k1 and the Moettoenen memory.k2.prep)."""
    from qssm.app.compile_report import target_report
    from qssm.app.inference import run_inference
    from qssm.models import checkpoint

    spec = _spec("checkpoints/qlam-digits-chain.safetensors", "exact", split=split)
    model, _ = checkpoint.load(spec.checkpoint)
    shown = {r["template"] for r in target_report(spec, model, "exact")["rows"]}
    ran = {r["template"] for r in run_inference(spec, progress=False)["compiled"]}
    assert shown == ran
    assert expected <= shown and "memory.k2.prep" not in shown
