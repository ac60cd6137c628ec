"""The transpilation report: what a job will run on each target, before any QPU time is spent.

It shares the run's code path so that the two cannot disagree: the run's pipeline
(`build_pipeline`: the layout, noise-aware or not, and the compile options), the run's plan (the
templates the evaluator asks for under the spec's [split]: QLAM segments, preparation, shadows,
back-propagation), and the run's compile cache. Per template: depth, two-qubit gates, routing
swaps, duration, estimated success probability, the physical qubits, and the cutting decision with
its reason; optionally the same with the template cut in two (cuts, sampling overhead).
"""

from __future__ import annotations

import dataclasses

from qssm.app.auto import resolve_split
from qssm.app.inference import run
from qssm.app.job import Job
from qssm.app.preflight import exact_plan_spec
from qssm.backends.exact import ExactBackend
from qssm.backends.registry import pricing_backend
from qssm.models.tasks import first_test_examples
from qssm.pipeline.build import build_pipeline
from qssm.pipeline.cutting import cut_decision, cut_report
from qssm.pipeline.metrics import two_qubit_count


def planned_templates(spec, model) -> list:
    """The templates the job's evaluator plans, from the exact plan of its first example (the
    templates depend on the sequence length and [split], not on the number of examples)."""
    one = exact_plan_spec(dataclasses.replace(spec, data=dataclasses.replace(spec.data, n=1)))
    exact = ExactBackend(seed=spec.backend.seed_simulator)
    recorder = build_pipeline(one, exact)
    seen: dict[str, object] = {}

    def keep(event):
        if event.stage == "plan":
            for b in event.batches:
                if b.template is not None:
                    seen.setdefault(b.template.hash, b.template)

    recorder.observe(keep)
    data = first_test_examples(model.cfg.task, 1, one.data.seed, one.data.T or None, one.data.path or None)
    run(Job(one, model.double(), data, exact), pipeline=recorder, progress=False)
    return list(seen.values())


def _no_dispatch(batches):
    raise AssertionError("the compile report transpiles; it never dispatches")


def target_report(spec, model, name: str, cuts: bool = True) -> dict:
    """One target: {"target", "layout_choice", "split_choice", "rows"} as the job would run there."""
    backend = pricing_backend(name, seed=spec.backend.seed_simulator)  # a real IBM device: its snapshot, no credentials
    spec = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name=name, cluster=""))
    choice = None
    if model.splits and spec.split.auto:  # the same choice the run makes (qssm/app/auto.py)
        spec, choice = resolve_split(spec, model, backend)
    pipeline = build_pipeline(spec, backend, _no_dispatch, model=model)
    stage = pipeline["compile"]
    rows = []
    for t in planned_templates(spec, model):
        c = stage.cache.get(t, backend, stage.options)
        cut, why = cut_decision(t, backend, spec.split.cutting, spec.split.max_overhead, options=stage.options,
                                cache=stage.cache)
        row = {"target": name, "template": t.name, "logical_qubits": t.circuit.num_qubits,
               "logical_depth": t.circuit.depth(), "inputs": t.n_inputs, "layout": list(c.layout),
               **{k: v for k, v in c.metrics.items() if k != "transpile_seconds"}, "cut": cut, "cut_decision": why}
        if backend.target is None:  # as CompileCache.rows records the run's
            row.update(depth=t.circuit.depth(), two_qubit=two_qubit_count(t.circuit), swaps=0, success_probability=1.0)
        elif cuts and t.circuit.num_qubits > 1:
            rep = cut_report(t, backend, stage.options, spec.split.max_overhead, cache=stage.cache)
            row.update({k: rep[k] for k in ("cuts", "sampling_overhead", "swaps_cut", "depth_cut", "within_budget",
                                            "success_probability_cut") if k in rep})
        rows.append(row)
    backend.close()
    return {"target": name, "layout_choice": pipeline.layout_report, "split_choice": choice, "rows": rows}


def compile_report(spec, model, targets: list[str], cuts: bool = True) -> list[dict]:
    """Every target's rows, one list (the report's transpilation table)."""
    return [row for name in targets for row in target_report(spec, model, name, cuts)["rows"]]
