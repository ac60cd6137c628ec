"""ibm: qiskit-ibm-runtime primitives, one code path for local testing mode and real QPUs.

    ibm:fake_fez      SamplerV2 in the runtime's local testing mode on a device snapshot
    ibm:ibm_kingston  SamplerV2 on the QPU through QiskitRuntimeService (credentials from the
                      environment, QISKIT_IBM_TOKEN [+ QISKIT_IBM_INSTANCE], or the saved account)

A sampled batch becomes one PUB per measured circuit (every binding in the PUB's parameter array),
split over several jobs when circuits x shots exceed the 10 million executions IBM allows per
Sampler job. Jobs carry the batch key as a job tag, so a process that
died between submitting and recording the job id can find its job again (`find`) instead of
paying twice. Execution mode follows the job's shape: a recurrence whose next round trip depends on
this one runs in a Session (low latency between iterations); a single wave runs as a Batch.

Which runtime API: the server-side SamplerV2 / EstimatorV2 (deprecated since 0.50 in favour of the
client-side executor primitives, `qiskit_ibm_runtime.executor_sampler.Sampler`). The executor
Sampler returns the same PrimitiveResult here, but its submission path (`_run_executor`) carries no
job tags, and finding a job by its tag is how a resumed run avoids paying twice for a job whose id
it never recorded; the resilience levels also live only on the server-side Estimator. Revisit when
the executor path takes tags.

Local testing mode runs the primitive on an AerSimulator that holds the snapshot's noise restricted
to the circuit's active qubits (the compaction of backends/aer.py): the same noise values as the
156-qubit fake backend, without Aer truncating a full-device noise model for every circuit
(129 s vs a few seconds for 8 haystack sequences). Real devices get the full ISA circuits.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
from qiskit_aer import AerSimulator

from qssm.backends.aer import (
    DENSITY_MATRIX_MAX_QUBITS,
    active_noise_model,
    active_qubits,
    compact,
)
from qssm.backends.base import Backend, Capabilities, Handle, batch_seed
from qssm.backends.fake_devices import calibration, fake_backend
from qssm.backends.sampling import broadcast, histograms, register_outcomes
from qssm.errors import QssmError
from qssm.redact import redact
from qssm.types import BatchResult, CircuitBatch

MAX_EXECUTIONS_PER_JOB = 10_000_000  # circuits x shots per Sampler job (IBM job limits)
REP_DELAY_S = 250e-6  # default repetition delay of IBM devices
JOB_OVERHEAD_S = 2.0  # per-job QPU-time overhead (loading, calibration checks), an estimate
USD_PER_QPU_SECOND = 96.0 / 60  # pay-as-you-go list price, 96 USD per QPU minute
PRICE = {"usd_per_qpu_second": USD_PER_QPU_SECOND, "source": "https://www.ibm.com/quantum/pricing (Pay-As-You-Go)",
         "date": "2026-11-25"}

STATUS = {"INITIALIZING": "queued", "QUEUED": "queued", "VALIDATING": "queued", "RUNNING": "running",
          "DONE": "done", "ERROR": "failed", "CANCELLED": "cancelled"}


def connect_service():
    """QiskitRuntimeService from the environment or the saved account; never stores a token."""
    from qiskit_ibm_runtime import QiskitRuntimeService

    token = os.environ.get("QISKIT_IBM_TOKEN") or os.environ.get("IBM_QUANTUM_TOKEN")
    try:
        if token:
            return QiskitRuntimeService(channel=os.environ.get("QISKIT_IBM_CHANNEL", "ibm_quantum_platform"),
                                        token=token, instance=os.environ.get("QISKIT_IBM_INSTANCE"))
        return QiskitRuntimeService()
    except Exception as e:  # noqa: BLE001 - the SDK raises several types for missing/invalid accounts

        raise QssmError("no IBM Quantum credentials: set QISKIT_IBM_TOKEN (and QISKIT_IBM_INSTANCE) or save an "
                        f"account with QiskitRuntimeService.save_account ({redact(str(e)).splitlines()[0][:120]})") from None


def job_tag(key: str) -> str:
    """The tag a batch's jobs carry, so a resumed process can find jobs it never recorded."""
    return f"qssm-{key[:32]}"


