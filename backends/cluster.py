"""A simulator backend's batches on a Dask cluster (dask.distributed), for dry runs that outgrow one
machine (docs/architecture.md, "Backends").

    [backend]
    name = "aer:fake_fez"
    cluster = "local:4"              # a LocalCluster of 4 single-threaded worker processes
    cluster = "tcp://10.0.0.5:8786"  # an existing scheduler (dask-jobqueue, Kubernetes, dask-ssh, ...)

`ClusterBackend` wraps the simulator backend the spec names and keeps its name, target and
capabilities, so batch keys, the job store and every result are the same as without a cluster.
Submitting a batch ships it to the workers and returns at once; collecting gathers the pieces in
order. Batches of a backend whose sampling is seeded per row (`chunkable`, backends/sampling.py)
are split into row chunks, so one large batch spreads over every worker and still gives exactly
the counts it gives whole. Workers only compute: the job store stays in this process, its
single writer, and a killed dispatcher's futures die with it ("unknown": the dispatcher runs the
batch again), as with any local simulator.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import uuid
from functools import lru_cache

import numpy as np

from qssm.backends.base import Backend, Capabilities, Handle
from qssm.backends.cluster_address import FORMS, parse_cluster
from qssm.backends.registry import get_backend
from qssm.errors import QssmError
from qssm.types import BatchResult, CircuitBatch


@lru_cache(maxsize=8)
def _worker_backend(name: str, seed: int | None, options: tuple):
    """One backend per worker process and configuration (device targets and noise models are
    built once per worker, not per batch)."""
    backend = get_backend(name, seed=seed)
    backend.configure(**dict(options))
    return backend


def evaluate_on_worker(name: str, seed: int | None, options: tuple, batch: CircuitBatch) -> BatchResult:
    return _worker_backend(name, seed, options).evaluate(batch)


def evaluate_rows_on_worker(name: str, seed: int | None, options: tuple, body: CircuitBatch, rows: np.ndarray,
                            first_row: int) -> BatchResult:
    return _worker_backend(name, seed, options).evaluate(body.derive(parameters=rows, first_row=first_row))


def call_on_worker(name: str, seed: int | None, options: tuple, fn, item):
    return fn(_worker_backend(name, seed, options), item)


def local_cluster(workers: int | None = None):
    """A LocalCluster of single-threaded worker processes, spawned without Dask's default
    MALLOC_TRIM_THRESHOLD_ = 65536: setting it turns glibc's dynamic mmap threshold off, and the
    simulators' large temporaries then page-fault on every allocation (the dm engine ran 1.9x
    slower in a worker than in this process)."""
    import dask
    from distributed import LocalCluster

    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        # silence_logs: the nanny's shutdown warnings ("still alive after 4 s, killing") are Dask's
        # housekeeping, not the user's business; qssm reports real failures itself
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            silence_logs=logging.ERROR)


_LOCAL: dict[int, object] = {}  # N -> the LocalCluster every `local:N` backend of this process shares


def shared_local_cluster(workers: int):
    """One LocalCluster per worker count and process: starting one takes seconds, and a report or a
    benchmark builds many backends. Closed when the process exits."""
    from distributed.core import Status

    cluster = _LOCAL.get(workers)
    if cluster is None or cluster.status != Status.running:
        if not _LOCAL:
            atexit.register(close_local_clusters)
        cluster = _LOCAL[workers] = local_cluster(workers)
    return cluster


def close_local_clusters() -> None:
    for cluster in _LOCAL.values():
        with contextlib.suppress(Exception):  # at exit: a worker that is already gone is fine
            cluster.close()
    _LOCAL.clear()


MIN_CHUNK = 64  # rows: smaller chunks cost more in shipping than they gain in balance


def chunks(batch: CircuitBatch, pieces: int) -> list[CircuitBatch]:
    """The batch's rows in at most `pieces` chunks of at least MIN_CHUNK rows."""
    n = len(batch.parameters)
    per = max(MIN_CHUNK, math.ceil(n / max(1, pieces)))
    if n <= per:
        return [batch]
    return [batch.derive(parameters=batch.parameters[a:a + per], first_row=a) for a in range(0, n, per)]


