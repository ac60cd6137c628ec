"""The network layer of Amazon Braket, faked for tests (no machine here reaches AWS)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from qssm.backends import devices


class FakeAwsSession:
    """The network layer of braket.aws.AwsSession, as AwsDevice and AwsQuantumTask call it:
    get_device, create_quantum_task, get_quantum_task, retrieve_s3_object_body,
    cancel_quantum_task (and .region). Tasks run on the local state-vector simulator at creation
    (or stay QUEUED with hold=True); metadata and results live in `store`, a directory, so a
    second session over the same directory (another process) retrieves them."""

    def __init__(self, store: Path, region: str, hold: bool = False):
        self.store, self.region, self.hold = Path(store), region, hold
        self.created: list[dict] = []

    def get_device(self, arn):
        doc = dict(devices.load_device(arn))
        doc["deviceCapabilities"] = json.dumps(doc["deviceCapabilities"])  # a JSON string in the real API
        return doc

    def _meta(self, arn) -> Path:
        return self.store / (arn.rsplit("/", 1)[1] + ".meta.json")

    def create_quantum_task(self, **kwargs):
        from braket.default_simulator import StateVectorSimulator
        from braket.ir.openqasm import Program
        from braket.ir.openqasm.program_set_v1 import ProgramSet

        self.created.append(kwargs)
        region = kwargs["deviceArn"].split(":")[3]
        arn = f"arn:aws:braket:{region}:123456789012:quantum-task/{uuid.uuid4()}"
        key = f"{kwargs['outputS3KeyPrefix']}/{arn.rsplit('/', 1)[1]}"
        action = json.loads(kwargs["action"])
        program = (ProgramSet if "programs" in action else Program).parse_obj(action)
        meta = {"quantumTaskArn": arn, "status": "QUEUED", "outputS3Bucket": kwargs["outputS3Bucket"],
                "outputS3Directory": key, "shots": kwargs["shots"], "deviceArn": kwargs["deviceArn"],
                "actionMetadata": {"actionType": action["braketSchemaHeader"]["name"]},
                "tags": kwargs.get("tags", {})}
        if not self.hold:
            result = StateVectorSimulator().run(program, shots=kwargs["shots"])
            (self.store / (key.replace("/", "_") + "_results.json")).write_text(result.json())
            meta["status"] = "COMPLETED"
        self._meta(arn).write_text(json.dumps(meta))
        return arn

    @property
    def braket_client(self):
        """The two boto3 Braket client calls qssm's find() makes, over the same store."""
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
