"""The backend contract (docs/architecture.md, "Backends"), in the spirit of PennyLane's device API:
a narrow execute contract plus declared capabilities, so nothing outside backends/ probes a
backend with hasattr or tests its name.

    handle = backend.submit(batch)      # returns at once with provider job ids
    backend.status(handle)              # "queued" | "running" | "done" | "failed" | "cancelled" | "unknown"
                                        # | "unrecognized" ("unknown": a local simulator job from a process
                                        # that died; "unrecognized": a provider state qssm does not know,
                                        # its name in handle.meta["provider_state"])
    backend.result(handle, batch)       # blocks until done; BatchResult
    backend.run(batches)                # convenience: submit all, then collect in order
    backend.cancel(handle) / failure_reason(handle) / close()

Paid backends submit a batch as units, one provider job or task each (IBM job chunks, Braket tasks),
each with a deterministic identity (`Identity`: job scope, batch key, chunk, task) that it carries
as tags (and on Braket as the CreateQuantumTask clientToken):

    backend.units(batch)                        # how many provider jobs/tasks the batch becomes
    backend.find_units(batch, scope)            # {unit: provider id} of live ones that already exist
    backend.submit_unit(batch, unit, scope)     # create exactly one; returns its provider id
    backend.handle(batch, ids)                  # the Handle over all of them
    backend.usage(handle)                       # {"qpu_seconds", "cost_usd"} once the provider knows it,
                                                # None while it is pending (read after the result)

so the job store's dispatcher creates only what is missing, retries per unit, and reads usage after
the result is safe (docs/architecture.md, "Submission identity").

A backend that `packs` takes a `Pack` (sampled batches of one round trip whose `pack_class` agree)
wherever the unit calls take a batch, and returns one result per member: the round trip pays the
provider's per-job overhead once, not once per batch.

A batch is either estimate mode (observables: the backend returns their values; exact when shots is
None) or sample mode (measured circuits: the backend returns each circuit's outcome histogram over
its clbits). `result` takes the batch again because a provider returns raw samples that only the
batch can interpret; after a crash the job store rebuilds the batch from the spec (same content key)
and collects a provider job that another process submitted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from qiskit.transpiler import Target

from qssm.errors import QssmError
from qssm.types import BatchResult, CircuitBatch


def batch_seed(seed: int | None, key: str) -> int | None:
    """Distinct, reproducible simulator noise per batch: the backend seed mixed with the batch key."""
    return None if seed is None else (seed * 1_000_003 + int(key[:8], 16)) % 2**31


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares about itself; every decision outside backends/ reads these."""

    simulator: bool = True  # runs here and costs nothing
    exact: bool = True  # returns shot-free expectation values (estimate mode without shots)
    deterministic: bool = True  # shot-free results depend on the batch only: may be shared across jobs
    modes: tuple[str, ...] = ()  # execution modes it opens for a job, e.g. ("session", "batch")
    find_by_tag: bool = False  # submits in units with identities, and finds them again (find_units)
    native_estimator: bool = False  # takes observables with shots itself (no measure stage)
    mid_circuit_measurement: bool = True  # runs cut subexperiments
    runtime_options: frozenset[str] = frozenset()  # [mitigation] pass-throughs it accepts
    max_shots: int | None = None
    max_qubits: int | None = None
    max_executions_per_job: int | None = None  # circuits x shots per provider job (split above it)
    chunkable: bool = False  # sampling seeded per row: a batch split into row chunks samples the same
    expected_counts: bool = False  # sample mode can return expected counts (`expected`): the shot planner's oracle
    exact_without_readout: bool = False  # shot-free values leave the noise's readout error out (as Aer's estimator)
    packs: bool = False  # runs a round trip's sampled batches as one unit set (Pack, pack_class)


@dataclass(frozen=True)
class Identity:
    """Who a provider job/task is: the job that sent it (scope), its batch, and its place in the batch."""

    scope: str  # the qssm job id ("" outside the job store)
    key: str  # the batch's content key
    chunk: int  # IBM: job chunk; Braket: measured circuit
    task: int = 0  # Braket: row chunk (program set or binding) of the circuit

    @property
    def token(self) -> str:
        """One string for all four, <= 64 characters (Braket's clientToken limit)."""
        return f"qssm-{self.scope[-22:]}-{self.key[:24]}-{self.chunk}-{self.task}"


@dataclass
class Handle:
    backend: str  # backend name in the qssm scheme, e.g. "aer:fake_fez"
    job_ids: list[str]  # provider job ids / task ARNs
    meta: dict[str, Any] = field(default_factory=dict)