def concatenate(parts: list[BatchResult]) -> BatchResult:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    values = None if first.values is None else np.concatenate([p.values for p in parts])
    stderr = None if first.stderr is None else np.concatenate([p.stderr for p in parts])
    counts = tuple(np.concatenate([p.counts[i] for p in parts]) for i in range(len(first.counts)))
    return BatchResult(values, stderr, counts, dict(first.meta), shots=first.shots,  # row chunks of one batch
                       job_ids=tuple(j for p in parts for j in p.job_ids), cost_usd=sum(p.cost_usd for p in parts),
                       seconds=sum(p.seconds for p in parts))


class ClusterBackend(Backend):
    def __init__(self, inner: Backend, address: str):
        super().__init__()
        if not inner.capabilities.simulator or not callable(getattr(inner, "evaluate", None)):
            raise QssmError(f"[backend] cluster runs simulators; {inner.name} runs on its provider's hardware: "
                            "remove cluster (or --cluster) for QPU jobs")
        self.inner = inner
        self.address = parse_cluster(address)  # a spec or --cluster has checked it already
        if not self.address:
            raise QssmError(f"[backend] cluster is empty; {FORMS}")
        self.name, self.target, self.calibration = inner.name, inner.target, inner.calibration
        self.runtime_options = inner.runtime_options
        self._client = None
        self._futures: dict[str, list] = {}

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def configure(self, **options) -> None:
        self.inner.configure(**options)

    def fingerprint(self) -> dict:
        return self.inner.fingerprint()

    def estimate_cost(self, trips):
        return self.inner.estimate_cost(trips)

    # -- the cluster ----------------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            from distributed import Client

            kind, _, rest = self.address.partition(":")
            if kind == "local":
                self._client = Client(shared_local_cluster(int(rest)), set_as_default=False)
            else:
                try:
                    self._client = Client(self.address, timeout="20s")
                except OSError as e:
                    raise QssmError(f"cannot reach the Dask scheduler at {self.address} ({e}); start it or fix "
                                    "[backend] cluster") from None
        return self._client

    @property
    def workers(self) -> int:
        return max(1, len(self.client().scheduler_info()["workers"]))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # a local:N cluster stays up for the next backend of this process
            self._client = None
        self.inner.close()

    # -- the backend contract ---------------------------------------------------------------------------
    def _worker_key(self) -> tuple:
        """What a worker needs to rebuild the inner backend (_worker_backend's cache key)."""
        return self.inner.name, getattr(self.inner, "seed", None), tuple(sorted(self.inner.runtime_options.items()))

    def map(self, fn, items: list) -> list:
        if len(items) < 2:
            return super().map(fn, items)
        client = self.client()
        futures = [client.submit(call_on_worker, *self._worker_key(), fn, item, pure=False) for item in items]
        return client.gather(futures)

    def submit(self, batch: CircuitBatch) -> Handle:
        client = self.client()
        parts = chunks(batch, 2 * self.workers) if self.capabilities.chunkable else [batch]
        if len(parts) == 1:
            futures = [client.submit(evaluate_on_worker, *self._worker_key(), batch, pure=False)]
        else:
            # the circuits once per worker, only the rows per chunk: pickling a QLAM batch's ISA
            # circuits once per chunk cost more than simulating the chunk (8 s of 14 for 100 images)
            body = client.scatter(batch.derive(parameters=batch.parameters[:0]), broadcast=True, hash=False)
            futures = [client.submit(evaluate_rows_on_worker, *self._worker_key(), body, part.parameters,
                                     part.first_row, pure=False) for part in parts]
        job = f"dask-{uuid.uuid4().hex[:12]}"
        self._futures[job] = futures
        return Handle(self.name, [job], {"chunks": len(parts)})

    def status(self, handle: Handle) -> str:
        futures = self._futures.get(handle.job_ids[0])
        if futures is None:
            return "unknown"  # submitted by a process that died: its futures died with it
        states = {f.status for f in futures}
        if states & {"error", "lost"}:
            return "failed"
        if "cancelled" in states:
            return "cancelled"
        return "done" if states == {"finished"} else "running"

    def failure_reason(self, handle: Handle) -> str | None:
        for f in self._futures.get(handle.job_ids[0], []):
            if f.status == "error":
                return f"{type(f.exception()).__name__}: {f.exception()}"
        return None

    def result(self, handle: Handle, batch: CircuitBatch) -> BatchResult:
        futures = self._futures.pop(handle.job_ids[0], None)
        if futures is None:
            raise QssmError(f"cluster job {handle.job_ids[0]} is gone (another process); resubmit it")
        return concatenate(self.client().gather(futures))

    def cancel(self, handle: Handle) -> None:
        for f in self._futures.pop(handle.job_ids[0], []):
            f.cancel()
