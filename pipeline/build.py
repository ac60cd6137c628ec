"""A job spec -> its pipeline: the stages the spec asks for, on one backend, with one tracker."""

from __future__ import annotations

from qssm.circuits.templates import model_templates
from qssm.errors import QssmError
from qssm.pipeline.compile import Compile, CompileCache, CompileOptions
from qssm.pipeline.cutting import CutSplit
from qssm.pipeline.handoff import Handoff
from qssm.pipeline.layout import layout_report
from qssm.pipeline.measure import Measure
from qssm.pipeline.mitigation import ZNE, Readout
from qssm.pipeline.mthree_readout import MthreeReadout
from qssm.pipeline.obp import OBP
from qssm.pipeline.stages import Dispatch, Pipeline, StageContext
from qssm.pipeline.tracker import Tracker


def noise_aware_layout(spec, backend, model) -> tuple[tuple[int, ...] | None, dict | None]:
    """One layout for all templates (QMamba's and QLAM's templates share one width per model),
    kept only if its estimated success beats the default layout's."""
    circuits = [t.circuit for t in model_templates(model)]
    widths = {c.num_qubits for c in circuits}
    if len(widths) != 1:
        raise QssmError(f"noise_aware layout needs templates of one width, got {sorted(widths)}; "
                        'set [backend] layout = "default"')
    if backend.target is None or circuits[0].num_qubits > backend.target.num_qubits:
        return None, None
    info = layout_report(backend.target, circuits, spec.backend.optimization_level, spec.backend.seed_transpiler)
    better = info["noise_aware_success"] >= info["default_success"]
    info["used"] = "noise_aware" if better else "default"
    return (tuple(info["noise_aware_layout"]) if better else None), info


def split_levers(split):
    """[split] -> the QLAM hand-off (pipeline/handoff.py) and back-propagation (pipeline/obp.py) settings."""
    handoff = Handoff(split.tomography, split.prep, split.prep_layers, split.shadow_bases, split.shadow_groups,
                      split.purify, split.mixture, purify_readout=split.purify_readout)
    obp = OBP(split.obp_steps, split.obp_max_weight, split.obp_tol) if split.obp_steps else None
    return handoff, obp


def runtime_options(spec) -> dict:
    """The spec's runtime pass-throughs that are set ([mitigation] resilience_level, twirling, ...)."""
    m = spec.mitigation
    out = {}
    if m.resilience_level >= 0:
        out["resilience_level"] = m.resilience_level
    if m.twirling:
        out["twirling"] = True
    if m.dynamical_decoupling:
        out["dynamical_decoupling"] = True
    return out


# The pipeline's shape: its stages in order. Each class reads its own spec keys (`from_spec`), checks
# them (`validate`) and reports itself, so a new stage is a new module and one entry here (or a
# `register_stage` call): building, validation, pricing and the report all read this list.
STAGES: list[type] = [CutSplit, Compile, ZNE, Measure, Readout, MthreeReadout]  # one readout: the spec's method


def register_stage(cls: type, after: str) -> None:
    """Insert a stage class after the stage named `after` (e.g. a new mitigation after "zne")."""
    names = [s.name for s in STAGES]
    if after not in names:
        raise ValueError(f"no stage {after!r}; stages: {names}")
    STAGES.insert(names.index(after) + 1, cls)


def build_pipeline(spec, backend, dispatch: Dispatch | None = None, *, model=None, tracker: Tracker | None = None,
                   initial_layout=None, stages: list[type] | None = None) -> Pipeline:
    tracker = tracker or Tracker()
    layout_info = None
    if initial_layout is None and spec.backend.layout == "noise_aware" and model is not None:
        initial_layout, layout_info = noise_aware_layout(spec, backend, model)
    backend.configure(**runtime_options(spec))
    ctx = StageContext(backend, CompileOptions(spec.backend.optimization_level, spec.backend.seed_transpiler,
                                               initial_layout), CompileCache(tracker), tracker, model)
    built = [stage for cls in (STAGES if stages is None else stages) if (stage := cls.from_spec(spec, ctx)) is not None]
    pipeline = Pipeline(built, dispatch or backend.run, tracker, backend)
    pipeline.layout_report = layout_info  # default vs noise-aware estimated success, or None
    return pipeline
