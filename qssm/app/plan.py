"""`qssm plan`: the dry run plans the shots of a prepared job (pipeline/shotplan.py does the math)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from qssm.app.job import prepare
from qssm.app.preflight import price_spec
from qssm.backends.registry import noise_twin
from qssm.errors import QssmError
from qssm.pipeline.shotplan import NOMINAL, final_logits, oracle, plan


def plan_spec(spec, confidence: float = 0.99, max_shots: int = 100_000, at_shots=(), check_floor: bool = False) -> dict:
    """The job spec's examples on its dm: backend, exact noisy values, the plan. The curve and the
    recommendation stop at the device's shots per circuit limit (min(max_shots, the limit)): a
    recommendation the device would refuse is none."""
    nominal = dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, shots=NOMINAL))
    with prepare(nominal) as job:
        max_shots = min(max_shots, job.backend.capabilities.max_shots or max_shots)
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


def per_example_price(spec) -> dict:
    """What `qssm estimate` says one example costs (on the device whose noise a simulator runs)."""
    est = price_spec(spec, expected=False)
    c = est.get("on_device") or est
    return {"device": c.get("device") or est["backend"], "usd_per_example": c["usd_per_example"],
            "qpu_seconds_per_example": c["qpu_seconds_per_example"], "shots_per_example": c["shots_per_example"],
            "tasks_per_example": c["tasks_per_example"]}


def check_plan(spec) -> str:
    """The noise twin `qssm run --plan` plans on, or the one-line reason it cannot."""
    if spec.backend.adaptive or not spec.backend.shots:
        raise QssmError("--plan plans fixed shots per circuit; set --shots N (adaptive shots plan themselves)")
    twin = noise_twin(spec.backend.name)
    if twin == "exact":
        raise QssmError(f"--plan needs device noise and {spec.backend.name} has none; use --backend dm:<device>")
    return twin


def plan_for_run(spec) -> dict:
    """`qssm run --plan`: the plan of a fixed-shots dry run on its noise twin (the dm: engine's exact noisy
    values), with the recommendation priced beside the shots the run used."""
    twin = check_plan(spec)
    ran = spec.backend.shots
    out = plan_spec(dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, name=twin, cluster="")),
                    spec.backend.confidence, at_shots=(ran,))
    at_ran = next(c for c in out["curve"] if c["shots_per_circuit"] == ran)
    rec = out["recommended_shots_per_circuit"]
    summary = {"confidence": out["confidence"], "ran_shots_per_circuit": ran, "ran_agreement": at_ran["agreement_noisy"],
               "ran": per_example_price(spec), "shots_per_circuit": rec}
    if rec:
        summary.update(agreement=out["recommended"]["agreement_noisy"], plan=per_example_price(
            dataclasses.replace(spec, backend=dataclasses.replace(spec.backend, shots=rec))))
    out["recommendation"] = summary
    out["line"] = plan_line(summary)
    return out


def plan_line(s: dict) -> str:
    ran = (f"you ran {s['ran_shots_per_circuit']:,}: ${s['ran']['usd_per_example']:,.2f}/example on "
           f"{s['ran']['device']}, predicted agreement {s['ran_agreement']:.3f}")
    if not s["shots_per_circuit"]:
        return f"plan: no shot count reaches agreement {s['confidence']} (near-tied decisions; {ran})"
    return (f"plan: {s['shots_per_circuit']:,} shots per circuit reach agreement {s['confidence']} "
            f"({ran}; plan ${s['plan']['usd_per_example']:,.2f}/example)")
