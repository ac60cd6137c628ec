"""braket: Amazon Braket's LocalSimulator (state vector, density matrix with a device's noise) and
QPUs through AwsDevice / AwsQuantumTask.

    braket:local                 LocalSimulator("braket_sv") on logical circuits (no target)
    braket:local_dm[:<device>]   LocalSimulator("braket_dm") with a snapshot's noise (default
                                 iqm_garnet); circuits transpiled to its native gates and compacted
                                 to their active qubits before simulation
    braket:<device or ARN>       a QPU (braket:iqm_garnet, braket:arn:aws:braket:...)

Qiskit circuits become Braket circuits through qiskit_braket_provider's `to_braket` (the maintained
converter), once per circuit and measurement group, with the inputs left as FreeParameters and
bound per binding through `inputs=`. Exact values: the state vector (braket:local) or density
matrix (braket:local_dm; readout bit flips scale each Pauli term by prod(1 - 2 e_q), exact for
independent flips) of every binding, contracted with the observables in numpy. Sampled batches are
measured circuits (the pipeline's measure stage): each is run and returned as outcome histograms.

Speed: the local simulators re-parse the OpenQASM text per run (ANTLR), ~7-10 ms per binding for
6 qubits, which dominates; a LocalSimulator program set was 20x slower per binding, and
run_batch's process pool does not pay off on two cores, so bindings run one by one.

QPUs: where the device runs program sets (every gate-based QPU on Braket does), a batch's measured
circuits and their bindings are one program set, cut by `ProgramSet.split` at the device's
maximumExecutables / maximumTotalShots into as few tasks as the limits allow; elsewhere one task per
circuit and binding. Each task is one unit of the batch (backends/base.py) and carries its identity
as tags and as the CreateQuantumTask clientToken, so a retried create returns the task the first
attempt made, and a resumed process finds the tasks it never recorded (`find_units`) and creates only
the missing ones. Task ARNs go in Handle.job_ids; `result` rebuilds tasks from ARNs, so another
process can collect them. Circuits are submitted in verbatim boxes on physical qubits: the pipeline
has already mapped them to the device's native gates and connectivity.

Results: a device that returns measurement probabilities only (IonQ) is rebuilt by the SDK as
round(p x shots) rows per outcome, so a histogram may hold a shot or two more or fewer than asked
for; each entry becomes a histogram of whatever it holds, and measure normalises by the shots counted.
Capabilities (shot range, program-set limits) come from the device's live properties when AWS
credentials exist, else from the dated snapshot in device_data (the estimate says which). Results go
to QSSM_BRAKET_S3 ("bucket/prefix") when set, else to the SDK's default bucket
(amazon-braket-<region>-<account>, created on demand).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
import warnings
from pathlib import Path

import boto3
import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit.equivalence_library import SessionEquivalenceLibrary
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import PassManager
from qiskit.transpiler.passes import BasisTranslator

from qssm.backends import devices
from qssm.backends.aer import active_qubits, compact
from qssm.backends.base import Backend, Capabilities, Handle, Identity
from qssm.backends.sampling import broadcast, histograms
from qssm.errors import QssmError
from qssm.types import BatchResult, CircuitBatch

DEFAULT_DM_DEVICE = "iqm_garnet"
STATES = {"CREATED": "queued", "QUEUED": "queued", "RUNNING": "running", "COMPLETED": "done",
          "FAILED": "failed", "CANCELLING": "cancelled", "CANCELLED": "cancelled"}
DEAD = ("FAILED", "CANCELLING", "CANCELLED")  # tasks that will never return a result: never adopted


class ClientTokenSession:
    """An AwsSession whose CreateQuantumTask carries the unit's clientToken: AwsDevice.run has no
    parameter for it, and boto3 would otherwise draw a fresh token per call, so a create qssm retries
    after a lost response would make (and bill) a second task. Everything else is the session's."""

    def __init__(self, session):
        self._session = session
        self.client_token: str | None = None

    def __getattr__(self, name):
        return getattr(self._session, name)

    def create_quantum_task(self, **kwargs):
        if self.client_token:
            kwargs["clientToken"] = self.client_token
        return self._session.create_quantum_task(**kwargs)


def param_names(circuit: QuantumCircuit) -> list[str]:
    from qiskit_braket_provider.providers.adapter import rename_parameter

    return [rename_parameter(p) for p in circuit.parameters]


