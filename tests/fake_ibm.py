"""A stand-in for IBM's servers (the network layer only), for tests that cross processes and for
the failure paths of real QPU jobs.

Runtime local testing mode runs a primitive in-process and forgets the job when the process dies.
Real jobs live on IBM's servers: any process can poll or fetch them by id, or find them by tag.
FakeRuntimeService keeps that property: it is the runtime's own local service, and every job it
runs is persisted under `root` (result in the runtime's JSON encoding) before `_run` returns,
atomically, so a job either exists for every process or was never submitted.

It also fails the way the service does, by a script (`FakeRuntimeService.script`, or the JSON in
$QSSM_FAKE_IBM for a driver process):
    states     the states a job reports, one per status() call, the last repeated
               (e.g. ["QUEUED", "RUNNING", "DONE"], ["ERROR"], ["CANCELLED"], ["PAUSED"])
    usage      {"pending": n, "fail": m, "seconds": s}: metrics() fails m times, then reports the
               usage pending n times (job.usage() says 0 then, as the real one does), then s seconds
    throttle   create numbers (1-based, per process) refused with 429 before anything is created
    drop       create numbers whose job is created but whose response is lost (a read timeout)
    kill       create numbers after which the process SIGKILLs itself (the job exists)
    plan       the instance's plan ("open", "premium"): instances() reports it
and, as the server does, twirling with "auto" randomizations rounds a PUB's shots up to
num_randomizations x shots_per_randomization (local testing mode ignores twirling).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import requests
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder
from qiskit_ibm_runtime import session as runtime_session
from qiskit_ibm_runtime.api.exceptions import RequestsApiError
from qiskit_ibm_runtime.exceptions import IBMRuntimeError
from qiskit_ibm_runtime.fake_provider import local_service

from qssm.backends.fake_devices import fake_backend

REAL_LOCAL_SERVICE = local_service.QiskitRuntimeLocalService


def _write(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


class StoredJob:
    """A job as the service holds it: every call reads the server's record afresh."""

    def __init__(self, path: Path):
        self.path = path
        self.record = json.loads(path.read_text())

    def _reload(self) -> dict:
        self.record = json.loads(self.path.read_text())
        return self.record

    def job_id(self) -> str:
        return self.record["id"]

    @property
    def tags(self) -> list[str]:
        return list(self.record["tags"])

    @property
    def creation_date(self) -> float:
        return self.record["created"]

    def status(self) -> str:
        r = self._reload()
        states = r.get("states") or ["DONE"]
        state = states[min(r.get("polls", 0), len(states) - 1)]
        r["polls"] = r.get("polls", 0) + 1
        _write(self.path, r)
        return state

    def error_message(self) -> str | None:
        state = (self._reload().get("states") or ["DONE"])[-1]
        return f"Error code 1517; job {self.job_id()} {state.lower()} on the fake server" if state == "ERROR" else None

    def result(self):
        return json.loads(self.record["result"], cls=RuntimeDecoder)

    def cancel(self) -> None:
        r = self._reload()
        r["states"], r["polls"] = ["CANCELLED"], 0
        _write(self.path, r)

    def metrics(self) -> dict:
        r = self._reload()
        usage = r.get("usage") or {}
        if usage.get("fail", 0) > 0:
            usage["fail"] -= 1
            _write(self.path, r)
            raise IBMRuntimeError("Failed to get job metadata: '503 Server Error: Service Unavailable'")
        if usage.get("pending", 0) > 0:
            usage["pending"] -= 1
            _write(self.path, r)
            return {"usage": {"status": "pending", "qpu_charge_time_seconds": None}}
        return {"usage": {"status": "completed", "qpu_charge_time_seconds": usage.get("seconds", 0.0)}}

    def usage(self) -> float:
        u = self.metrics()["usage"]
        return 0 if u["status"] == "pending" else u["qpu_charge_time_seconds"]


