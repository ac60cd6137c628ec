"""What a run costs per example, and what a dry run would have cost on the device it mimics."""

from __future__ import annotations

from qssm.backends.registry import pricing_backend

PER_EXAMPLE = ("usd", "qpu_seconds", "shots", "tasks", "executions")


def per_example(totals: dict, examples: int) -> dict:
    """`examples` and `<key>_per_example` for what a run costs (a report, an estimate)."""
    n = max(1, int(examples))
    return {"examples": int(examples), **{f"{k}_per_example": float(totals.get(k, 0.0)) / n for k in PER_EXAMPLE}}


class DeviceCost:
    """A pipeline observer: what the dispatched batches cost, or would cost on the paid device whose
    noise a simulator runs (`qssm run` prints it: a dry run's price on the real device)."""

    def __init__(self, device: str):
        self.device = device
        self.backend = pricing_backend(device)
        self.totals = {"usd": 0.0, "qpu_seconds": 0.0, "tasks": 0.0, "shots": 0, "executions": 0}

    def __call__(self, event) -> None:
        if event.stage == "dispatch" and event.batches:
            self.add(event.batches)

    def add(self, batches) -> None:
        """One round trip's batches (they may share provider jobs)."""
        cost = self.backend.estimate_cost([batches])
        for k in ("usd", "qpu_seconds", "tasks"):
            self.totals[k] += float(cost.get(k, 0.0))
        self.totals["shots"] += int(sum(b.executions * (b.shots or 0) for b in batches))
        self.totals["executions"] += int(sum(b.executions for b in batches))

    def summary(self, examples: int) -> dict:
        return {"device": self.device, **self.totals, **per_example(self.totals, examples), "price": self.backend.price()}


def on_device(device: str, trips, examples: int) -> dict:
    """The price of round trips' batches on a paid device (its snapshot, no credentials), total and
    per example."""
    cost = DeviceCost(device)
    for batches in trips:
        cost.add(batches)
    return cost.summary(examples)
