"""A stand-in for IBM's servers (the network layer only), for tests that cross processes.

Runtime local testing mode runs a primitive in-process and forgets the job when the process dies.
Real jobs live on IBM's servers: any process can poll or fetch them by id, or find them by tag.
FakeRuntimeService keeps that property: it is the runtime's own local service, and every job it
runs is persisted under `root` (result in the runtime's JSON encoding) before `_run` returns,
atomically, so a job either exists for every process or was never submitted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder
from qiskit_ibm_runtime.fake_provider import local_service

REAL_LOCAL_SERVICE = local_service.QiskitRuntimeLocalService


class StoredJob:
    def __init__(self, record: dict):
        self.record = record

    def job_id(self) -> str:
        return self.record["id"]

    def status(self) -> str:
        return self.record["status"]

    @property
    def creation_date(self) -> float:
        return self.record["created"]

    def result(self):
        return json.loads(self.record["result"], cls=RuntimeDecoder)

    def cancel(self) -> None:
        pass

    def usage(self) -> float:
        return 0.0


class FakeRuntimeService(REAL_LOCAL_SERVICE):
    root: Path = Path(".")

    def _run(self, program_id, inputs, options, calibration_id=None, dry_run=False):
        job = super()._run(program_id, inputs, options, calibration_id, dry_run)
        result = job.result()  # the "server" finishes the job before anyone can see it
        record = {"id": job.job_id(), "status": "DONE", "created": time.time(),
                  "tags": list(options.get("job_tags") or []), "result": json.dumps(result, cls=RuntimeEncoder)}
        jobs = self.root / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        tmp = jobs / f".{job.job_id()}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, jobs / f"{job.job_id()}.json")
        return job

    def job(self, job_id: str) -> StoredJob:
        path = self.root / "jobs" / f"{job_id}.json"
        if not path.exists():
            raise RuntimeError(f"Job not found: {job_id}")
        return StoredJob(json.loads(path.read_text()))

    def jobs(self, job_tags=None, limit=10, **_):
        out = []
        for path in sorted((self.root / "jobs").glob("*.json")) if (self.root / "jobs").exists() else []:
            record = json.loads(path.read_text())
            if not job_tags or set(job_tags) <= set(record["tags"]):
                out.append(StoredJob(record))
        return out[:limit]


def install(root: str | Path) -> type:
    """Route runtime local mode through a FakeRuntimeService persisted at `root`."""
    FakeRuntimeService.root = Path(root)
    local_service.QiskitRuntimeLocalService = FakeRuntimeService
    return FakeRuntimeService


def submissions(root: str | Path) -> int:
    jobs = Path(root) / "jobs"
    return len(list(jobs.glob("*.json"))) if jobs.exists() else 0
