"""StoreDispatcher: the Runner's dispatch step, made durable and idempotent by the job store.

For each CompiledBatch of a round trip, by its content key:
    done in the store        -> the stored result (a resumed run replays finished round trips free)
    cached (deterministic)   -> the stored result of an identical batch from any job
    submitted                -> poll the recorded provider ids; never resubmit
    claimed, no ids          -> a crash between submit and record: find the job by its tag, else submit
    new                      -> claim, submit, record the ids, then collect
Every provider call goes through call_with_retries; a permanent fault fails the job with the
provider's message and leaves every finished batch in the store.
"""

from __future__ import annotations

import time

from qssm.backends.base import Backend, Handle
from qssm.errors import QssmError
from qssm.jobs.retry import PermanentError, RetryPolicy, call_with_retries
from qssm.jobs.store import BatchRecord, JobStore
from qssm.pipeline.types import BatchResult, CompiledBatch


class JobFailed(QssmError):
    """A batch failed permanently; the message is the provider's."""


class StoreDispatcher:
    def __init__(self, store: JobStore, job_id: str, backend: Backend, policy: RetryPolicy | None = None,
                 poll_seconds: float = 2.0, log=None):
        self.store = store
        self.job_id = job_id
        self.backend = backend
        self.policy = policy or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.log = log or (lambda msg: None)
        self.wave = 0
        self.reused = 0
        self.submitted = 0
        self.retries = 0

    def _call(self, fn):
        def note(attempt, exc):
            self.retries += 1
            self.log(f"transient fault ({type(exc).__name__}: {str(exc)[:80]}); retry {attempt}")

        try:
            return call_with_retries(fn, self.policy, note)
        except JobFailed:
            raise
        except Exception as e:  # noqa: BLE001 - permanent, or transient past the retry budget
            raise PermanentError(f"{type(e).__name__}: {e}") from e

    def __call__(self, batches: list[CompiledBatch]) -> list[BatchResult]:
        self.wave += 1
        results: list[BatchResult | None] = [None] * len(batches)
        pending: dict[int, Handle] = {}
        for i, batch in enumerate(batches):
            rec = self.store.batch(self.job_id, batch.key)  # one read per batch: what the store knows
            done = self._stored(batch, rec)
            if done is not None:
                results[i] = done
                self.reused += 1
                continue
            try:
                pending[i] = self._handle(batch, i, rec)
            except BaseException:
                # a fault while submitting: what is already in flight was paid for, collect it first
                for j, handle in pending.items():
                    try:
                        self._collect(batches[j], handle, j)
                    except Exception:  # noqa: BLE001 - the first fault is the one to report
                        pass
                raise
        for i, handle in pending.items():
            results[i] = self._collect(batches[i], handle, i)
        self.store.heartbeat(self.job_id)
        return results  # type: ignore[return-value]

    def _stored(self, batch: CompiledBatch, rec: BatchRecord | None) -> BatchResult | None:
        if rec is not None and rec.status == "done":
            return rec.result
        if self.backend.deterministic:
            cached = self.store.cached(self.backend.name, batch.key)
            if cached is not None:
                self.store.record_result(self.job_id, batch.key, cached, self.wave)
                return cached
        return None

    def _handle(self, batch: CompiledBatch, position: int, rec: BatchRecord | None) -> Handle:
        if rec is not None and rec.status == "submitted" and rec.handle is not None:
            return rec.handle  # poll what a previous process submitted
        if rec is not None and rec.status == "claimed" and hasattr(self.backend, "find"):
            found = self._call(lambda: self.backend.find(batch))
            if found is not None:  # submitted before the crash, id never recorded: adopt it
                self.store.record_handle(self.job_id, batch.key, found)
                return found
        if not self.store.claim(self.job_id, batch.key, self.wave, position):
            rec = self.store.batch(self.job_id, batch.key)
            if rec is not None and rec.handle is not None:
                return rec.handle
            raise QssmError(f"batch {batch.key[:12]} of job {self.job_id} is being submitted by another process; "
                            f"wait for it to finish (qssm status {self.job_id})")
        handle = self._call(lambda: self.backend.submit(batch))
        self.submitted += 1
        self.store.record_handle(self.job_id, batch.key, handle)
        return handle

    def _collect(self, batch: CompiledBatch, handle: Handle, position: int) -> BatchResult:
        delay = self.poll_seconds
        while True:
            state = self._call(lambda: self.backend.status(handle))
            if state == "done":
                break
            if state == "unknown":  # a local simulator's job died with its process: run it again
                self.store.unsubmit(self.job_id, batch.key)
                handle = self._call(lambda: self.backend.submit(batch))
                self.submitted += 1
                self.store.record_handle(self.job_id, batch.key, handle)
                continue
            if state in ("failed", "cancelled"):
                message = self._failure_message(handle, state)
                self.store.record_failure(self.job_id, batch.key, message)
                raise JobFailed(f"batch {batch.key[:12]} {state} on {self.backend.name}: {message}")
            self.store.heartbeat(self.job_id)
            time.sleep(delay)
            delay = min(delay * 1.5, 60.0)
        try:
            result = self._call(lambda: self.backend.result(handle, batch))
        except PermanentError as e:
            self.store.record_failure(self.job_id, batch.key, str(e))
            raise JobFailed(f"batch {batch.key[:12]} failed on {self.backend.name}: {e}") from None
        result.meta.setdefault("job_ids", list(handle.job_ids))
        self.store.record_result(self.job_id, batch.key, result, self.wave, position)
        if self.backend.deterministic:
            self.store.cache(self.backend.name, batch.key, result)
        return result

    def _failure_message(self, handle: Handle, state: str) -> str:
        reason = getattr(self.backend, "failure_reason", None)
        if reason is not None:
            try:
                return str(reason(handle))
            except Exception:  # noqa: BLE001
                pass
        return f"provider reports the job {state} ({', '.join(handle.job_ids)})"
