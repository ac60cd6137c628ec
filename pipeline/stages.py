"""The staged pipeline: named, replaceable stages over one batch type (docs/architecture.md).

A stage maps batches to batches and returns a post-processing function that maps the results of
its output batches back to results of its input batches (like PennyLane's transforms). A
`Pipeline` runs its stages in order, hands the last batches to `dispatch`, then applies the
post-processing functions in reverse:

    split -> compile -> zne -> measure -> readout -> dispatch
    reconstruct <- extrapolate <- expectations <- correct counts <- results

Stages are looked up and replaced by name (`pipeline.replace("readout", MyReadout(...))`), as in
Qiskit's StagedPassManager. Observers (cost, benchmark counters, progress) subscribe with
`pipeline.observe(fn)`: every stage and the dispatch emit an `Event`; nothing is subclassed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from qssm.pipeline.tracker import Tracker
from qssm.types import BatchResult, CircuitBatch, Post

Dispatch = Callable[[list[CircuitBatch]], list[BatchResult]]
Combine = Callable[[list[BatchResult]], BatchResult]


@dataclass
class StageContext:
    """What every stage of one pipeline shares: the backend, the transpiler options and cache, the
    run's tracker, the model (for checks that read its templates)."""

    backend: object
    options: object  # pipeline.compile.CompileOptions
    cache: object  # pipeline.compile.CompileCache
    tracker: Tracker
    model: object = None


class Stage(Protocol):
    """A named, replaceable step (module docstring). A stage class owns its knowledge: the slot it
    fills (`name`), whether and how a spec configures it (`from_spec`, None when the spec leaves it
    out), the spec's errors it can name before any work (`validate`), and its report row."""

    name: str

    def __call__(self, batches: list[CircuitBatch]) -> tuple[list[CircuitBatch], Post]:
        ...


class SpecStage:
    """Defaults for the stage contract: always present, nothing to check, nothing to report."""

    name = ""

    @classmethod
    def from_spec(cls, spec, ctx: StageContext):
        return cls(ctx.backend)

    @classmethod
    def validate(cls, spec, backend, model=None) -> None:
        pass

    def report(self, totals: dict) -> dict | None:
        """A row of the report's mitigation table: what the stage added (circuits, shots) as
        multipliers over the same run without it; None when it adds nothing worth a row."""
        return None


@dataclass
class Event:
    stage: str  # "plan" (a round trip's planned batches), a stage name, or "dispatch"
    batches: list[CircuitBatch]  # the stage's output (for "dispatch": what was sent)
    results: list[BatchResult] | None = None  # "dispatch" only
    seconds: float = 0.0


def identity(results: list[BatchResult]) -> list[BatchResult]:
    return results


def first(results: list[BatchResult]) -> BatchResult:
    return results[0]


def map_batches(batches: list[CircuitBatch], one: Callable[[CircuitBatch], tuple[list[CircuitBatch], Combine]]
                ) -> tuple[list[CircuitBatch], Post]:
    """Apply `one(batch) -> (children, combine)` to every batch; the post-processing function hands
    each batch's slice of the results to its `combine`."""
    out: list[CircuitBatch] = []
    plan: list[tuple[int, Combine]] = []
    for batch in batches:
        children, combine = one(batch)
        plan.append((len(children), combine))
        out += children

    def post(results: list[BatchResult]) -> list[BatchResult]:
        merged, k = [], 0
        for n, combine in plan:
            merged.append(combine(results[k:k + n]))
            k += n
        return merged

    return out, post


class Pipeline:
    """Stages, a dispatch step, one tracker. Calling it is one round trip."""

    def __init__(self, stages: list[Stage], dispatch: Dispatch, tracker: Tracker | None = None, backend=None):
        self.stages = list(stages)
        self.dispatch = dispatch
        self.tracker = tracker or Tracker()
        self.backend = backend
        self._observers: list[Callable[[Event], None]] = []

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    # -- composition ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def replace(self, name: str, stage: Stage) -> None:
        self.stages[[s.name for s in self.stages].index(name)] = stage

    def observe(self, fn: Callable[[Event], None]) -> None:
        self._observers.append(fn)

    def _emit(self, event: Event) -> None:
        for fn in self._observers:
            fn(event)

    # -- execution --------------------------------------------------------------------------------
    def transform(self, batches: list[CircuitBatch]) -> tuple[list[CircuitBatch], list[tuple[str, Post]]]:
        """Every stage's transform, nothing dispatched: what a round trip would send (the cost
        preflight prices exactly this)."""
        posts = []
        for stage in self.stages:
            start, transpiled = time.perf_counter(), self.tracker.seconds["transpile"]
            batches, post = stage(batches)
            seconds = time.perf_counter() - start
            # transpiling is booked as "transpile" (the compile cache's), not under the stage that asked
            self.tracker.time(stage.name, max(0.0, seconds - (self.tracker.seconds["transpile"] - transpiled)))
            self._emit(Event(stage.name, batches, seconds=seconds))
            posts.append((stage.name, post))
        return batches, posts

    def __call__(self, batches: list[CircuitBatch]) -> list[BatchResult]:
        self._emit(Event("plan", batches))
        sent, posts = self.transform(batches)
        start = time.perf_counter()
        results = self.dispatch(sent) if sent else []
        seconds = time.perf_counter() - start
        self.tracker.time("dispatch", seconds)
        self.tracker.dispatched(sent, results)
        self._emit(Event("dispatch", sent, results, seconds))
        for name, post in reversed(posts):
            start = time.perf_counter()
            results = post(results)
            self.tracker.time(name, time.perf_counter() - start)
        return results
