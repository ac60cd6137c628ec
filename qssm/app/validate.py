"""The checks a spec must pass against its backend and model before any work: one-line errors
(shots, widths, options, credentials), the stages' own checks included."""

from __future__ import annotations

from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec, check_spec_against_model
from qssm.pipeline import build
from qssm.pipeline.build import runtime_options


def validate(spec: JobSpec, backend, model=None, *, credentials: bool = True) -> None:
    """Everything about a spec that the backend can refuse, as one-line errors, before any work:
    shots against the backend, each stage's own keys, the runtime options, the model, credentials
    (credentials=False: pricing needs none, `qssm estimate`)."""
    caps = backend.capabilities
    shots = spec.backend.circuit_shots
    if spec.backend.adaptive and (spec.split.segment or spec.split.obp_steps):
        raise QssmError('[backend] shots = "auto" runs whole QLAM circuits (its margins need every readout); '
                        'set [split] segment = 0 and obp_steps = 0, or fixed shots')
    if shots == 0 and not caps.exact:
        raise QssmError(f"backend {backend.name} samples: set [backend] shots > 0 (e.g. shots = 4000)")
    if shots and caps.max_shots and shots > caps.max_shots:
        raise QssmError(f"{shots} shots exceed backend {backend.name}'s limit of {caps.max_shots} shots per circuit; "
                        f"set [backend] shots to at most {caps.max_shots}")
    if model is not None:
        check_spec_against_model(spec, model)
    for stage in build.STAGES:
        stage.validate(spec, backend, model)
    unknown = set(runtime_options(spec)) - caps.runtime_options
    if unknown:
        raise QssmError(f"[mitigation] {', '.join(sorted(unknown))}: IBM runtime options that {backend.name} does not "
                        "take; remove them or use an ibm: backend")
    if credentials:
        backend.check_credentials()
