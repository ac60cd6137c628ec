"""One prepared job (docs/architecture.md, "Layers"): a spec whose checkpoint is loaded once, whose
checks have passed and whose open choices are resolved, on the backend it runs on.

Every entry point takes a `Job`: the dry run (`qssm run`), the price (`qssm estimate`, the
preflight of `qssm submit`), the durable run and the report. So the checkpoint is read once per
process, `segment = "auto"` is resolved once, and the store records the spec as it was resolved:
a resume after a transpiler or frontier change runs the split that was priced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from qssm.app.auto import resolve_split
from qssm.app.validate import validate
from qssm.backends.base import Backend
from qssm.backends.cluster import ClusterBackend
from qssm.backends.registry import get_backend
from qssm.errors import QssmError
from qssm.jobs.spec import JobSpec
from qssm.models import checkpoint
from qssm.models.tasks import Batch, first_test_examples


@dataclass
class Job:
    spec: JobSpec  # resolved: no "auto" left in [split]
    model: nn.Module  # float64, eval mode
    data: Batch | None  # the first [data] n test examples (None: a job that runs no test set, `qssm eval`)
    backend: Backend
    split_choice: dict | None = None  # what "auto" weighed and chose (for reports)
    checkpoint_hash: str = ""  # sha256 of the checkpoint file as it was read

    @property
    def round_trips(self) -> int:
        return self.model.round_trips(int(self.data.inputs.shape[1]), self.spec.split.segment or 0)

    def close(self) -> None:
        """Close the backend (an IBM Session, a cluster client); the job's data stays usable."""
        self.backend.close()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def on(self, backend: Backend, spec: JobSpec | None = None) -> Job:
        """The same job (model and data as loaded) on another backend, e.g. the exact one that
        plans the preflight's price."""
        return dataclasses.replace(self, backend=backend, spec=spec or self.spec)


def backend_for(spec: JobSpec) -> Backend:
    backend = get_backend(spec.backend.name, seed=spec.backend.seed_simulator)
    if spec.backend.cluster:
        backend = ClusterBackend(backend, spec.backend.cluster)
    return backend


def load_quantum_model(path: str) -> tuple[nn.Module, str]:
    """A quantum checkpoint, float64 for inference, and its content hash; classical baselines are refused."""
    ckpt = checkpoint.read(path)
    if not getattr(ckpt.model.cfg, "quantum", False):
        raise QssmError(f"{path} is a classical baseline; run a quantum checkpoint on a backend")
    return ckpt.model.double().eval(), ckpt.sha256


def prepare(spec: JobSpec, backend: Backend | None = None, *, model: nn.Module | None = None,
            credentials: bool = True) -> Job:
    """Load, check and resolve a spec once (module docstring). The backend is created here unless
    given; the caller closes it (`Job.backend.close()`, sessions and cluster clients included)."""
    digest = ""
    if model is None:
        model, digest = load_quantum_model(spec.checkpoint)
    model = model.double().eval()
    backend = backend or backend_for(spec)
    try:
        validate(spec, backend, model, credentials=credentials)
        choice = None
        if spec.split.auto and model.splits:  # segment / obp_steps = "auto": chosen for this target
            spec, choice = resolve_split(spec, model, backend, sha256=digest or None)
        data = first_test_examples(model.cfg.task, spec.data.n, spec.data.seed, spec.data.T or None,
                                   spec.data.path or None)
    except BaseException:
        backend.close()
        raise
    return Job(spec, model, data, backend, choice, digest)
