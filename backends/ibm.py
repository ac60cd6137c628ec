"""ibm: qiskit-ibm-runtime primitives, one code path for local testing mode and real QPUs.

    ibm:fake_fez      SamplerV2 in the runtime's local testing mode on a device snapshot
    ibm:ibm_kingston  SamplerV2 on the QPU through QiskitRuntimeService (credentials from the
                      environment, QISKIT_IBM_TOKEN [+ QISKIT_IBM_INSTANCE], or the saved account)

A sampled batch becomes one PUB per measured circuit (every binding in the PUB's parameter array),
split over several jobs when circuits x shots exceed the 10 million executions IBM allows per
Sampler job. The sampled batches of one round trip with the same shots run as one pack (`Pack`,
`pack_class`): all their PUBs in the same jobs, so a round trip pays the per-job overhead once per
shot count instead of once per batch (a round trip sends a batch per template; an adaptive round
one per template and shot count). Shots stay job-wide: qiskit-ibm-runtime 0.48 deprecated PUBs
with different shots in one job ("submit one job for each desired shot count"), and twirling's
randomization split is one per job; local mode also needs one compacted register per job.

Each job is one unit of the batch or pack (backends/base.py): it carries the batch (pack) tag, the
qssm job's tag and its own identity tag, so a process that died between creating a job and recording
its id, or whose create response was lost, finds it again (`find_units`, one query per batch, jobs
that ended in ERROR or CANCELLED dropped) and creates only the chunks that are missing. IBM has no
idempotency key: the tags are the only way not to pay twice.

Execution mode ([backend] mode): "session" keeps the device between dependent round trips (no
re-queueing) and is billed for its whole wall time, idle gaps included; "batch" bills QPU time only.
"auto" picks a Session only for a recurrence (several round trips), where the plan allows one (the
Open plan does not) and where its idle billing, SESSION_GAP_S per round trip, stays within
SESSION_IDLE_SHARE of the job's QPU time; the estimate prices the mode it picked and says which.

Usage is read after the result (`usage`): job.usage() is a network call and returns 0 while IBM
is still computing it, so the job's metrics are read instead, and "pending" is reported as such.

Twirling: the runtime's "auto" randomizations round the shots up (1000 shots ran as 16 x 64 =
1024), so qssm sets num_randomizations x shots_per_randomization = shots exactly (`twirl_split`);
histograms are normalised by the shots actually counted in any case (pipeline/measure.py).

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
from qssm.backends.base import Backend, Capabilities, Handle, Identity, batch_seed
from qssm.backends.fake_devices import calibration, fake_backend
from qssm.backends.sampling import broadcast, histograms, register_outcomes
from qssm.errors import QssmError
from qssm.redact import redact
from qssm.types import BatchResult, CircuitBatch, Pack, members

MAX_EXECUTIONS_PER_JOB = 10_000_000  # circuits x shots per Sampler job (IBM job limits)
REP_DELAY_S = 250e-6  # default repetition delay of IBM devices
JOB_OVERHEAD_S = 2.0  # per-job QPU-time overhead (loading, calibration checks), an estimate
USD_PER_QPU_SECOND = 96.0 / 60  # pay-as-you-go list price, 96 USD per QPU minute
PRICE = {"usd_per_qpu_second": USD_PER_QPU_SECOND, "source": "https://www.ibm.com/quantum/pricing (Pay-As-You-Go)",
         "date": "2026-11-25"}
SESSION_GAP_S = 10.0  # billed idle time per round trip in a Session: results down, recurrence, next job up
SESSION_IDLE_SHARE = 0.25  # "auto" keeps a Session while its idle billing is at most this share of QPU time
DEAD = ("ERROR", "CANCELLED")  # jobs that will never return a result: never adopted by find_units

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


def scope_tag(scope: str) -> str:
    return f"qssm-job-{scope}"


def _raw_status(status) -> str:
    return getattr(status, "name", str(status)).upper()


def _status_name(status) -> str:
    """The contract's state; a provider state qssm does not know is "unrecognized", never "running"."""
    return STATUS.get(_raw_status(status), "unrecognized")


