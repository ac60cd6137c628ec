"""The staged pipeline itself (pipeline/stages.py) and the stage contract (pipeline/build.py STAGES):
a stage added in one place is built, validated, priced and reported everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit

from qssm.app.inference import run_inference
from qssm.app.job import prepare
from qssm.app.preflight import estimate
from qssm.cli import main
from qssm.errors import QssmError
from qssm.jobs.spec import parse_spec
from qssm.pipeline import build
from qssm.pipeline.stages import Pipeline, SpecStage, map_batches
from qssm.types import BatchResult, CircuitBatch

CKPT = "checkpoints/qmamba-haystack.safetensors"


def _batch(rows: int, tag: str) -> CircuitBatch:
    return CircuitBatch((QuantumCircuit(1),), np.zeros((rows, 0)), meta={"tag": tag})


class Shift:
    """A stage that splits every batch in two and adds `offset` to what comes back."""

    def __init__(self, name: str, offset: float, log: list):
        self.name, self.offset, self.log = name, offset, log

    def __call__(self, batches):
        self.log.append(("forward", self.name))

        def one(batch):
            def combine(results):
                self.log.append(("post", self.name))
                return BatchResult(values=np.concatenate([r.values for r in results]) + self.offset)
            half = len(batch.parameters) // 2
            return [batch.derive(parameters=batch.parameters[:half]), batch.derive(parameters=batch.parameters[half:])], combine
        return map_batches(batches, one)


def test_pipeline_runs_stages_in_order_and_posts_in_reverse():
    log, sent = [], []

    def dispatch(batches):
        sent.append([len(b.parameters) for b in batches])
        return [BatchResult(values=np.ones((len(b.parameters), 1))) for b in batches]

    pipe = Pipeline([Shift("a", 10.0, log), Shift("b", 100.0, log)], dispatch)
    events = []
    pipe.observe(lambda e: events.append(e.stage))
    [result] = pipe([_batch(8, "x")])
    assert sent == [[2, 2, 2, 2]]  # each stage split every batch in two
    assert log == [("forward", "a"), ("forward", "b")] + [("post", "b")] * 2 + [("post", "a")]
    np.testing.assert_array_equal(result.values, np.full((8, 1), 111.0))
    assert events == ["plan", "a", "b", "dispatch"]
    assert pipe.tracker.totals["executions"] == 8


def test_transform_never_dispatches_and_stages_are_replaceable():
    def dispatch(batches):
        raise AssertionError("transform must not dispatch")

    log = []
    pipe = Pipeline([Shift("a", 1.0, log), Shift("b", 2.0, log)], dispatch)
    sent, posts = pipe.transform([_batch(4, "x")])
    assert [len(b.parameters) for b in sent] == [1, 1, 1, 1] and [n for n, _ in posts] == ["a", "b"]
    pipe.replace("b", Shift("b", 5.0, log))
    assert pipe["b"].offset == 5.0
    with pytest.raises(KeyError):
        pipe["nope"]


class Tally(SpecStage):
    """A toy mitigation: counts the batches it sees, refuses 7 shots, reports one row."""

    name = "tally"
    seen = 0

    @classmethod
    def from_spec(cls, spec, ctx):
        return cls()

    def __init__(self):
        self.batches = 0

    @classmethod
    def validate(cls, spec, backend, model=None):
        if spec.backend.shots == 7:
            raise QssmError("tally: 7 shots are unlucky; pick another [backend] shots")

    def __call__(self, batches):
        self.batches += len(batches)
        Tally.seen += len(batches)
        return batches, lambda results: results

    def report(self, totals):
        return {"setting": "tally", "circuits": 0, "shots": 0, "circuit_multiplier": 1.0, "shot_multiplier": 1.0,
                "batches": self.batches}


@pytest.fixture
def tally(monkeypatch):
    monkeypatch.setattr(build, "STAGES", list(build.STAGES))
    build.register_stage(Tally, after="zne")
    Tally.seen = 0
    return Tally


def test_a_stage_registered_once_is_built_validated_priced_and_reported(tally, capsys):
    spec = parse_spec({"model": {"checkpoint": CKPT}, "data": {"n": 2}, "backend": {"name": "exact", "shots": 0}})
    report = run_inference(spec, progress=False)
    assert [r["setting"] for r in report["mitigation"]] == ["tally", "total"]
    assert report["mitigation"][0]["batches"] == report["batches"] > 0
    seen = Tally.seen
    with prepare(spec) as job:
        estimate(job)
    assert Tally.seen > seen  # the preflight prices what the stage passes on
    assert main(["run", "examples/demo.toml", "--backend", "aer", "--shots", "7"]) == 2
    assert capsys.readouterr().err.strip() == "qssm: error: tally: 7 shots are unlucky; pick another [backend] shots"
