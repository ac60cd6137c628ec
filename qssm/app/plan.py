"""`qssm plan`: the dry run plans the shots of a prepared job (pipeline/shotplan.py does the math)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from qssm.app.job import prepare
from qssm.pipeline.shotplan import NOMINAL, final_logits, oracle, plan


def plan_spec(spec, confidence: float = 0.99, max_shots: int = 100_000, at_shots=(), check_floor: bool = False) -> dict:
    """The job spec's examples on its dm: backend, exact noisy values, the plan."""
    nominal = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, shots=NOMINAL))
    with prepare(nominal) as job:
        resolved = dataclasses.replace(job.spec, backend=spec.backend)  # the job's own shots, its resolved split
        logits, ev = oracle(resolved, job.model, job.data, job.backend)
        with torch.no_grad():
            exact = job.model(job.data.inputs)
        out = plan(logits, exact, ev, confidence, max_shots, job.model, job.data.inputs, at_shots, check_floor)
        targets = np.asarray(job.data.targets)
        out.update(checkpoint=spec.checkpoint, backend=job.backend.name, model=job.model.cfg.kind,
                   noisy_accuracy_infinite=float((final_logits(logits).argmax(-1).numpy() == targets).mean()),
                   exact_accuracy=float((final_logits(exact).argmax(-1).numpy() == targets).mean()))
    return out