def _twirled(pubs, options: dict) -> list:
    """The server's shot rounding under twirling (TwirlingOptions docs): "auto" shots per
    randomization max(64, ceil(shots / 32)), randomizations ceil(shots / that)."""
    tw = (options or {}).get("twirling") or {}
    if not (tw.get("enable_gates") or tw.get("enable_measure")):
        return pubs
    out = []
    for pub in pubs:
        pub = SamplerPub.coerce(pub)
        n, per = tw.get("num_randomizations"), tw.get("shots_per_randomization")
        n, per = (n if isinstance(n, int) else None), (per if isinstance(per, int) else None)
        if n is None and per is None:
            per = max(64, math.ceil(pub.shots / 32))
        if n is None:
            n = math.ceil(pub.shots / per)
        if per is None:
            per = math.ceil(pub.shots / n)
        out.append(SamplerPub(pub.circuit, pub.parameter_values, n * per))
    return out


class FakeRuntimeService(REAL_LOCAL_SERVICE):
    root: Path = Path(".")
    script: dict = {}
    creates = 0  # create calls in this process (the script's create numbers count these)

    @classmethod
    def _script(cls) -> dict:
        return cls.script or json.loads(os.environ.get("QSSM_FAKE_IBM") or "{}")

    def _run(self, program_id, inputs, options, calibration_id=None, dry_run=False):
        script = self._script()
        FakeRuntimeService.creates += 1
        k = FakeRuntimeService.creates
        if k in script.get("throttle", ()):
            raise RequestsApiError("'429 Client Error: Too Many Requests for url: .../jobs'", status_code=429)
        if program_id == "sampler":
            inputs = dict(inputs, pubs=_twirled(inputs["pubs"], inputs.get("options")))
        job = super()._run(program_id, inputs, options, calibration_id, dry_run)
        result = job.result()  # the "server" finishes the job before anyone can see it
        record = {"id": job.job_id(), "created": time.time(), "tags": list(options.get("job_tags") or []),
                  "result": json.dumps(result, cls=RuntimeEncoder), "states": script.get("states", ["DONE"]),
                  "polls": 0, "usage": dict(script.get("usage", {}))}
        jobs = self.root / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        _write(jobs / f"{job.job_id()}.json", record)
        if k in script.get("kill", ()):
            os.kill(os.getpid(), signal.SIGKILL)
        if k in script.get("drop", ()):
            raise requests.exceptions.ReadTimeout("HTTPSConnectionPool: Read timed out. (read timeout=60)")
        return StoredJob(jobs / f"{job.job_id()}.json")

    def job(self, job_id: str) -> StoredJob:
        path = self.root / "jobs" / f"{job_id}.json"
        if not path.exists():
            raise IBMRuntimeError(f"Failed to retrieve job: '404 Client Error: Job not found: {job_id}'")
        return StoredJob(path)

    def jobs(self, limit=10, skip=0, backend_name=None, pending=None, program_id=None, instance=None, job_tags=None,
             session_id=None, created_after=None, created_before=None, descending=True):
        """The service's filter: jobs carrying every one of `job_tags`, by creation date."""
        folder = self.root / "jobs"
        found = [StoredJob(p) for p in folder.glob("*.json")] if folder.exists() else []
        found = [j for j in found if set(job_tags or ()) <= set(j.tags)]
        found.sort(key=lambda j: j.creation_date, reverse=descending)
        return found[skip:None if limit is None else skip + limit]

    def backend(self, name=None, instance=None):
        """A QPU name (ibm_manila) is served by its snapshot, run in local testing mode."""
        return fake_backend(name.replace("ibm_", "fake_", 1)) if name and name.startswith("ibm_") else super().backend(name)

    def active_instance(self) -> str:
        return "crn:v1:fake:instance"

    def instances(self) -> list[dict]:
        return [{"crn": "crn:v1:fake:instance", "plan": self._script().get("plan", "premium"), "name": "fake"}]


def install(root: str | Path) -> type:
    """Route runtime local mode through a FakeRuntimeService persisted at `root`."""
    FakeRuntimeService.root = Path(root)
    local_service.QiskitRuntimeLocalService = FakeRuntimeService
    runtime_session.QiskitRuntimeLocalService = FakeRuntimeService  # a Session / Batch over a snapshot
    return FakeRuntimeService


def records(root: str | Path) -> list[dict]:
    jobs = Path(root) / "jobs"
    return [json.loads(p.read_text()) for p in jobs.glob("*.json")] if jobs.exists() else []


def submissions(root: str | Path) -> int:
    return len(records(root))