def _status_name(status) -> str:
    name = getattr(status, "name", str(status)).upper()
    return STATUS.get(name, "running")


class IBMBackend(Backend):
    RUNTIME_OPTIONS = frozenset({"resilience_level", "twirling", "dynamical_decoupling"})

    def __init__(self, device: str, seed: int | None = None, service=None, options: dict | None = None):
        super().__init__()
        self.name = f"ibm:{device}"
        self.seed = seed
        self.local = device.startswith("fake_")
        self.device_name = device
        if self.local:  # runtime local testing mode: the primitive runs Aer on the snapshot's noise
            from qiskit_ibm_runtime.fake_provider.local_service import (
                QiskitRuntimeLocalService,
            )

            self.device = fake_backend(device)
            self.service = service or QiskitRuntimeLocalService()
        else:
            self.service = service or connect_service()
            try:
                self.device = self.service.backend(device)
            except Exception as e:  # noqa: BLE001
                raise QssmError(f"IBM backend {device!r} is not available to this account ({e}); "
                                "list yours with QiskitRuntimeService().backends()") from None
        self.target = self.device.target
        self.calibration = calibration(self.device)
        self.runtime_options.update(options or {})
        self.mode = "session"  # the recurrence feeds results into the next round trip
        self._mode = None
        self._jobs: dict[str, object] = {}  # job id -> job object submitted by this process

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(simulator=self.local, exact=False, deterministic=False, modes=("session", "batch"),
                            find_by_tag=hasattr(self.service, "jobs"), native_estimator=self.resilience_level >= 0,
                            runtime_options=self.RUNTIME_OPTIONS, max_shots=100_000,
                            max_qubits=self.target.num_qubits, max_executions_per_job=MAX_EXECUTIONS_PER_JOB)

    def set_mode(self, mode: str) -> None:
        self.mode = mode

    # -- execution mode ---------------------------------------------------------------------------
    def _local_simulator(self, active: tuple[int, ...]):
        method = "density_matrix" if len(active) <= DENSITY_MATRIX_MAX_QUBITS else "statevector"
        return AerSimulator(method=method, noise_model=active_noise_model(self.device_name, active))

    def _execution_mode(self, active: tuple[int, ...] | None = None):
        if self.local:  # local testing mode ignores sessions; job mode on the compacted simulator
            return self._local_simulator(active) if active is not None else self.device
        if self._mode is None:
            from qiskit_ibm_runtime import Batch, Session

            self._mode = (Session if self.mode == "session" else Batch)(backend=self.device)
        return self._mode

    def close(self) -> None:
        if self._mode is not None:
            self._mode.close()
            self._mode = None

    def _primitive(self, cls, key: str, active: tuple[int, ...] | None, twirl_measure: bool):
        """A runtime primitive for one batch: its job tag, per-batch seed in local mode, and the
        spec's runtime pass-throughs."""
        with warnings.catch_warnings():  # the server-side primitives are deprecated (0.50), see above
            warnings.simplefilter("ignore", DeprecationWarning)
            primitive = cls(mode=self._execution_mode(active))
        primitive.options.environment.job_tags = [job_tag(key)]
        if self.seed is not None and self.local:
            primitive.options.simulator.seed_simulator = batch_seed(self.seed, key)
        if self.runtime_options.get("twirling"):
            primitive.options.twirling.enable_gates = True
            if twirl_measure:
                primitive.options.twirling.enable_measure = True
        if self.runtime_options.get("dynamical_decoupling"):
            primitive.options.dynamical_decoupling.enable = True
        return primitive

    # -- the backend contract -----------------------------------------------------------------------
    def prepared(self, batch: CircuitBatch):
        """(circuits, observables, active qubits or None): local mode compacts onto the batch's
        active qubits (one noise model for the batch)."""
        if not self.local:
            return list(batch.circuits), list(batch.observables), None

        active = tuple(sorted(set().union(*(active_qubits(c, batch.observables) for c in batch.circuits))))
        small = [compact(c, batch.observables, active) for c in batch.circuits]
        return [s[0] for s in small], small[0][1], active

    def pubs(self, batch: CircuitBatch) -> list[list[tuple]]:
        """PUBs per job: one per measured circuit (all its rows), chunked to the executions limit."""
        circuits, _, _ = self.prepared(batch)
        n = len(batch.parameters)
        per_job = max(1, MAX_EXECUTIONS_PER_JOB // batch.shots)
        jobs: list[list[tuple]] = []
        current: list[tuple] = []
        room = per_job
        for i, circuit in enumerate(circuits):
            rows = batch.rows(i) if circuit.num_parameters else None
            total = n if rows is not None else 1
            start = 0
            while start < total:
                take = min(room, total - start)
                current.append((circuit, None if rows is None else rows[start:start + take], batch.shots))
                start += take
                room -= take
                if room == 0:
                    jobs.append(current)
                    current, room = [], per_job
        if current:
            jobs.append(current)
        return jobs

    @property
    def resilience_level(self) -> int:
        return int(self.runtime_options.get("resilience_level", -1))

    def _estimator(self, key: str, active: tuple[int, ...] | None, shots: int):
        """The runtime Estimator, for its resilience levels (TREX readout, ZNE, PEC on the server);
        qssm's own readout/ZNE mitigation runs on the Sampler path instead."""
        from qiskit_ibm_runtime import EstimatorV2

        est = self._primitive(EstimatorV2, key, active, twirl_measure=False)
        est.options.default_shots = shots
        if not self.local:  # local testing mode has no resilience (it warns and ignores it)
            est.options.resilience_level = self.resilience_level
        return est

    def submit(self, batch: CircuitBatch) -> Handle:
        if not batch.shots:
            raise QssmError(f"{self.name} samples: set [backend] shots > 0")
        circuits, observables, active = self.prepared(batch)
        if not batch.sampled:  # native estimator (resilience levels)
            rows = batch.rows()[:, None, :] if circuits[0].num_parameters else None
            job = self._estimator(batch.key, active, batch.shots).run([(circuits[0], [observables], rows)])
            self._jobs[job.job_id()] = job
            return Handle(self.name, [job.job_id()], {"tag": job_tag(batch.key), "primitive": "estimator",
                                                      "submitted": time.time()})
        from qiskit_ibm_runtime import SamplerV2

        ids = []
        for pubs in self.pubs(batch):
            job = self._primitive(SamplerV2, batch.key, active, twirl_measure=True).run(pubs)
            self._jobs[job.job_id()] = job
            ids.append(job.job_id())
        return Handle(self.name, ids, {"tag": job_tag(batch.key), "submitted": time.time()})

    def find(self, batch: CircuitBatch) -> Handle | None:
        """Jobs a previous process submitted for this batch (by job tag), if the service knows them."""
        if not self.capabilities.find_by_tag:
            return None
        found = self.service.jobs(job_tags=[job_tag(batch.key)], limit=100)
        if found and not batch.sampled and len(found) == 1:
            return Handle(self.name, [found[0].job_id()], {"tag": job_tag(batch.key), "primitive": "estimator",
                                                           "found": True})
        if not found or len(found) != len(self.pubs(batch)):
            return None
        ids = [j.job_id() for j in sorted(found, key=lambda j: getattr(j, "creation_date", None) or 0)]
        return Handle(self.name, ids, {"tag": job_tag(batch.key), "found": True})

    def _job(self, job_id: str):
        if job_id in self._jobs:
            return self._jobs[job_id]
        retrieve = getattr(self.service, "job", None)  # the runtime service (local mode has no retrieval)
        return retrieve(job_id) if retrieve is not None else None

    def status(self, handle: Handle) -> str:
        states = []
        for job_id in handle.job_ids:
            job = self._job(job_id)
            states.append("unknown" if job is None else _status_name(job.status()))
        for s in ("failed", "cancelled", "unknown", "queued", "running"):
            if s in states:
                return s
        return "done"

    def result(self, handle: Handle, batch: CircuitBatch) -> BatchResult:
        jobs = []
        for job_id in handle.job_ids:
            job = self._job(job_id)
            if job is None:
                raise QssmError(f"IBM job {job_id} is unknown to this process and {self.name} cannot retrieve it; "
                                "resubmit the batch")
            jobs.append(job)
        if handle.meta.get("primitive") == "estimator":
            data = jobs[0].result()[0].data
            values = np.asarray(data.evs, dtype=float).reshape(len(batch.parameters), -1)
            stderr = np.asarray(data.stds, dtype=float).reshape(values.shape)
            return BatchResult(values, stderr, meta={"backend": self.name, "primitive": "estimator",
                                                     "resilience_level": self.resilience_level},
                               shots=batch.shots or 0, job_ids=tuple(handle.job_ids))
        circuits, _, _ = self.prepared(batch)
        pubs = [pub for job in jobs for pub in job.result()]
        usage = 0.0 if self.local else sum(float(getattr(job, "usage", lambda: 0.0)() or 0.0) for job in jobs)
        # PUBs were chunked by rows within each circuit: stitch the chunks back per circuit
        n = len(batch.parameters)
        counts, k = [], 0
        for circuit in circuits:
            total = n if circuit.num_parameters else 1
            parts, got = [], 0
            while got < total:
                parts.append(register_outcomes(circuit, pubs[k].data))
                got += len(parts[-1])
                k += 1
            counts.append(broadcast(histograms(np.concatenate(parts), circuit.num_clbits), n))
        for job_id in handle.job_ids:
            self._jobs.pop(job_id, None)
        return BatchResult(counts=tuple(counts), meta={"backend": self.name, "qpu_seconds": usage},
                           shots=batch.shots or 0, job_ids=tuple(handle.job_ids), cost_usd=usage * USD_PER_QPU_SECOND)

    def failure_reason(self, handle: Handle) -> str | None:
        for job_id in handle.job_ids:
            job = self._job(job_id)
            reason = getattr(job, "error_message", None) if job is not None else None
            if callable(reason):
                try:
                    text = reason()
                except Exception:  # noqa: BLE001 - a reason is a courtesy, never a new failure
                    text = None
                if text:
                    return str(text)
        return None

    def cancel(self, handle: Handle) -> None:
        for job_id in handle.job_ids:
            job = self._job(job_id)
            if job is not None and _status_name(job.status()) in ("queued", "running"):
                job.cancel()

    def price(self) -> dict | None:
        return None if self.local else dict(PRICE)

    def estimate_cost(self, batches: list[CircuitBatch]) -> dict[str, float]:
        """QPU seconds from the job's size: per job overhead + executions x shots x (rep delay +
        circuit duration from the target's gate durations)."""
        seconds, jobs = 0.0, 0
        for b in batches:
            duration = b.seconds_per_shot
            shots = b.executions * (b.shots or 0)
            seconds += shots * (REP_DELAY_S + duration)
            jobs += max(1, -(-shots // MAX_EXECUTIONS_PER_JOB))
        seconds += jobs * JOB_OVERHEAD_S
        usd = 0.0 if self.local else seconds * USD_PER_QPU_SECOND
        return {"usd": usd, "qpu_seconds": 0.0 if self.local else seconds, "tasks": float(jobs),
                "qpu_seconds_if_real": seconds}
