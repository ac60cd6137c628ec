"""The narrow contract every backend hides behind (in the spirit of PennyLane's device API).

A backend takes CompiledBatches and returns BatchResults. Submission and retrieval are separate so
the job store can record a provider job id before waiting on it, and poll it again after a crash:

    handle = backend.submit(batch)      # returns at once with a provider job id
    backend.status(handle)              # "queued" | "running" | "done" | "failed" | "cancelled" | "unknown"
                                        # ("unknown": a local simulator job from a process that died)
    backend.result(handle, batch)       # blocks until done; BatchResult
    backend.run(batches)                # convenience: submit all, then collect in order

`result` takes the CompiledBatch again because a provider returns raw samples: turning them into
expectation values needs the batch's observables. After a crash the job store rebuilds the batch
from the spec (same content key) and collects a provider job id that another process submitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qiskit.transpiler import Target

from qssm.pipeline.types import BatchResult, CompiledBatch


def batch_seed(seed: int | None, key: str) -> int | None:
    """Distinct, reproducible simulator noise per batch: the backend seed mixed with the batch key."""
    return None if seed is None else (seed * 1_000_003 + int(key[:8], 16)) % 2**31


@dataclass
class Handle:
    backend: str  # backend name in the qssm scheme, e.g. "aer:fake_fez"
    job_ids: list[str]  # provider job ids / task ARNs
    meta: dict[str, Any] = field(default_factory=dict)


class Backend:
    name: str = "base"
    # Target to transpile for; None means the backend runs logical circuits as they are.
    target: Target | None = None
    max_shots: int | None = None
    deterministic: bool = False  # exact results: identical batches may reuse stored results
    exact_capable: bool = True  # can return shot-free expectation values (simulators)
    calibration: str = ""  # calibration identity (date) of the target; part of compile cache keys

    @property
    def max_qubits(self) -> int | None:
        return None if self.target is None else self.target.num_qubits

    def submit(self, batch: CompiledBatch) -> Handle:
        raise NotImplementedError

    def status(self, handle: Handle) -> str:
        raise NotImplementedError

    def result(self, handle: Handle, batch: CompiledBatch) -> BatchResult:
        raise NotImplementedError

    def cancel(self, handle: Handle) -> None:
        raise NotImplementedError

    def estimate_cost(self, batches: list[CompiledBatch]) -> dict[str, float]:
        """Preflight estimate before submission: {"usd": ..., "qpu_seconds": ..., "tasks": ...}.
        Simulators are free."""
        return {"usd": 0.0, "qpu_seconds": 0.0, "tasks": 0.0}

    def sampler(self):
        """A Qiskit SamplerV2-like primitive for circuit-cutting subexperiments."""
        from qssm.errors import QssmError

        raise QssmError(f"backend {self.name} cannot run cut circuits; use an aer or ibm backend")

    def run(self, batches: list[CompiledBatch]) -> list[BatchResult]:
        handles = [self.submit(b) for b in batches]
        return [self.result(h, b) for h, b in zip(handles, batches)]
