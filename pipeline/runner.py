"""The executor behind PipelineEvaluator: compile -> split -> dispatch -> reconstruct.

A Runner is called once per round trip with the planned CircuitBatches and returns one BatchResult
each. Batches whose template must be cut (too wide for the target, or cheaper to cut than to route)
go through qiskit-addon-cutting on the backend's sampler; all others are compiled (transpiled once
per template and target, bound per row) and handed to `dispatch` together, so a round trip is one
submission wave. `dispatch` defaults to `backend.run`; the job store plugs in there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


from qssm.backends.base import Backend
from qssm.pipeline.compile import CompileCache, CompileOptions, compile_batch
from qssm.pipeline.types import BatchResult, CircuitBatch, CompiledBatch

Dispatch = Callable[[list[CompiledBatch]], list[BatchResult]]


@dataclass
class RunnerStats:
    compiled_batches: int = 0
    cut_batches: int = 0
    cut_subexperiments: int = 0
    seconds_compile: float = 0.0
    seconds_dispatch: float = 0.0
    cost_usd: float = 0.0
    job_ids: list[str] = field(default_factory=list)


class Runner:
    def __init__(
        self,
        backend: Backend,
        options: CompileOptions | None = None,
        cutting: str = "off",
        max_overhead: float = 1000.0,
        dispatch: Dispatch | None = None,
        mitigation=None,
    ):
        self.backend = backend
        self.options = options or CompileOptions()
        self.cutting = cutting
        self.max_overhead = max_overhead
        self.dispatch = dispatch or backend.run
        self.mitigation = mitigation  # pipeline.mitigation settings applied around dispatch, or None
        self.cache = CompileCache()
        self._cuts: dict[tuple, tuple] = {}  # template -> (CutPlan, CutExperiments)
        self.stats = RunnerStats()

    @property
    def transpile_calls(self) -> int:
        return self.cache.transpile_calls

    def __call__(self, batches: list[CircuitBatch]) -> list[BatchResult]:
        results: list[BatchResult | None] = [None] * len(batches)
        direct: list[tuple[int, CompiledBatch]] = []
        start = time.perf_counter()
        for i, batch in enumerate(batches):
            if self.cutting != "off" and self._should_cut(batch):
                results[i] = self._cut(batch)
            else:
                direct.append((i, compile_batch(batch, self.backend, self.options, self.cache)))
        self.stats.seconds_compile += time.perf_counter() - start
        if direct:
            start = time.perf_counter()
            compiled = [c for _, c in direct]
            out = self.mitigation.run(compiled, self.dispatch) if self.mitigation else self.dispatch(compiled)
            self.stats.seconds_dispatch += time.perf_counter() - start
            self.stats.compiled_batches += len(compiled)
            for (i, _), res in zip(direct, out):
                self.stats.cost_usd += float(res.meta.get("cost_usd", 0.0))
                self.stats.job_ids += list(res.meta.get("job_ids", []))
                results[i] = res
        return results  # type: ignore[return-value]

    def _should_cut(self, batch: CircuitBatch) -> bool:
        from qssm.pipeline.cutting import should_cut

        # "off" never cuts (compile then raises the one-line "too wide" error); "auto" cuts wide
        # templates and those whose swaps a cut removes within budget (decision memoized per template)
        return should_cut(batch.template, self.backend, self.cutting, self.max_overhead, options=self.options,
                          cache=self.cache)

    def _cut(self, batch: CircuitBatch) -> BatchResult:
        from qssm.pipeline.cutting import cut_experiments, cut_width, plan_cut, run_cut

        t = batch.template
        key = (t.hash, self.backend.name, self.backend.calibration, self.options)
        if key not in self._cuts:  # plan + subexperiments transpiled once per template and target
            plan = plan_cut(t.circuit, t.observables, cut_width(t, self.backend), self.max_overhead, strict=True)
            transpile = None
            if self.backend.target is not None:
                from qiskit.transpiler import generate_preset_pass_manager

                transpile = generate_preset_pass_manager(
                    optimization_level=self.options.optimization_level, target=self.backend.target,
                    seed_transpiler=self.options.seed_transpiler).run
            self._cuts[key] = (plan, cut_experiments(t.circuit, t.observables, plan, transpile))
        plan, experiments = self._cuts[key]
        values, stderr = run_cut(t.circuit, t.observables, batch.parameters, plan, self.backend.sampler(),
                                 batch.shots or 10_000, experiments=experiments)
        self.stats.cut_batches += 1
        self.stats.cut_subexperiments += experiments.count
        return BatchResult(values, stderr, {"cut": True, "cuts": plan.n_cuts, "sampling_overhead": plan.overhead,
                                            "shots": batch.shots or 10_000, "backend": self.backend.name})
