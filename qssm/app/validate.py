"""The checks a spec must pass against its backend and model before any work: one-line errors
(shots, widths, options, credentials), the stages' own checks included."""

from __future__ import annotations

from qssm.circuits.templates import model_templates
from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec, check_spec_against_model
from qssm.pipeline.build import runtime_options
from qssm.pipeline.compile import check_width
from qssm.pipeline.mitigation import EXTRAPOLATIONS, parse_scales


def validate(spec: JobSpec, backend, model=None) -> None:
    """Everything about a spec that the backend can refuse, as one-line errors, before any work."""
    caps = backend.capabilities
    shots = spec.backend.shots
    if shots == 0 and not caps.exact:
        raise QssmError(f"backend {backend.name} samples: set [backend] shots > 0 (e.g. shots = 4000)")
    if shots and caps.max_shots and shots > caps.max_shots:
        raise QssmError(f"{shots} shots exceed backend {backend.name}'s limit of {caps.max_shots} shots per circuit; "
                        f"set [backend] shots to at most {caps.max_shots}")
    m = spec.mitigation
    if m.extrapolation not in EXTRAPOLATIONS:
        raise QssmError(f"[mitigation] extrapolation must be one of {', '.join(EXTRAPOLATIONS)}, got {m.extrapolation!r}")
    scales = parse_scales(m.zne_scales)
    if m.readout and not shots:
        raise QssmError("[mitigation] readout needs sampled results: set [backend] shots > 0")
    if m.zne and shots and shots < len(scales):
        raise QssmError(f"ZNE splits {shots} shots over {len(scales)} scales; raise [backend] shots")
    if m.zne and spec.split.cutting == "force":
        raise QssmError('ZNE extrapolates expectation values and cut circuits return raw samples: disable '
                        '[mitigation] zne or set [split] cutting = "auto"')

    unknown = set(runtime_options(spec)) - caps.runtime_options
    if unknown:
        raise QssmError(f"[mitigation] {', '.join(sorted(unknown))}: IBM runtime options that {backend.name} does not "
                        "take; remove them or use an ibm: backend")
    if model is not None:
        check_spec_against_model(spec, model.cfg)
        _check_widths(spec, backend, model)
    backend.check_credentials()


def _check_widths(spec: JobSpec, backend, model) -> None:
    if spec.split.cutting == "off":
        widest = max(model_templates(model), key=lambda t: t.circuit.num_qubits)
        check_width(widest.name, widest.circuit, backend)
    caps = backend.capabilities
    if spec.split.cutting == "force" and not caps.mid_circuit_measurement:
        raise QssmError(f"cut circuits measure mid-circuit and {backend.name} does not run them; "
                        'set [split] cutting = "off" or use an aer or ibm backend')