def convert(circuit: QuantumCircuit, qubit_labels=None, verbatim: bool = False):
    """Qiskit -> Braket with the provider's converter; measurements kept, parameters free."""
    from qiskit_braket_provider.providers.adapter import to_braket

    with warnings.catch_warnings():  # barriers are dropped on purpose
        warnings.simplefilter("ignore", UserWarning)
        return to_braket(circuit, qubit_labels=qubit_labels, verbatim=verbatim or None,
                         add_measurements=True)


def translate(circuit: QuantumCircuit, basis: list[str]) -> QuantumCircuit:
    """Basis-change gates of a measurement group (rz, sx) into the device's native gates."""
    if {inst.operation.name for inst in circuit.data} <= set(basis) | {"measure", "barrier"}:
        return circuit
    return PassManager([BasisTranslator(SessionEquivalenceLibrary, basis + ["measure", "barrier"])]).run(circuit)


def pauli_values(states: np.ndarray, observables: list[SparsePauliOp], density: bool = False) -> np.ndarray:
    """<O> per row of Qiskit-ordered states (bindings, 2^n) or density matrices (bindings, 2^n, 2^n)."""
    out = np.zeros((len(states), len(observables)))
    for i, obs in enumerate(observables):
        m = obs.to_matrix(sparse=True)
        if density:
            out[:, i] = [np.real((m @ rho).trace()) for rho in states]
        else:
            out[:, i] = np.real(np.einsum("bi,bi->b", states.conj(), (m @ states.T).T))
    return out


def to_qiskit_order(data: np.ndarray, n: int) -> np.ndarray:
    """Braket numbers qubit 0 as the most significant bit, Qiskit as the least."""
    rev = list(range(n))[::-1]
    if data.ndim == 1:
        return data.reshape([2] * n).transpose(rev).reshape(-1)
    return data.reshape([2] * (2 * n)).transpose(rev + [n + r for r in rev]).reshape(2**n, 2**n)


def outcomes_from(measurements: np.ndarray, measured_qubits: list[int], labels: list[int]) -> np.ndarray:
    """(shots, measured) bits -> integers with bit k = the k-th measured qubit of the group."""
    cols = [list(measured_qubits).index(q) for q in labels]
    m = np.asarray(measurements, dtype=np.int64)[:, cols]
    return (m << np.arange(len(labels))).sum(1)


def entry_histogram(entry, labels: list[int], num_clbits: int) -> np.ndarray:
    """One result entry (a task's result or a program-set entry) -> its (2**clbits,) histogram of
    whatever shots it holds: measured rows, or rows the SDK rebuilt from probabilities."""
    outcomes = outcomes_from(entry.measurements, entry.measured_qubits, labels)
    return np.bincount(outcomes, minlength=2**num_clbits)


def clbit_labels(circuit: QuantumCircuit, labels=None) -> list[int]:
    """Qubit label measured into each clbit, in clbit order."""
    by_clbit = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            q = circuit.find_bit(inst.qubits[0]).index
            by_clbit[circuit.find_bit(inst.clbits[0]).index] = labels[q] if labels else q
    return [by_clbit[k] for k in sorted(by_clbit)]


