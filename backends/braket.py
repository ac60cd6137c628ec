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

QPUs: where the device advertises program sets, a batch's executions (measured circuit x binding)
fill program-set tasks up to the device's maximumExecutables / maximumTotalShots, several circuits
per task (each task costs a fee); else one task per circuit and binding.
Task ARNs go in Handle.job_ids; `result` rebuilds tasks from ARNs, so another process can
collect them. Circuits are submitted in verbatim boxes on physical qubits: the pipeline has
already mapped them to the device's native gates and connectivity.
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
from qssm.backends.base import Backend, Capabilities, Handle
from qssm.backends.sampling import broadcast, histograms
from qssm.errors import QssmError
from qssm.types import BatchResult, CircuitBatch

DEFAULT_DM_DEVICE = "iqm_garnet"
DEFAULT_S3 = "amazon-braket-qssm/tasks"  # bucket/prefix when QSSM_BRAKET_S3 is unset
STATES = {"CREATED": "queued", "QUEUED": "queued", "RUNNING": "running", "COMPLETED": "done",
          "FAILED": "failed", "CANCELLING": "cancelled", "CANCELLED": "cancelled"}


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
        self.max_shots = devices.max_shots(self.device)
        self.arn = devices.load_device(self.device)["deviceArn"]

    @property
    def capabilities(self) -> Capabilities:
        qpu = self.mode == "qpu"
        return Capabilities(simulator=not qpu, exact=not qpu, deterministic=not qpu, find_by_tag=qpu,
                            mid_circuit_measurement=False, max_shots=self.max_shots,
                            max_qubits=None if self.target is None else self.target.num_qubits)

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

    def _s3(self) -> tuple[str, str]:
        dest = os.environ.get("QSSM_BRAKET_S3", DEFAULT_S3).strip("/")
        bucket, _, prefix = dest.partition("/")
        return bucket, prefix or "tasks"

    def _plan(self, batch: CircuitBatch) -> list[list[tuple[int, int, int]]]:
        """Per task, its (circuit, first row, end row) segments. Program sets: the batch's executions
        (circuit x binding) in order, as many per task as the device takes (maximumExecutables,
        maximumTotalShots), circuits sharing a task, since each task costs its fee. Else one task
        per circuit and binding."""
        n_rows = len(batch.parameters)
        limits = devices.program_set_limits(self.device)
        rows = [n_rows if c.num_parameters else 1 for c in batch.circuits]
        if limits is None:
            return [[(i, r, r + 1)] for i, n in enumerate(rows) for r in range(n)]
        per = max(1, min(limits[0], limits[1] // max(1, batch.shots or 1)))
        tasks: list[list[tuple[int, int, int]]] = [[]]
        room = per
        for i, n in enumerate(rows):
            r = 0
            while r < n:
                if room == 0:
                    tasks.append([])
                    room = per
                take = min(room, n - r)
                tasks[-1].append((i, r, r + take))
                r, room = r + take, room - take
        return tasks if tasks[0] else []

    def find(self, batch: CircuitBatch) -> Handle | None:
        """Tasks a previous process created for this batch but never recorded (it died between
        CreateQuantumTask and the job store's write): SearchQuantumTasks on the device over the
        last week, matched by the batch tag. Missing tasks of a partly created plan are created."""
        if self.mode != "qpu":
            return None

        client = self.session().braket_client
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
        filters = [{"name": "deviceArn", "operator": "EQUAL", "values": [self.arn]},
                   {"name": "createdAt", "operator": "GTE", "values": [since]}]
        tag = batch.key[:32]
        found: dict[int, str] = {}
        token = None
        while True:
            page = client.search_quantum_tasks(filters=filters, **({"nextToken": token} if token else {}))
            for t in page.get("quantumTasks", []):
                tags = t.get("tags") or {}
                if tags.get("qssm-batch") == tag and t.get("status") not in ("FAILED", "CANCELLED", "CANCELLING"):
                    found.setdefault(int(tags["qssm-task"]), t["quantumTaskArn"])
            token = page.get("nextToken")
            if not token:
                break
        if not found:
            return None
        n_tasks = len(self._plan(batch))
        return self.submit(batch, known=[found.get(i) for i in range(n_tasks)])

    def submit(self, batch: CircuitBatch, known: list[str | None] | None = None) -> Handle:
        if self.mode != "qpu":
            job = f"braket-local-{uuid.uuid4().hex[:12]}"
            self._jobs[job] = self.evaluate(batch)
            return Handle(self.name, [job])
        if not batch.sampled:
            raise QssmError(f"{self.name} samples measured circuits: set [backend] shots > 0")
        from braket.aws import AwsDevice
        from braket.program_sets import CircuitBinding, ParameterSets, ProgramSet

        device = AwsDevice(self.arn, aws_session=self.session())
        labels = devices.qubit_labels(self.device)
        circuits = self._braket_circuits(batch.circuits, labels, verbatim=True)
        plan = self._plan(batch)
        program_sets = devices.program_set_limits(self.device) is not None
        found = dict(enumerate(known or []))  # tasks a crashed process already created (see find)
        arns = []
        for t, segments in enumerate(plan):
            if found.get(t):
                arns.append(found[t])
                continue
            # tags let a resumed process find tasks whose ARNs it never recorded (see find)
            tags = {"qssm-batch": batch.key[:32], "qssm-task": str(t)}
            if program_sets:
                programs = []
                for i, a, b in segments:  # entries come back in this order (see result)
                    names, rows = param_names(batch.circuits[i]), batch.rows(i)
                    inputs = ParameterSets({k: rows[a:b, j].tolist() for j, k in enumerate(names)}) if names else None
                    programs += [CircuitBinding(circuits[i][0], input_sets=inputs)] if names else [circuits[i][0]] * (b - a)
                spec = ProgramSet(programs, shots_per_executable=batch.shots)
                task = device.run(spec, self._s3(), shots=batch.shots * sum(b - a for _, a, b in segments), tags=tags)
            else:
                (i, a, _), = segments
                names = param_names(batch.circuits[i])
                task = device.run(circuits[i][0], self._s3(), shots=batch.shots,
                                  inputs=dict(zip(names, batch.rows(i)[a].tolist())), tags=tags)
            arns.append(task.id)
        meta = {"device": self.device, "plan": [[list(seg) for seg in task] for task in plan], "program_sets": program_sets,
                "labels": [c[1] for c in circuits], "shots": batch.shots}
        return Handle(self.name, arns, meta)

    def _task(self, arn: str):
        from braket.aws import AwsQuantumTask

        return AwsQuantumTask(arn, aws_session=self.session(), poll_timeout_seconds=self._poll_timeout,
                              poll_interval_seconds=1, quiet=True)

    def status(self, handle: Handle) -> str:
        if self.mode != "qpu":
            return "done" if handle.job_ids[0] in self._jobs else "unknown"
        states = {STATES.get(self._task(arn).state(), "unknown") for arn in handle.job_ids}
        for s in ("failed", "cancelled", "unknown", "running", "queued"):
            if s in states:
                return s
        return "done"

    def result(self, handle: Handle, batch: CircuitBatch) -> BatchResult:
        if self.mode != "qpu":
            if handle.job_ids[0] not in self._jobs:
                raise QssmError(f"local Braket job {handle.job_ids[0]} is gone (another process); resubmit it")
            return self._jobs.pop(handle.job_ids[0])
        start = time.perf_counter()
        n_rows, shots = len(batch.parameters), handle.meta["shots"]
        outcomes = [np.zeros((n_rows if c.num_parameters else 1, shots), dtype=np.int64) for c in batch.circuits]
        for arn, segments in zip(handle.job_ids, handle.meta["plan"]):
            res = self._task(arn).result()
            if res is None:
                raise QssmError(f"Braket task {arn} ended {self._task(arn).state()} without a result; "
                                "resubmit the batch (qssm retry)")
            if isinstance(segments[0], int):  # a handle recorded when a task held one circuit
                segments = [segments]
            entries = iter([e for comp in res.entries for e in comp.entries] if handle.meta["program_sets"] else [res])
            for i, a, b in segments:
                for r in range(a, b):
                    e = next(entries)
                    outcomes[i][r] = outcomes_from(e.measurements, e.measured_qubits, handle.meta["labels"][i])
        counts = tuple(broadcast(histograms(o, c.num_clbits), n_rows) for o, c in zip(outcomes, batch.circuits))
        cost = self.estimate_cost([batch])["usd"]
        return BatchResult(counts=counts, meta={"backend": self.name}, shots=shots, job_ids=tuple(handle.job_ids),
                           cost_usd=cost, seconds=time.perf_counter() - start)

    def cancel(self, handle: Handle) -> None:
        if self.mode != "qpu":
            self._jobs.pop(handle.job_ids[0], None)
            return
        for arn in handle.job_ids:
            self._task(arn).cancel()

    def price(self) -> dict | None:
        return devices.price(self.device) if self.mode == "qpu" else None

    def estimate_cost(self, batches: list[CircuitBatch]) -> dict[str, float]:
        if self.mode != "qpu":
            return {"usd": 0.0, "qpu_seconds": 0.0, "tasks": 0.0}
        tasks = shots = 0
        seconds = 0.0
        for b in batches:
            plan = self._plan(b)
            total = sum((hi - lo) * (b.shots or 0) for task in plan for _, lo, hi in task)
            tasks += len(plan)
            shots += total
            per_shot = b.seconds_per_shot
            seconds += total * per_shot
        return {"usd": devices.estimate_cost(self.device, tasks, shots), "qpu_seconds": seconds, "tasks": float(tasks)}