class Backend:
    name: str = "base"
    target: Target | None = None  # what to transpile for; None: logical circuits run as they are
    calibration: str = ""  # calibration identity (date) of the target; part of compile cache keys

    def __init__(self) -> None:
        self.runtime_options: dict[str, Any] = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_qubits=None if self.target is None else self.target.num_qubits)

    # -- configuration ----------------------------------------------------------------------------
    def configure(self, **options: Any) -> None:
        """Runtime options from the spec ([mitigation] pass-throughs), checked against what the
        backend accepts."""
        unknown = set(options) - self.capabilities.runtime_options
        if unknown:
            raise QssmError(f"[mitigation] {', '.join(sorted(unknown))}: {self.name} does not take these runtime "
                            "options (IBM runtime only); remove them or use an ibm: backend")
        self.runtime_options.update(options)

    def fingerprint(self) -> dict:
        """Everything beyond name and calibration that changes results (part of batch keys)."""
        return dict(sorted(getattr(self, "runtime_options", {}).items()))

    def set_mode(self, mode: str, round_trips: int = 1, qpu_seconds: float | None = None) -> None:
        """Execution mode ("session", "batch", or "auto": chosen from the job's round trips and QPU
        time); backends without modes ignore it."""

    def mode_usage(self) -> dict | None:
        """What the execution mode itself billed ({"mode", "seconds", "cost_usd"}), for reconciling
        the estimate after a job; None where there is no such mode."""
        return None

    def check_credentials(self) -> None:
        """Raise a one-line QssmError if paid execution would fail for lack of credentials."""

    # -- execution --------------------------------------------------------------------------------
    def submit(self, batch: CircuitBatch) -> Handle:
        raise NotImplementedError

    def status(self, handle: Handle) -> str:
        raise NotImplementedError

    def result(self, handle: Handle, batch: CircuitBatch) -> BatchResult:
        raise NotImplementedError

    def cancel(self, handle: Handle) -> None:
        raise NotImplementedError

    # -- units: one provider job/task each (module docstring) --------------------------------------
    def pack_class(self, batch: CircuitBatch):
        """Batches of one round trip with equal, non-None classes may share a Pack (`packs` backends)."""
        return None

    def units(self, batch: CircuitBatch) -> int:
        return 1

    def find_units(self, batch: CircuitBatch, scope: str = "") -> dict[int, str]:
        """{unit: provider id} of the batch's live (not failed or cancelled) jobs that exist already."""
        return {}

    def submit_unit(self, batch: CircuitBatch, unit: int, scope: str = "") -> str:
        raise NotImplementedError

    def handle(self, batch: CircuitBatch, ids: list[str]) -> Handle:
        return Handle(self.name, list(ids))

    def usage(self, handle: Handle) -> dict[str, float] | None:
        """What the provider billed for a finished handle: {"qpu_seconds", "cost_usd"}, or None while
        the provider has not settled it. Simulators cost nothing."""
        return {"qpu_seconds": 0.0, "cost_usd": 0.0}

    def failure_reason(self, handle: Handle) -> str | None:
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release sessions and connections (the job ends)."""

    def estimate_cost(self, trips: list[list[CircuitBatch]]) -> dict[str, float]:
        """Preflight estimate before submission of these round trips' batches (a round trip's may
        share provider jobs): {"usd": ..., "qpu_seconds": ..., "tasks": ...}. Simulators are free."""
        return {"usd": 0.0, "qpu_seconds": 0.0, "tasks": 0.0}

    def price(self) -> dict | None:
        """The list price `estimate_cost` charges, with its "source" and "date"; None when free."""
        return None

    def run(self, batches: list[CircuitBatch]) -> list[BatchResult]:
        handles = [self.submit(b) for b in batches]
        results = [self.result(h, b) for h, b in zip(handles, batches)]
        if not self.capabilities.simulator:  # what each cost, once the result is in hand
            for h, r in zip(handles, results):
                try:
                    usage = self.usage(h)
                except Exception:  # noqa: BLE001 - a paid result is kept whatever its usage call does
                    usage = None
                r.meta.update(usage="final", **usage) if usage else r.meta.update(usage="pending")
        return results

    def map(self, fn: Callable[[Backend, Any], Any], items: list) -> list:
        """[fn(backend, item) for item in items], in order, wherever this backend computes: here in
        this process; a cluster backend spreads the items over its workers (the compile stage's
        transpiles use it). `fn` must be a module-level function."""
        return [fn(self, item) for item in items]


class LocalBackend(Backend):
    """A simulator that computes a batch when it is submitted and keeps the result until collected
    (a job from a process that died is "unknown": the dispatcher runs it again)."""

    prefix = "local"

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, BatchResult] = {}

    def evaluate(self, batch: CircuitBatch) -> BatchResult:
        raise NotImplementedError

    def submit(self, batch: CircuitBatch) -> Handle:
        job = f"{self.prefix}-{uuid.uuid4().hex[:12]}"
        self._jobs[job] = self.evaluate(batch)
        return Handle(self.name, [job])

    def status(self, handle: Handle) -> str:
        return "done" if handle.job_ids[0] in self._jobs else "unknown"

    def result(self, handle: Handle, batch: CircuitBatch | None = None) -> BatchResult:
        if handle.job_ids[0] not in self._jobs:
            raise QssmError(f"local job {handle.job_ids[0]} of {self.name} is gone (another process); resubmit it")
        return self._jobs.pop(handle.job_ids[0])

    def cancel(self, handle: Handle) -> None:
        self._jobs.pop(handle.job_ids[0], None)
