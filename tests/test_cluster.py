"""Dry runs on a Dask cluster (a LocalCluster of 2 workers): the same results as one process, in
order, with the job store as the single writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_jobs import HAYSTACK, assert_same_results, results_by_key  # noqa: E402

from qssm.app.durable import create_job, run_job  # noqa: E402
from qssm.app.inference import run_inference  # noqa: E402
from qssm.backends.cluster import ClusterBackend, chunks  # noqa: E402
from qssm.backends.registry import get_backend  # noqa: E402
from qssm.errors import QssmError  # noqa: E402
from qssm.jobs.spec import parse_spec  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402


@pytest.fixture(scope="module")
def scheduler():
    from qssm.backends.cluster import local_cluster

    with local_cluster(2) as cluster:
        yield cluster.scheduler_address


def spec(backend, shots, cluster="", n=24):
    return parse_spec({"model": {"checkpoint": HAYSTACK}, "data": {"n": n},
                       "backend": {"name": backend, "shots": shots, "cluster": cluster}}, "test")


@pytest.mark.parametrize("backend,shots", [("exact", 500), ("aer:fake_fez", 300)])
def test_cluster_gives_the_same_results_as_one_process(scheduler, backend, shots):
    alone = run_inference(spec(backend, shots), progress=False)
    spread = run_inference(spec(backend, shots, cluster=scheduler), progress=False)
    for key in ("logit_error_max", "logit_error_mean", "accuracy", "dispatched_batches", "executions"):
        assert spread[key] == alone[key], key
    assert spread["cluster"] == scheduler and alone["cluster"] is None  # the report says where it ran
    assert spread["provenance"]["cluster"] == scheduler and alone["provenance"]["cluster"] is None


def test_chunks_cover_the_rows_in_order():
    from qssm.types import CircuitBatch

    rows = np.arange(1000.0)[:, None]
    parts = chunks(CircuitBatch((), rows, shots=10, key="k"), 4)
    assert len(parts) == 4 and [p.first_row for p in parts] == [0, 250, 500, 750]
    np.testing.assert_array_equal(np.concatenate([p.parameters for p in parts]), rows)
    assert chunks(CircuitBatch((), np.zeros((5, 1))), 4)[0].parameters.shape == (5, 1)


def test_job_store_stays_the_single_writer(scheduler, tmp_path):
    """A job on the cluster: the store holds the same results as the job run in one process; a
    dispatcher that lost its futures (killed) reruns the batch instead of waiting forever."""
    stores = {}
    for cluster in ("", scheduler):
        store = JobStore(tmp_path / f"s{len(stores)}.sqlite")
        job_id, _ = create_job(store, spec("exact", 400, cluster=cluster, n=8))
        run_job(store, job_id)
        stores[cluster] = results_by_key(store, job_id)
    assert_same_results(stores[""], stores[scheduler])
    from qssm.backends.base import Handle

    fresh = ClusterBackend(get_backend("exact"), scheduler)
    try:
        assert fresh.status(Handle("exact", ["dask-from-a-dead-process"])) == "unknown"
    finally:
        fresh.close()


def test_cluster_refuses_qpus_and_bad_addresses():
    with pytest.raises(QssmError, match="simulators"):
        ClusterBackend(get_backend("braket:iqm_garnet"), "local:2")
    with pytest.raises(QssmError, match="local:N"):  # refused when the backend is built, before any cluster
        ClusterBackend(get_backend("exact"), "local:two")


def test_local_clusters_are_shared_within_a_process_and_close_quietly():
    """Two `local:1` backends in one process share one LocalCluster (the second starts at once), and
    the process exits without Dask's nanny warnings on stderr."""
    code = """if True:
        import time
        from qssm.backends.cluster import ClusterBackend, _LOCAL
        from qssm.backends.registry import get_backend
        if __name__ == "__main__":
            seconds = []
            for _ in range(2):
                start = time.perf_counter()
                backend = ClusterBackend(get_backend("exact"), "local:1")
                assert backend.workers == 1
                backend.close()
                seconds.append(time.perf_counter() - start)
            print(len(_LOCAL), seconds[0], seconds[1])
    """

    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    clusters, first, second = p.stdout.split()
    assert clusters == "1" and float(second) < 2.0, p.stdout  # the first one took seconds to start
    assert "nanny" not in p.stderr and "WARNING" not in p.stderr, p.stderr


def test_templates_transpile_on_the_workers_to_the_same_isa_circuits(scheduler):
    """CompileCache.prefetch through a cluster backend: the workers' seeded transpiles give the same
    ISA circuits (digests), columns and layouts as this process, and count as transpiles here."""
    from qssm.circuits.templates import model_templates
    from qssm.models import checkpoint
    from qssm.pipeline.compile import CompileCache, CompileOptions
    from qssm.pipeline.tracker import Tracker

    model = checkpoint.load(HAYSTACK)[0]
    templates = list(model_templates(model))[:4]
    options = CompileOptions(2, 7)
    local_backend = get_backend("dm:fake_fez")
    remote = ClusterBackend(get_backend("dm:fake_fez"), scheduler)
    here, there = CompileCache(), CompileCache(Tracker())
    there.prefetch(templates, remote, options)
    assert there.transpile_calls == len(templates) and there.tracker.totals["transpile_calls"] == len(templates)
    for t in templates:
        a, b = here.get(t, local_backend, options), there.get(t, remote, options)
        assert (a.digest, a.layout) == (b.digest, b.layout)
        assert (a.columns is None and b.columns is None) or list(a.columns) == list(b.columns)
    assert there.transpile_calls == len(templates)  # every template came from the workers
    remote.close()
