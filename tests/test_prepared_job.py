"""One prepared job (qssm/app/job.py): a durable job reads its checkpoint once, and the store keeps
the split that was resolved and priced, not the spec's "auto"."""

from __future__ import annotations

from qssm.app.durable import create_job, run_job
from qssm.app.job import prepare
from qssm.jobs.spec import parse_spec
from qssm.jobs.store import JobStore
from qssm.models import checkpoint


def test_a_durable_job_reads_its_checkpoint_once_and_stores_the_resolved_split(tmp_path, monkeypatch):
    reads = []
    real = checkpoint.read
    monkeypatch.setattr(checkpoint, "read", lambda path: reads.append(path) or real(path))
    spec = parse_spec({"model": {"checkpoint": "checkpoints/qlam-digits-chain.safetensors"}, "data": {"n": 2},
                       "backend": {"name": "dm:fake_fez", "shots": 200}, "split": {"segment": "auto"}}, "spec.toml")
    store = JobStore(tmp_path / "jobs.sqlite")
    job = prepare(spec)  # as `qssm submit --wait` does: priced, stored and run from one Job
    job_id, estimate = create_job(store, job)
    report = run_job(store, job_id, prepared=job)
    assert len(reads) == 1
    stored = store.job_spec(job_id)
    assert isinstance(stored.split.segment, int) and stored.split.segment == job.spec.split.segment
    assert stored.split.obp_steps == job.spec.split.obp_steps and not stored.split.auto
    assert report["split_choice"]["chosen"]["segment"] == stored.split.segment
    assert estimate["executions"] == report["executions"]  # priced what it ran
