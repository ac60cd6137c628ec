"""One tracker for a run, in the spirit of PennyLane's and Braket's `Tracker`: every stage, the
evaluator and the dispatcher add to it; the CLI, the report and the job store read `summary()`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# summary keys in the order a person reads them, with their labels (the CLI and report use these)
LABELS = {
    "round_trips": "round trips",
    "table_round_trips": "token-table round trips",
    "batches": "circuit batches planned",
    "requested_rows": "bindings requested",
    "bindings": "distinct bindings",
    "table_hits": "token-table hits",
    "cut_batches": "batches cut",
    "cut_subexperiments": "cut subexperiments",
    "zne_circuits": "ZNE folded circuits",
    "calibration_circuits": "readout calibration circuits",
    "obp_terms": "back-propagated Pauli terms measured",
    "dispatched_batches": "batches dispatched",
    "executions": "circuit executions",
    "total_shots": "total shots",
    "transpile_calls": "transpile calls",
    "submitted_batches": "batches submitted",
    "reused_batches": "batches reused from the store",
    "provider_submissions": "provider submissions",
    "resubmitted_batches": "in-flight batches resubmitted (their jobs died with a killed process)",
    "retries": "transient faults retried",
    "cost_usd": "cost (USD)",
}


@dataclass
class Tracker:
    totals: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)  # wall seconds per stage (and "dispatch", "model")
    job_ids: list[str] = field(default_factory=list)
    segment_purity: list[float] = field(default_factory=list)  # kept eigenvalue per QLAM hand-off
    prep_fidelity: list[float] = field(default_factory=list)  # fidelity of each re-preparation to its target
    obp_truncation: list[float] = field(default_factory=list)  # largest dropped |coefficient| sum per OBP plan

    def add(self, **counts: float) -> None:
        for k, v in counts.items():
            self.totals[k] += v

    def time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def dispatched(self, batches, results) -> None:
        """What reached the backend: batches, executions, shots, cost and provider job ids."""
        self.add(dispatched_batches=len(batches), executions=sum(b.executions for b in batches),
                 total_shots=sum(b.executions * (b.shots or 0) for b in batches))
        cal = [b for b in batches if b.calibration is not None]
        self.add(calibration_executions=sum(b.executions for b in cal),
                 calibration_shots=sum(b.executions * (b.shots or 0) for b in cal))
        for r in results:
            self.add(cost_usd=float(r.cost_usd))
            self.job_ids += [j for j in r.job_ids if j not in self.job_ids]

    def summary(self) -> dict:
        out = {k: (float(self.totals[k]) if k == "cost_usd" else int(self.totals[k])) for k in LABELS}
        out["job_ids"] = list(self.job_ids)
        out["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        if self.segment_purity:
            out["mean_segment_purity"] = float(np.mean(self.segment_purity))
        if self.prep_fidelity:
            out["mean_prep_fidelity"] = float(np.mean(self.prep_fidelity))
            out["min_prep_fidelity"] = float(np.min(self.prep_fidelity))
        if self.obp_truncation:
            out["obp_truncation_bound"] = float(np.max(self.obp_truncation))
        return out
