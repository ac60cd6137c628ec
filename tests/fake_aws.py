"""The network layer of Amazon Braket, faked for tests (no machine here reaches AWS), failing the way
the service does."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import uuid
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
from botocore.exceptions import ClientError, ReadTimeoutError

from qssm.backends import devices

ACCOUNT = "123456789012"


@contextmanager
def seeded_simulator(seed: int):
    """The local simulator draws its shots from np.random.default_rng() unseeded: give each draw a
    generator spawned from `seed`, so the same task gives the same samples in every run."""
    real = np.random.default_rng
    draws = itertools.count()
    with mock.patch("numpy.random.default_rng", lambda *a: real([seed, next(draws)]) if not a else real(*a)):
        yield


def probabilities_only(result: dict, digits: int = 3) -> dict:
    """An executable result as IonQ returns it: measurementProbabilities (rounded, as the device
    reports them) instead of measurements; the SDK rebuilds round(p x shots) rows per outcome."""
    rows = np.asarray(result.pop("measurements"), dtype=int)
    keys, counts = np.unique(["".join(map(str, r)) for r in rows], return_counts=True)
    result["measurementProbabilities"] = {k: round(c / len(rows), digits) for k, c in zip(keys, counts)}
    return result


class FakeAwsSession:
    """The network layer of braket.aws.AwsSession, as AwsDevice and AwsQuantumTask call it:
    get_device, create_quantum_task, get_quantum_task, retrieve_s3_object_body,
    cancel_quantum_task, default_bucket (and .region, .braket_client.search_quantum_tasks).
    Tasks run on the local state-vector simulator at creation, seeded by their content (or stay
    QUEUED with hold=True); metadata and results live in `store`, a directory, so a second session
    over the same directory (another process) retrieves them.

    As the service does: a clientToken seen before returns the task it created (idempotency).
    Faults, by create call number in this session (1-based), from `faults` or the JSON in
    $QSSM_FAKE_AWS: "throttle" (ThrottlingException, nothing created), "fail" (InternalServerException,
    nothing created), "drop" (the task is created, the response lost: a read timeout), "kill" (the
    task is created, then the process SIGKILLs itself); "probabilities": true returns IonQ-style
    measurementProbabilities; "max_executables": n reports that program-set limit in GetDevice."""

    def __init__(self, store: Path, region: str, hold: bool = False, faults: dict | None = None):
        self.store, self.region, self.hold = Path(store), region, hold
        self.faults = faults if faults is not None else json.loads(os.environ.get("QSSM_FAKE_AWS") or "{}")
        self.created: list[dict] = []  # every create call that made a task
        self.calls = 0

    def get_device(self, arn):
        doc = dict(devices.load_device(arn))
        caps = json.loads(json.dumps(doc["deviceCapabilities"]))
        if self.faults.get("max_executables"):  # the device as it reports itself today, tighter than the snapshot
            caps["action"]["braket.ir.openqasm.program_set"]["maximumExecutables"] = self.faults["max_executables"]
        doc["deviceCapabilities"] = json.dumps(caps)  # a JSON string in the real API
        return doc

    def default_bucket(self) -> str:
        """The SDK's default: amazon-braket-<region>-<account>, created on demand."""
        return f"amazon-braket-{self.region}-{ACCOUNT}"

    def _meta(self, arn) -> Path:
        return self.store / (arn.rsplit("/", 1)[1] + ".meta.json")

    def _error(self, code: str, status: int, message: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "CreateQuantumTask")

    def create_quantum_task(self, **kwargs):
        from braket.default_simulator import StateVectorSimulator
        from braket.ir.openqasm import Program
        from braket.ir.openqasm.program_set_v1 import ProgramSet

        self.calls += 1
        k = self.calls
        if k in self.faults.get("throttle", ()):
            raise self._error("ThrottlingException", 429, "Rate exceeded")
        if k in self.faults.get("fail", ()):
            raise self._error("InternalServerException", 500, "An internal error occurred")
        token = kwargs.get("clientToken")
        if token:  # idempotency: the same token returns the task it made
            for path in self.store.glob("*.meta.json"):
                meta = json.loads(path.read_text())
                if meta.get("clientToken") == token:
                    return meta["quantumTaskArn"]
        region = kwargs["deviceArn"].split(":")[3]
        arn = f"arn:aws:braket:{region}:{ACCOUNT}:quantum-task/{uuid.uuid4()}"
        key = f"{kwargs['outputS3KeyPrefix']}/{arn.rsplit('/', 1)[1]}"
        action = json.loads(kwargs["action"])
        program = (ProgramSet if "programs" in action else Program).parse_obj(action)
        meta = {"quantumTaskArn": arn, "status": "QUEUED", "outputS3Bucket": kwargs["outputS3Bucket"],
                "outputS3Directory": key, "shots": kwargs["shots"], "deviceArn": kwargs["deviceArn"],
                "actionMetadata": {"actionType": action["braketSchemaHeader"]["name"]},
                "tags": kwargs.get("tags", {}), "clientToken": token}
        if not self.hold:
            # seeded by the content, its lines sorted: the SDK declares inputs in set order (per process)
            content = "".join(sorted(kwargs["action"].split("\\n"))) + str(kwargs["shots"])
            seed = int(hashlib.sha256(content.encode()).hexdigest()[:15], 16)
            with seeded_simulator(seed):
                result = json.loads(StateVectorSimulator().run(program, shots=kwargs["shots"]).json())
            if self.faults.get("probabilities"):
                for r in result.get("programResults", [result]):
                    for e in r.get("executableResults", [r]):
                        probabilities_only(e)
            (self.store / (key.replace("/", "_") + "_results.json")).write_text(json.dumps(result))
            meta["status"] = "COMPLETED"
        self._meta(arn).write_text(json.dumps(meta))
        self.created.append(kwargs)
        if k in self.faults.get("kill", ()):
            os.kill(os.getpid(), signal.SIGKILL)
        if k in self.faults.get("drop", ()):
            raise ReadTimeoutError(endpoint_url=f"https://braket.{region}.amazonaws.com/quantum-task")
        return arn

    @property
    def braket_client(self):
        """The boto3 Braket client call qssm's find_units makes, over the same store."""
        session = self

        class Client:
            def search_quantum_tasks(self, filters, nextToken=None, **_):
                device = next(f["values"][0] for f in filters if f["name"] == "deviceArn")
                tasks = [json.loads(p.read_text()) for p in sorted(session.store.glob("*.meta.json"))]
                return {"quantumTasks": [{"quantumTaskArn": t["quantumTaskArn"], "status": t["status"],
                                          "deviceArn": t["deviceArn"], "tags": t.get("tags", {})}
                                         for t in tasks if t["deviceArn"] == device]}

        return Client()

    def get_quantum_task(self, arn):
        return json.loads(self._meta(arn).read_text())

    def cancel_quantum_task(self, arn):
        meta = self.get_quantum_task(arn)
        meta["status"] = "CANCELLED"
        self._meta(arn).write_text(json.dumps(meta))

    def retrieve_s3_object_body(self, bucket, key):
        return (self.store / key.replace("/", "_")).read_text()


def tasks(store: Path) -> list[dict]:
    """Every task the fake service created (provider side)."""
    return [json.loads(p.read_text()) for p in Path(store).glob("*.meta.json")]