def has_credentials() -> bool:
    """Credentials boto3 could find without a network call (env, profile files, web identity,
    container). Instance metadata is not probed: it would wait on the network."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") \
            or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), env.get("AWS_CONFIG_FILE", "~/.aws/config")]
    return any(Path(f).expanduser().is_file() for f in files)


class BraketBackend(Backend):
    def __init__(self, name: str, seed: int | None = None, aws_session=None, poll_timeout_seconds: float = 432000):
        super().__init__()
        self.name = name
        self.seed = seed
        self._aws_session = aws_session
        self._poll_timeout = poll_timeout_seconds
        self._jobs: dict[str, BatchResult] = {}
        self._sims: dict = {}
        rest = name.partition(":")[2]
        if rest == "local":
            self.mode, self.device = "sv", None
            self.target, self.max_shots = None, 1_000_000
            return
        if rest.split(":")[0] == "local_dm":
            self.mode, self.device = "dm", devices.short_name(rest.partition(":")[2] or DEFAULT_DM_DEVICE)
        else:
            self.mode, self.device = "qpu", devices.short_name(rest)
        self.target = devices.device_target(self.device)
        self.calibration = devices.calibration(self.device)
        self._max_shots = devices.max_shots(self.device)
        self.arn = devices.load_device(self.device)["deviceArn"]
        self._caps: dict | None = None  # the device's limits, live or from the snapshot (device_caps)
        self._device = None
        self._programs: tuple | None = None  # (batch key, its program set pieces): built once per batch
        self._dead: dict[str, int] = {}  # identity token -> failed/cancelled tasks seen for it

    @property
    def max_shots(self) -> int:
        return self.device_caps()["max_shots"] if self.mode == "qpu" else self._max_shots

    @max_shots.setter
    def max_shots(self, value: int) -> None:
        self._max_shots = value

    @property
    def capabilities(self) -> Capabilities:
        qpu = self.mode == "qpu"
        return Capabilities(simulator=not qpu, exact=not qpu, deterministic=not qpu, find_by_tag=qpu,
                            mid_circuit_measurement=False, max_shots=self.max_shots,
                            max_qubits=None if self.target is None else self.target.num_qubits)

    def device_caps(self) -> dict:
        """Shot range and program-set limits: the device's live properties when credentials exist
        (one GetDevice call), else the snapshot, whose date `source` names."""
        if self._caps is None:
            self._caps = self._live_caps() or {
                "max_shots": devices.max_shots(self.device), "program_set": devices.program_set_limits(self.device),
                "source": f"snapshot of {devices.calibration(self.device)} (no AWS credentials: not live)"}
        return self._caps

    def _live_caps(self) -> dict | None:
        if self._aws_session is None and not has_credentials():
            return None
        try:
            props = self._aws_device().properties
            action = props.action.get("braket.ir.openqasm.program_set")
            return {"max_shots": int(props.service.shotsRange[1]),
                    "program_set": (int(action.maximumExecutables), int(action.maximumTotalShots)) if action else None,
                    "source": "device.properties (live)"}
        except Exception:  # noqa: BLE001 - no network or no access: the snapshot's limits, and it says so
            return None

    def check_credentials(self) -> None:
        if self.mode == "qpu" and self._aws_session is None and not has_credentials():
            raise QssmError(f"no AWS credentials for {self.name}: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials")

    # -- helpers -----------------------------------------------------------------------------------
    def _simulator(self, noise=None):
        from braket.devices import LocalSimulator

        if noise is None:
            key = self.mode
            if key not in self._sims:
                self._sims[key] = LocalSimulator("braket_sv" if self.mode == "sv" else "braket_dm")
            return self._sims[key]
        return LocalSimulator("braket_dm", noise_model=noise)

    def _braket_circuits(self, circuits, labels=None, verbatim=False):
        """Per measured circuit: (braket circuit, measured labels in clbit order)."""
        out = []
        basis = devices.native_names(self.device) if self.device else None
        for qc in circuits:
            if basis:
                qc = devices.to_braket_names(translate(qc, basis))
            out.append((convert(qc, labels, verbatim), clbit_labels(qc, labels)))
        return out

    # -- local simulators --------------------------------------------------------------------------
    def evaluate(self, batch: CircuitBatch) -> BatchResult:
        start = time.perf_counter()
        circuits, observables = list(batch.circuits), list(batch.observables)
        active = tuple(range(circuits[0].num_qubits))
        if self.mode == "dm":  # one noise model for the batch: compact every circuit onto the same qubits
            active = tuple(sorted(set().union(*(active_qubits(c, observables) for c in circuits))))
            small = [compact(c, observables, active) for c in circuits]
            circuits, observables = [x[0] for x in small], small[0][1]
        noise = devices.device_noise(self.device, active) if self.mode == "dm" else None
        n = len(batch.parameters)
        meta, shots = {"backend": self.name}, batch.shots or 0
        if not batch.sampled:
            if batch.shots:
                raise QssmError(f"{self.name} samples measured circuits: run sampled batches through the measure stage")
            names = param_names(circuits[0])
            rows = [dict(zip(names, map(float, r))) for r in batch.rows()]
            values = self._exact(circuits[0], observables, rows, noise, active)
            return BatchResult(values, np.zeros_like(values), meta=meta, shots=shots, seconds=time.perf_counter() - start)
        sim = self._simulator(noise)
        counts = []
        for i, (bc, labels) in enumerate(self._braket_circuits(circuits)):
            names = param_names(circuits[i])
            rows = [dict(zip(names, map(float, r))) for r in batch.rows(i)] if names else [{}]
            res = [sim.run(bc, shots=batch.shots, inputs=r).result() for r in rows]
            outcomes = np.stack([outcomes_from(x.measurements, x.measured_qubits, labels) for x in res])
            counts.append(broadcast(histograms(outcomes, circuits[i].num_clbits), n))
        return BatchResult(counts=tuple(counts), meta=meta, shots=shots, seconds=time.perf_counter() - start)

    def _exact(self, circuit, observables, rows, noise, active) -> np.ndarray:
        n = circuit.num_qubits
        native = circuit
        if self.device:
            native = devices.to_braket_names(circuit)
        bc = convert(native)
        for q in range(n):  # idle qubits would be dropped by the simulator's contiguous mapping
            if q not in bc.qubits:
                bc.i(q)
        dm = self.mode == "dm"
        bc = bc.density_matrix() if dm else bc.state_vector()
        sim = self._simulator(noise)
        data = [sim.run(bc, shots=0, inputs=r).result().values[0] for r in rows]
        states = np.stack([to_qiskit_order(np.asarray(d), n) for d in data])
        if not dm:
            return pauli_values(states, observables)
        # readout bit flips: each Pauli term shrinks by prod(1 - 2 e) over its support
        ro = np.array(devices.readout_errors(self.device, active))
        flipped = [SparsePauliOp(o.paulis, o.coeffs * [np.prod(1 - 2 * ro[np.flatnonzero(p.x | p.z)]) for p in o.paulis])
                   for o in observables]
        return pauli_values(states, flipped, density=True)

    # -- QPU ---------------------------------------------------------------------------------------
    def session(self):
        if self._aws_session is None:
            self.check_credentials()
            from braket.aws import AwsSession
            from braket.aws.aws_device import AwsDevice

            region = AwsDevice.get_device_region(self.arn) or None
            self._aws_session = AwsSession(boto_session=boto3.Session(region_name=region))
        return self._aws_session

    def _aws_device(self):
        """The AwsDevice, over a session that adds each unit's clientToken (ClientTokenSession)."""
        if self._device is None:
            from braket.aws import AwsDevice

            self._device = AwsDevice(self.arn, aws_session=ClientTokenSession(self.session()))
        return self._device

    def _s3(self) -> tuple[str, str] | None:
        """QSSM_BRAKET_S3 ("bucket/prefix"); unset: None, and the SDK uses its default bucket."""
        dest = os.environ.get("QSSM_BRAKET_S3", "").strip().strip("/")
        if not dest:
            return None
        bucket, _, prefix = dest.partition("/")
        return bucket, prefix or "tasks"

    def _rows(self, batch: CircuitBatch) -> list[int]:
        """Executables per measured circuit: its bindings, or one for a parameter-free circuit."""
        return [len(batch.parameters) if c.num_parameters else 1 for c in batch.circuits]

    def _per_task(self, batch: CircuitBatch) -> int | None:
        """Executables per program-set task (the device's limits), None without program sets."""
        limits = self.device_caps()["program_set"]
        return None if limits is None else max(1, min(limits[0], limits[1] // max(1, batch.shots or 1)))

    def _plan(self, batch: CircuitBatch) -> list[tuple[int, int]]:
        """Units as (first, end) executable indices, executables numbered circuit by circuit and
        binding by binding: contiguous pieces of `per` (ProgramSet.split packs them so), or one
        executable per task without program sets."""
        total, per = sum(self._rows(batch)), self._per_task(batch) or 1
        return [(a, min(total, a + per)) for a in range(0, total, per)]

    def _executables(self, batch: CircuitBatch) -> list[tuple[int, int]]:
        """(circuit, row) of every executable, in plan order."""
        return [(i, r) for i, n in enumerate(self._rows(batch)) for r in range(n)]

    def units(self, batch: CircuitBatch) -> int:
        return len(self._plan(batch)) if self.mode == "qpu" else 1

    def _identity(self, batch: CircuitBatch, unit: int, scope: str) -> Identity:
        """Program sets: chunk = the piece, task 0; one task per executable: chunk = circuit, task = row."""
        if self._per_task(batch) is not None:
            return Identity(scope, batch.key, unit)
        i, r = self._executables(batch)[unit]
        return Identity(scope, batch.key, i, r)

    def _tags(self, batch: CircuitBatch, unit: int, scope: str) -> dict[str, str]:
        tags = {"qssm-batch": batch.key[:32], "qssm-task": str(unit), "qssm-id": self._identity(batch, unit, scope).token}
        return {**tags, "qssm-job": scope} if scope else tags

    def find_units(self, batch: CircuitBatch, scope: str = "") -> dict[int, str]:
        """The batch's tasks that exist already (a process died between CreateQuantumTask and the
        store's write, or a create's response was lost): SearchQuantumTasks on the device over the
        last week, matched by identity tag. Failed or cancelled tasks are not adopted; they are
        counted, so the unit's next create uses a fresh clientToken."""
        if self.mode != "qpu":
            return {}

        client = self.session().braket_client
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
        filters = [{"name": "deviceArn", "operator": "EQUAL", "values": [self.arn]},
                   {"name": "createdAt", "operator": "GTE", "values": [since]}]
        wanted = {self._identity(batch, k, scope).token: k for k in range(self.units(batch))}
        found: dict[int, str] = {}
        dead: dict[str, int] = {}
        token = None
        while True:
            page = client.search_quantum_tasks(filters=filters, **({"nextToken": token} if token else {}))
            for t in page.get("quantumTasks", []):
                ident = (t.get("tags") or {}).get("qssm-id")
                if ident not in wanted:
                    continue
                if t.get("status") in DEAD:
                    dead[ident] = dead.get(ident, 0) + 1
                else:
                    found.setdefault(wanted[ident], t["quantumTaskArn"])
            token = page.get("nextToken")
            if not token:
                break
        self._dead.update(dead)
        return found

    def _program_sets(self, batch: CircuitBatch) -> list:
        """The batch's program set cut by ProgramSet.split at the device's limits (one per unit)."""
        if self._programs is not None and self._programs[0] == batch.key:
            return self._programs[1]
        from braket.program_sets import CircuitBinding, ParameterSets, ProgramSet

        circuits = self._braket_circuits(batch.circuits, devices.qubit_labels(self.device), verbatim=True)
        programs = []
        for i, (bc, _) in enumerate(circuits):
            names = param_names(batch.circuits[i])
            rows = batch.rows(i)
            programs.append(CircuitBinding(bc, input_sets=ParameterSets({k: rows[:, j].tolist() for j, k in
                                                                        enumerate(names)})) if names else bc)
        pieces, index = ProgramSet(programs, shots_per_executable=batch.shots).split(self._per_task(batch))
        assert [(m[0], m[-1] + 1) for m in index] == self._plan(batch), "ProgramSet.split packed unexpectedly"
        self._programs = (batch.key, pieces)
        return pieces

    def submit_unit(self, batch: CircuitBatch, unit: int, scope: str = "") -> str:
        """Create the batch's task `unit`, with its identity as tags and clientToken; returns its ARN."""
        if not batch.sampled:
            raise QssmError(f"{self.name} samples measured circuits: set [backend] shots > 0")
        device = self._aws_device()
        tags = self._tags(batch, unit, scope)
        retry = self._dead.get(tags["qssm-id"], 0)  # the token of a failed task would return that task
        device._aws_session.client_token = tags["qssm-id"] + (f"-r{retry}" if retry else "")
        if self._per_task(batch) is not None:
            spec = self._program_sets(batch)[unit]
            return device.run(spec, self._s3(), shots=spec.total_shots, tags=tags).id
        i, r = self._executables(batch)[unit]
        bc = self._braket_circuits([batch.circuits[i]], devices.qubit_labels(self.device), verbatim=True)[0][0]
        names = param_names(batch.circuits[i])
        inputs = dict(zip(names, batch.rows(i)[r].tolist())) if names else {}
        return device.run(bc, self._s3(), shots=batch.shots, inputs=inputs, tags=tags).id

    def handle(self, batch: CircuitBatch, ids: list[str]) -> Handle:
        labels = devices.qubit_labels(self.device) if self.mode == "qpu" else None
        meta = {"device": self.device, "plan": [list(p) for p in self._plan(batch)],
                "program_sets": self._per_task(batch) is not None, "rows": self._rows(batch),
                "labels": [clbit_labels(c, labels) for c in self._native(batch.circuits)], "shots": batch.shots}
        return Handle(self.name, list(ids), meta)

    def _native(self, circuits):
        basis = devices.native_names(self.device) if self.device else None
        return [devices.to_braket_names(translate(qc, basis)) if basis else qc for qc in circuits]

    def submit(self, batch: CircuitBatch, scope: str = "") -> Handle:
        if self.mode != "qpu":
            job = f"braket-local-{uuid.uuid4().hex[:12]}"
            self._jobs[job] = self.evaluate(batch)
            return Handle(self.name, [job])
        return self.handle(batch, [self.submit_unit(batch, k, scope) for k in range(self.units(batch))])

    def _task(self, arn: str):
        from braket.aws import AwsQuantumTask

        return AwsQuantumTask(arn, aws_session=self.session(), poll_timeout_seconds=self._poll_timeout,
                              poll_interval_seconds=1, quiet=True)

    def status(self, handle: Handle) -> str:
        if self.mode != "qpu":
            return "done" if handle.job_ids[0] in self._jobs else "unknown"
        states = set()
        for arn in handle.job_ids:
            raw = self._task(arn).state()
            states.add(STATES.get(raw, "unrecognized"))
            if raw not in STATES:  # a state qssm does not know: shown, and timed out by the dispatcher
                handle.meta["provider_state"] = raw
        for s in ("failed", "cancelled", "unrecognized", "running", "queued"):
            if s in states:
                return s
        return "done"

    def result(self, handle: Handle, batch: CircuitBatch) -> BatchResult:
        if self.mode != "qpu":
            if handle.job_ids[0] not in self._jobs:
                raise QssmError(f"local Braket job {handle.job_ids[0]} is gone (another process); resubmit it")
            return self._jobs.pop(handle.job_ids[0])
        start = time.perf_counter()
        n_rows = len(batch.parameters)
        hists = [np.zeros((n, 2**c.num_clbits), dtype=np.int64) for n, c in zip(handle.meta["rows"], batch.circuits)]
        executables = [(i, r) for i, n in enumerate(handle.meta["rows"]) for r in range(n)]
        for arn, (a, b) in zip(handle.job_ids, handle.meta["plan"]):
            res = self._task(arn).result()
            if res is None:
                raise QssmError(f"Braket task {arn} ended {self._task(arn).state()} without a result; "
                                f"`qssm resume` creates it again")
            entries = [e for comp in res.entries for e in comp.entries] if handle.meta["program_sets"] else [res]
            if len(entries) != b - a:
                raise QssmError(f"Braket task {arn} returned {len(entries)} results for {b - a} executables; "
                                f"its result is kept at the provider, report this with the task ARN")
            for (i, r), e in zip(executables[a:b], entries):
                hists[i][r] = entry_histogram(e, handle.meta["labels"][i], batch.circuits[i].num_clbits)
        counts = tuple(broadcast(h, n_rows) for h in hists)
        counted = int(counts[0][0].sum()) if counts else handle.meta["shots"]
        return BatchResult(counts=counts, meta={"backend": self.name}, shots=counted, job_ids=tuple(handle.job_ids),
                           seconds=time.perf_counter() - start)

    def usage(self, handle: Handle) -> dict[str, float] | None:
        """Braket bills by task and shot, known from the handle: per-task fee x tasks + per-shot x shots."""
        if self.mode != "qpu":
            return {"qpu_seconds": 0.0, "cost_usd": 0.0}
        shots = sum(b - a for a, b in handle.meta["plan"]) * handle.meta["shots"]
        return {"qpu_seconds": 0.0, "cost_usd": devices.estimate_cost(self.device, len(handle.job_ids), shots)}

    def cancel(self, handle: Handle) -> None:
        if self.mode != "qpu":
            self._jobs.pop(handle.job_ids[0], None)
            return
        for arn in handle.job_ids:
            self._task(arn).cancel()

    def price(self) -> dict | None:
        return devices.price(self.device) if self.mode == "qpu" else None

    def estimate_cost(self, trips: list[list[CircuitBatch]]) -> dict[str, float]:
        if self.mode != "qpu":
            return {"usd": 0.0, "qpu_seconds": 0.0, "tasks": 0.0}
        tasks = shots = 0
        seconds = 0.0
        for b in (b for trip in trips for b in trip):  # a task never spans batches
            plan = self._plan(b)
            total = sum((hi - lo) * (b.shots or 0) for lo, hi in plan)
            tasks += len(plan)
            shots += total
            per_shot = b.seconds_per_shot
            seconds += total * per_shot
        return {"usd": devices.estimate_cost(self.device, tasks, shots), "qpu_seconds": seconds, "tasks": float(tasks),
                "capabilities": self.device_caps()["source"]}