def twirl_split(shots: int) -> tuple[int, int]:
    """(num_randomizations, shots_per_randomization) whose product is exactly `shots`: the divisor of
    shots nearest (in ratio) to the runtime's own "auto" count, ceil(shots / max(64, ceil(shots / 32)))."""
    auto = -(-shots // max(64, -(-shots // 32)))
    divisors = [d for d in range(1, int(shots**0.5) + 1) if shots % d == 0]
    divisors += [shots // d for d in divisors]
    n = min(divisors, key=lambda d: (abs(np.log(d / auto)), -d))
    return n, shots // n


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
        self.round_trips = 1
        self._mode = None
        self._mode_usage: dict | None = None
        self._jobs: dict[str, object] = {}  # job id -> job object submitted by this process
        self._pubs: tuple[tuple, list] | None = None  # (batch key, its job chunks): units are asked for one by one

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(simulator=self.local, exact=False, deterministic=False, modes=("session", "batch"),
                            find_by_tag=hasattr(self.service, "jobs"), native_estimator=self.resilience_level >= 0,
                            runtime_options=self.RUNTIME_OPTIONS, max_shots=100_000,
                            max_qubits=self.target.num_qubits, max_executions_per_job=MAX_EXECUTIONS_PER_JOB,
                            packs=True)

    def set_mode(self, mode: str, round_trips: int = 1, qpu_seconds: float | None = None) -> None:
        """"session" / "batch" as asked; "auto" by the plan and the job's shape (module docstring)."""
        self.round_trips = max(1, int(round_trips))
        if mode != "auto":
            self.mode = mode
            return
        idle = (self.round_trips - 1) * SESSION_GAP_S
        worth = qpu_seconds is None or idle <= SESSION_IDLE_SHARE * qpu_seconds
        self.mode = "session" if self.round_trips > 1 and self.sessions_allowed() and worth else "batch"

    def plan(self) -> str | None:
        """The IBM plan of the instance the device is used through ("open", "premium", ...), if known."""
        if self.local:
            return None
        try:
            crn = getattr(self.device, "_instance", None) or self.service.active_instance()
            return next((i.get("plan") for i in self.service.instances() if i.get("crn") == crn), None)
        except Exception:  # noqa: BLE001 - an account without instance listing: the plan stays unknown
            return None

    def sessions_allowed(self) -> bool:
        """The Open plan runs no Sessions; an unknown plan gets a Batch, which runs everywhere."""
        plan = self.plan()
        return self.local or (plan is not None and plan != "open")

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
            self._mode_usage = self._read_mode_usage()
            self._mode.close()
            self._mode = None

    def _read_mode_usage(self) -> dict | None:
        """A Session bills its wall time (idle gaps included), a Batch its jobs' QPU time: the
        runtime's usage of the mode, for reconciling the estimate after the job."""
        try:
            seconds = self._mode.usage()
        except Exception:  # noqa: BLE001 - bookkeeping only
            return None
        if seconds is None:
            return None
        return {"mode": self.mode, "seconds": float(seconds), "cost_usd": float(seconds) * USD_PER_QPU_SECOND}

    def mode_usage(self) -> dict | None:
        if self._mode is not None:
            self._mode_usage = self._read_mode_usage()
        return self._mode_usage

    def _primitive(self, cls, ident: Identity, active: tuple[int, ...] | None, twirl_measure: bool, shots: int):
        """A runtime primitive for one unit of a batch: its tags (batch, qssm job, identity), per-batch
        seed in local mode, and the spec's runtime pass-throughs."""
        with warnings.catch_warnings():  # the server-side primitives are deprecated (0.50), see above
            warnings.simplefilter("ignore", DeprecationWarning)
            primitive = cls(mode=self._execution_mode(active))
        primitive.options.environment.job_tags = [job_tag(ident.key)] + ([scope_tag(ident.scope)] if ident.scope
                                                                          else []) + [ident.token]
        if self.seed is not None and self.local:
            primitive.options.simulator.seed_simulator = batch_seed(self.seed, ident.key)
        if self.runtime_options.get("twirling"):
            primitive.options.twirling.enable_gates = True
            if twirl_measure:
                primitive.options.twirling.enable_measure = True
            n, per = twirl_split(shots)  # exactly the shots asked for ("auto" rounds them up)
            primitive.options.twirling.num_randomizations = n
            primitive.options.twirling.shots_per_randomization = per
        if self.runtime_options.get("dynamical_decoupling"):
            primitive.options.dynamical_decoupling.enable = True
        return primitive

    # -- the backend contract -----------------------------------------------------------------------
    def _active(self, batch: CircuitBatch) -> tuple[int, ...] | None:
        """The qubits local mode compacts the batch onto (None on a real device: full ISA circuits)."""
        if not self.local:
            return None
        return tuple(sorted(set().union(*(active_qubits(c, batch.observables) for c in batch.circuits))))

    def prepared(self, batch: CircuitBatch):
        """(circuits, observables, active qubits or None): local mode compacts onto the batch's
        active qubits (one noise model for the batch)."""
        active = self._active(batch)
        if active is None:
            return list(batch.circuits), list(batch.observables), None
        small = [compact(c, batch.observables, active) for c in batch.circuits]
        return [s[0] for s in small], small[0][1], active

    def pack_class(self, batch: CircuitBatch):
        """Batches of a round trip with the same class run as one pack (module docstring): equal shots
        (and, in local mode, register); None: alone (the estimator path)."""
        if not batch.sampled or not batch.shots:
            return None
        return self._active(batch), batch.shots

    def pubs(self, unit: CircuitBatch | Pack) -> list[list[tuple]]:
        """PUBs per job: one per measured circuit (all its rows) of every member, chunked to the
        executions limit."""
        cache = (unit.key, MAX_EXECUTIONS_PER_JOB)
        if self._pubs is not None and self._pubs[0] == cache:
            return self._pubs[1]
        jobs = self._chunks([(member, self.prepared(member)[0]) for member in members(unit)])
        self._pubs = (cache, jobs)
        return jobs

    @staticmethod
    def job_count(batches: list[CircuitBatch]) -> int:
        """The runtime jobs `pubs` splits these batches into when they run as one unit, from their
        sizes alone (the price counts what dispatch sends: whole executions per job)."""
        return max(1, len(IBMBackend._chunks([(b, b.circuits) for b in batches])))

    @staticmethod
    def _chunks(parts: list[tuple[CircuitBatch, list]]) -> list[list[tuple]]:
        """The PUBs of (batch, its circuits) in order, cut into jobs of at most MAX_EXECUTIONS_PER_JOB
        executions x shots (a circuit's rows are cut across jobs where they must be)."""
        jobs: list[list[tuple]] = [[]]
        room = MAX_EXECUTIONS_PER_JOB
        for batch, circuits in parts:
            n, shots = len(batch.parameters), batch.shots or 1
            for i, circuit in enumerate(circuits):
                rows = batch.rows(i) if circuit.num_parameters else None
                total = n if rows is not None else 1
                start = 0
                while start < total:
                    take = min(max(room, 0) // shots, total - start)
                    if take == 0 and jobs[-1]:  # this job is full
                        jobs.append([])
                        room = MAX_EXECUTIONS_PER_JOB
                        continue
                    take = max(take, 1)  # one execution over the limit: alone in its job
                    jobs[-1].append((circuit, None if rows is None else rows[start:start + take], batch.shots))
                    start += take
                    room -= take * shots
        return [j for j in jobs if j]

    @property
    def resilience_level(self) -> int:
        return int(self.runtime_options.get("resilience_level", -1))

    def _estimator(self, ident: Identity, active: tuple[int, ...] | None, shots: int):
        """The runtime Estimator, for its resilience levels (TREX readout, ZNE, PEC on the server);
        qssm's own readout/ZNE mitigation runs on the Sampler path instead."""
        from qiskit_ibm_runtime import EstimatorV2

        est = self._primitive(EstimatorV2, ident, active, twirl_measure=False, shots=shots)
        est.options.default_shots = shots
        if not self.local:  # local testing mode has no resilience (it warns and ignores it)
            est.options.resilience_level = self.resilience_level
        return est

    def units(self, batch: CircuitBatch | Pack) -> int:
        return 1 if not batch.sampled else len(self.pubs(batch))

    def submit_unit(self, batch: CircuitBatch | Pack, unit: int, scope: str = "") -> str:
        """Create job chunk `unit` (one runtime job) of a batch or a pack and return its id."""
        first = members(batch)[0]
        if not first.shots:
            raise QssmError(f"{self.name} samples: set [backend] shots > 0")
        ident = Identity(scope, batch.key, unit)
        if not batch.sampled:  # native estimator (resilience levels)
            circuits, observables, active = self.prepared(batch)
            rows = batch.rows()[:, None, :] if circuits[0].num_parameters else None
            job = self._estimator(ident, active, batch.shots).run([(circuits[0], [observables], rows)])
        else:
            from qiskit_ibm_runtime import SamplerV2

            # a pack's members agree on what is job-wide (pack_class): the first one's shots are everyone's
            job = self._primitive(SamplerV2, ident, self._active(first), twirl_measure=True,
                                  shots=first.shots).run(self.pubs(batch)[unit])
        self._jobs[job.job_id()] = job
        return job.job_id()

    def handle(self, batch: CircuitBatch | Pack, ids: list[str]) -> Handle:
        meta = {"tag": job_tag(batch.key), "submitted": time.time()}
        if not batch.sampled:
            meta["primitive"] = "estimator"
        return Handle(self.name, list(ids), meta)

    def submit(self, batch: CircuitBatch | Pack, scope: str = "") -> Handle:
        return self.handle(batch, [self.submit_unit(batch, k, scope) for k in range(self.units(batch))])

    def find_units(self, batch: CircuitBatch | Pack, scope: str = "") -> dict[int, str]:
        """The batch's jobs the service already has, by identity tag (one query): {chunk: job id}.
        Jobs in ERROR or CANCELLED never return a result, so they are not adopted; their chunk is
        created again."""
        if not self.capabilities.find_by_tag:
            return {}
        tags = [job_tag(batch.key)] + ([scope_tag(scope)] if scope else [])
        wanted = {Identity(scope, batch.key, k).token: k for k in range(self.units(batch))}
        found: dict[int, tuple] = {}
        for job in self.service.jobs(job_tags=tags, limit=None, descending=False):
            unit = next((wanted[t] for t in (getattr(job, "tags", None) or []) if t in wanted), None)
            if unit is None or unit in found or _raw_status(job.status()) in DEAD:
                continue
            found[unit] = job.job_id()
        return found

    def _job(self, job_id: str):
        if job_id in self._jobs:
            return self._jobs[job_id]
        retrieve = getattr(self.service, "job", None)  # the runtime service (local mode has no retrieval)
        return retrieve(job_id) if retrieve is not None else None

    def status(self, handle: Handle) -> str:
        states = []
        for job_id in handle.job_ids:
            job = self._job(job_id)
            raw = None if job is None else _raw_status(job.status())
            states.append("unknown" if job is None else STATUS.get(raw, "unrecognized"))
            if states[-1] == "unrecognized":
                handle.meta["provider_state"] = raw
        for s in ("failed", "cancelled", "unknown", "unrecognized", "queued", "running"):
            if s in states:
                return s
        return "done"

    def result(self, handle: Handle, batch: CircuitBatch | Pack) -> BatchResult | list[BatchResult]:
        """The batch's result; a pack's, one per member in order."""
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
        pubs = iter([pub for job in jobs for pub in job.result()])
        out = [self._stitch(member, pubs, handle) for member in members(batch)]
        for job_id in handle.job_ids:  # usage() retrieves them again by id
            self._jobs.pop(job_id, None)
        return out if isinstance(batch, Pack) else out[0]

    def _stitch(self, batch: CircuitBatch, pubs, handle: Handle) -> BatchResult:
        """The batch's histograms from its PUB results, next in `pubs` (chunked by rows within each
        circuit: the chunks are stitched back per circuit)."""
        circuits, _, _ = self.prepared(batch)
        n = len(batch.parameters)
        counts = []
        for circuit in circuits:
            total = n if circuit.num_parameters else 1
            parts, got = [], 0
            while got < total:
                parts.append(register_outcomes(circuit, next(pubs).data))
                got += len(parts[-1])
            counts.append(broadcast(histograms(np.concatenate(parts), circuit.num_clbits), n))
        # the shots the device returned (twirling may round them): measure normalises by these
        counted = int(counts[0][0].sum()) if counts and len(counts[0]) else batch.shots
        return BatchResult(counts=tuple(counts), meta={"backend": self.name}, shots=counted,
                           job_ids=tuple(handle.job_ids))

    def usage(self, handle: Handle) -> dict[str, float] | None:
        """QPU seconds IBM charged for the handle's jobs, from their metrics (job.usage() says 0
        while the usage is pending); None while any job's usage is pending."""
        if self.local:
            return {"qpu_seconds": 0.0, "cost_usd": 0.0}
        seconds = 0.0
        for job_id in handle.job_ids:
            job = self._job(job_id)
            if job is None:
                return None
            usage = (job.metrics() or {}).get("usage") or {}
            if usage.get("status", "pending") == "pending" or usage.get("qpu_charge_time_seconds") is None:
                return None
            seconds += float(usage["qpu_charge_time_seconds"])
        return {"qpu_seconds": seconds, "cost_usd": seconds * USD_PER_QPU_SECOND}

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

    def estimate_cost(self, trips: list[list[CircuitBatch]]) -> dict[str, float]:
        """QPU seconds from the job's size: per job overhead + executions x shots x (rep delay +
        circuit duration from the target's gate durations); the jobs are those dispatch sends, each
        round trip's packs (pack_class) and lone batches."""
        seconds, jobs = 0.0, 0
        for trip in trips:
            packs: dict = {}
            for b in trip:
                seconds += b.executions * (b.shots or 0) * (REP_DELAY_S + b.seconds_per_shot)
                cls = self.pack_class(b)
                packs.setdefault(id(b) if cls is None else cls, []).append(b)
            jobs += sum(self.job_count(group) for group in packs.values())
        seconds += jobs * JOB_OVERHEAD_S
        # a Session bills its idle gaps between round trips too (module docstring)
        idle = (self.round_trips - 1) * SESSION_GAP_S if self.mode == "session" else 0.0
        usd = 0.0 if self.local else (seconds + idle) * USD_PER_QPU_SECOND
        return {"usd": usd, "qpu_seconds": 0.0 if self.local else seconds, "tasks": float(jobs),
                "qpu_seconds_if_real": seconds, "mode": self.mode, "session_idle_seconds": idle}
