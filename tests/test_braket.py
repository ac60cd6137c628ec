"""braket backend: LocalSimulator (sv exact and sampled, dm with device noise), snapshot targets,
and the QPU path through the real SDK (AwsDevice / AwsQuantumTask) over a fake network layer."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector

from qssm.app.validate import validate
from qssm.backends import devices
from qssm.backends.base import Handle
from qssm.backends.braket import BraketBackend
from qssm.errors import QssmError
from qssm.jobs.spec import BackendSpec, JobSpec
from qssm.pipeline.measure import measurement_groups
from qssm.types import Template

sys.path.insert(0, str(Path(__file__).parent))
import fake_aws  # noqa: E402
from fake_aws import FakeAwsSession  # noqa: E402
from prepared import Prepared  # noqa: E402

LABELS = ("IIIZ", "IIZZ", "XIII", "IYIX", "ZIZI")


def template(n=4, seed=0) -> Template:
    rng = np.random.default_rng(seed)
    x = ParameterVector("x", n)
    qc = QuantumCircuit(n)
    for i in range(n):
        qc.rx(x[i], i)
    for i in range(n):
        qc.ry(float(rng.uniform(-2, 2)), i)
    for i in range(n - 1):
        qc.cz(i, i + 1)
    for i in range(n):
        qc.rz(float(rng.uniform(-2, 2)), i)
    return Template("t", qc, LABELS[: 5] if n == 4 else ("Z" + "I" * (n - 1),), f"test-{n}-{seed}")


def ideal(t: Template, rows) -> np.ndarray:
    return np.array([[Statevector(t.circuit.assign_parameters(r)).expectation_value(SparsePauliOp(o)).real
                      for o in t.observables] for r in rows])


def ideal_planned(t, p: Prepared) -> np.ndarray:
    return ideal(t, p.planned.parameters)


ROWS = np.random.default_rng(1).uniform(-3, 3, (4, 4))


def test_local_exact_equals_statevector():
    t = template()
    b = BraketBackend("braket:local")
    assert b.target is None and b.capabilities.exact and b.capabilities.deterministic
    p = Prepared(t, b, ROWS, None)
    r = p.run()
    assert np.abs(r.values - ideal_planned(t, p)).max() < 1e-8
    assert not r.stderr.any()


def test_local_shots_within_stderr():
    t = template()
    b = BraketBackend("braket:local")
    p = Prepared(t, b, ROWS, 3000)
    r = p.run()
    ref = ideal_planned(t, p)
    assert r.meta["measurement_groups"] == len(measurement_groups([SparsePauliOp(o) for o in LABELS])) >= 2 and r.shots == 3000
    assert (np.abs(r.values - ref) < 4 * r.stderr + 1e-9).all()


@pytest.mark.parametrize("device", devices.device_names())
def test_targets_native_gates_and_connectivity(device):
    t = template()
    b = BraketBackend(f"braket:local_dm:{device}")
    cb = Prepared(t, b, ROWS[:1], None).batch
    native = set(devices.native_names(device))
    ops = set(cb.circuit.count_ops()) - {"barrier"}
    assert ops <= native, ops - native
    edges = set(devices.edges(device))
    for inst in cb.circuit.data:
        if inst.operation.num_qubits == 2:
            assert tuple(cb.circuit.find_bit(q).index for q in inst.qubits) in edges
    metrics = cb.meta["metrics"]
    assert 0.5 < metrics["success_probability"] < 0.999 and metrics["duration_us"] > 0
    assert devices.capabilities(device).paradigm.qubitCount == b.target.num_qubits


def test_local_dm_noise_shrinks_values_and_shows_readout():
    t = template()
    b = BraketBackend("braket:local_dm")  # iqm_garnet
    p = Prepared(t, b, ROWS, None)
    exact = p.run().values
    ref = ideal_planned(t, p)
    big = np.abs(ref) > 0.2
    assert (np.abs(exact[big]) < np.abs(ref[big])).all()  # depolarizing + readout pull toward 0
    assert (np.abs(exact - ref) < 0.2).all()
    sampled = Prepared(t, b, ROWS, 4000).run()
    assert (np.abs(sampled.values - exact) < 4 * sampled.stderr + 1e-9).all()
    # a |0> qubit under rz(0): IQM has no virtual rz, so the ISA circuit is k PRx gates, each followed
    # by depolarizing p = 1.5 e_1q (Bloch vector x (1 - 4p/3)), then a bit flip e_ro before the
    # measurement: <Z> = (1 - 2 e_ro) (1 - 4p/3)^k, below 1 by many standard errors
    qc = QuantumCircuit(1)
    qc.rz(ParameterVector("x", 1)[0], 0)
    idle = Template("idle", qc, ("Z",), "idle")
    p = Prepared(idle, b, np.zeros((1, 1)), 20000)
    r = p.run()
    [q] = p.batch.meta["layout"]
    k = sum(1 for inst in p.batch.circuits[0].data if inst.operation.name == "r")
    e_ro, e_1q = devices.readout_errors("iqm_garnet", [q])[0], devices.errors("iqm_garnet")["1q"][q]
    expected = (1 - 2 * e_ro) * (1 - 4 * 1.5 * e_1q / 3) ** k
    assert k >= 1 and e_ro > 0 and e_1q > 0
    assert 1 - r.values[0, 0] > 5 * r.stderr[0, 0]
    assert abs(r.values[0, 0] - expected) < 4 * r.stderr[0, 0] + 1e-9
    assert abs(Prepared(idle, b, np.zeros((1, 1)), None).run().values[0, 0] - expected) < 1e-9


@pytest.mark.parametrize("device,limits", [("iqm_garnet", None), ("ionq_forte", None), ("iqm_garnet", (4, 10**6)),
                                           ("rigetti_ankaa3", "none")])
def test_qpu_through_fake_session(tmp_path, device, limits, monkeypatch):
    """Program sets on every device that has them, cut by ProgramSet.split at the device's limits
    (the snapshot's, or tighter ones), one task per circuit and binding on a device without them."""
    monkeypatch.setenv("QSSM_BRAKET_S3", "my-bucket/qssm")
    region = devices.load_device(device)["deviceArn"].split(":")[3]
    t, rows, shots = template(), ROWS[:3], 800
    b = BraketBackend(f"braket:{device}", aws_session=FakeAwsSession(tmp_path, region))
    assert not b.capabilities.exact and b.capabilities.max_shots == devices.max_shots(device)
    assert b.device_caps()["source"] == "device.properties (live)"  # credentials: GetDevice, not the snapshot
    if limits is not None:
        b._caps = dict(b.device_caps(), program_set=None if limits == "none" else limits)
    p = Prepared(t, b, rows, shots)
    cb = p.batch
    est = b.estimate_cost([[cb]])
    handle = b.submit(cb)
    stored = json.loads(json.dumps(dataclasses.asdict(handle)))  # what the job store persists
    groups = len(measurement_groups(p.planned.observables))
    executables = groups * len(rows)
    assert len(cb.circuits) == groups >= 2
    per = {None: 100, "none": 1}.get(limits, 4)
    tasks = -(-executables // per)  # one program-set task holds every circuit while the limits allow
    assert len(stored["job_ids"]) == tasks and all(a.startswith("arn:aws:braket:") for a in stored["job_ids"])
    created = b._aws_session.created
    assert len(created) == tasks and len({c["clientToken"] for c in created}) == tasks
    assert {c["outputS3Bucket"] for c in created} == {"my-bucket"} and created[0]["outputS3KeyPrefix"] == "qssm"
    assert "verbatim" in json.loads(created[0]["action"]).get("source", created[0]["action"])
    # a new backend instance (another process) with only the handle
    other = BraketBackend(f"braket:{device}", aws_session=FakeAwsSession(tmp_path, region))
    h2 = Handle(**stored)
    assert other.status(h2) == "done"
    r = p.values(other.result(h2, cb))
    assert list(r.job_ids) == stored["job_ids"] and r.shots == shots
    assert (np.abs(r.values - ideal_planned(t, p)) < 4 * r.stderr + 1e-9).all()
    price = devices.load_device(device)["pricing"]
    usd = tasks * price["per_task_usd"] + executables * shots * price["per_shot_usd"]
    assert est["tasks"] == tasks and est["usd"] == pytest.approx(usd) and other.usage(h2)["cost_usd"] == pytest.approx(usd)


def test_ionq_probabilities_with_shots_off_by_one(tmp_path, monkeypatch):
    """IonQ returns measurement probabilities only; the SDK rebuilds round(p x shots) rows per
    outcome, so an entry can hold a shot more or fewer than asked for. Each becomes a histogram of
    what it holds and is normalised by it (a fixed (rows, shots) array failed to assign, after payment)."""
    monkeypatch.setenv("QSSM_BRAKET_S3", "my-bucket/qssm")
    session = FakeAwsSession(tmp_path, "us-east-1", faults={"probabilities": True})
    b = BraketBackend("braket:ionq_forte", aws_session=session)
    t, rows, shots = template(), ROWS, 2999  # p to 3 digits: round(p x shots) is off by up to 1.5 per outcome
    p = Prepared(t, b, rows, shots)
    handle = b.submit(p.batch)
    raw = b.result(handle, p.batch)
    totals = np.concatenate([c.sum(axis=1) for c in raw.counts])
    width = p.batch.circuits[0].num_clbits  # each outcome's rounding is off by at most 0.0005 x shots + 0.5
    assert (np.abs(totals - shots) <= 2**width * (0.0005 * shots + 0.5)).all() and (totals != shots).any(), totals
    r = p.values(raw)
    assert (np.abs(r.values - ideal_planned(t, p)) < 4 * r.stderr + 0.01).all()


def test_default_s3_bucket_is_the_sdks(tmp_path, monkeypatch):
    """QSSM_BRAKET_S3 unset: no destination is passed and the SDK's default bucket
    (amazon-braket-<region>-<account>) takes the results; a fixed bucket name only one AWS account
    in the world could own made every other account's CreateQuantumTask fail."""
    monkeypatch.delenv("QSSM_BRAKET_S3", raising=False)
    session = FakeAwsSession(tmp_path, "eu-north-1")
    b = BraketBackend("braket:iqm_garnet", aws_session=session)
    p = Prepared(template(), b, ROWS[:2], 100)
    r = p.values(b.result(b.submit(p.batch), p.batch))
    assert {c["outputS3Bucket"] for c in session.created} == {session.default_bucket()}
    assert session.default_bucket() == "amazon-braket-eu-north-1-123456789012" and r.values.shape == (2, 5)
    assert session.created[0]["outputS3KeyPrefix"] == "tasks"


def test_capabilities_from_the_snapshot_say_so_without_credentials(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    b = BraketBackend("braket:ionq_forte")
    est = b.estimate_cost([[Prepared(template(), b, ROWS[:2], 100).batch]])
    assert est["capabilities"] == f"snapshot of {devices.calibration('ionq_forte')} (no AWS credentials: not live)"
    assert devices.program_set_limits("ionq_forte") is not None and est["tasks"] == 1  # one program set, not 2 x groups


def test_qpu_cancel_and_limits(tmp_path):
    session = FakeAwsSession(tmp_path, "eu-north-1", hold=True)
    b = BraketBackend("braket:arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet", aws_session=session)
    assert b.device == "iqm_garnet"
    cb = Prepared(template(), b, ROWS[:2], 100).batch
    h = b.submit(cb)
    assert b.status(h) == "queued"
    b.cancel(h)
    assert b.status(h) == "cancelled"
    with pytest.raises(QssmError, match="without a result"):
        BraketBackend("braket:iqm_garnet", aws_session=session).result(h, cb)
    too_many = devices.max_shots("iqm_garnet") + 1
    with pytest.raises(QssmError, match=f"limit of {too_many - 1}"):
        validate(JobSpec("", backend=BackendSpec(name=b.name, shots=too_many)), b)
    with pytest.raises(QssmError, match="shots > 0"):
        validate(JobSpec("", backend=BackendSpec(name=b.name, shots=0)), b)
    with pytest.raises(QssmError, match="unknown Braket device"):
        BraketBackend("braket:nowhere")


def test_missing_credentials_one_line(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    b = BraketBackend("braket:rigetti_ankaa3")
    cb = Prepared(template(), b, ROWS[:1], 10).batch
    for attempt in (lambda: b.submit(cb), lambda: validate(JobSpec("", backend=BackendSpec(name=b.name, shots=10)), b)):
        with pytest.raises(QssmError) as err:  # refused at the preflight already, and at submission
            attempt()
        msg = str(err.value)
        assert "\n" not in msg and "AWS_ACCESS_KEY_ID" in msg and "AWS_PROFILE" in msg


def test_find_units_recovers_tasks_whose_arns_were_never_recorded(tmp_path):
    """A process that died between CreateQuantumTask and the store's write: a new process finds the
    tasks by their identity tags (SearchQuantumTasks), skips failed ones, and creates only the
    missing units; a create retried with the unit's clientToken returns the task it made."""
    device = "ionq_forte"
    region = devices.load_device(device)["deviceArn"].split(":")[3]
    t, rows = template(), ROWS[:3]
    b = BraketBackend(f"braket:{device}", aws_session=FakeAwsSession(tmp_path, region))
    b._caps = dict(b.device_caps(), program_set=(1, 10**6))  # a task per executable
    p = Prepared(t, b, rows, 300)
    cb = p.batch
    lost = b.submit(cb, scope="job-1")  # the handle dies with the process
    n = len(lost.job_ids)
    assert n == b.units(cb) >= 4 and len(fake_aws.tasks(tmp_path)) == n
    assert b.submit_unit(cb, 1, "job-1") == lost.job_ids[1] and len(fake_aws.tasks(tmp_path)) == n  # clientToken
    other_batch = Prepared(template(seed=5), b, rows, 300).batch
    assert b.find_units(other_batch, "job-1") == {} and b.find_units(cb, "job-2") == {}
    # the crash came mid-plan: the last task was never created, and the provider failed the third
    (tmp_path / (lost.job_ids[-1].rsplit("/", 1)[1] + ".meta.json")).unlink()
    third = tmp_path / (lost.job_ids[2].rsplit("/", 1)[1] + ".meta.json")
    third.write_text(json.dumps(dict(json.loads(third.read_text()), status="FAILED")))
    fresh = BraketBackend(f"braket:{device}", aws_session=FakeAwsSession(tmp_path, region))
    fresh._caps = b._caps
    found = fresh.find_units(cb, "job-1")
    assert found == {k: a for k, a in enumerate(lost.job_ids[:-1]) if k != 2}
    ids = [found.get(k) or fresh.submit_unit(cb, k, "job-1") for k in range(n)]
    assert len(fresh._aws_session.created) == 2 and ids[2] != lost.job_ids[2]  # a fresh token for the failed one
    assert fresh._aws_session.created[0]["clientToken"].endswith("-r1")
    r = p.values(fresh.result(fresh.handle(cb, ids), cb))
    assert (np.abs(r.values - ideal_planned(t, p)) < 4 * r.stderr + 1e-9).all()
