"""StoreDispatcher: the pipeline's dispatch step, made durable and idempotent by the job store.

Every paid circuit reaches the backend through here: planned batches, cut subexperiments, ZNE copies
and readout calibrations alike (docs/architecture.md, "Durable jobs"). For each batch of a round
trip, by its content key:
    done in the store        -> the stored result (a resumed run replays finished round trips free)
    cached (exact values)    -> the stored result of an identical shot-free batch on a deterministic
                                backend from any job (sampled results are never shared: they depend
                                on the job's seed)
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
from qssm.pipeline.tracker import Tracker
from qssm.types import BatchResult, CircuitBatch


class JobFailed(QssmError):
    """A batch failed permanently; the message is the provider's."""


class JobCancelled(QssmError):
    """The user cancelled the job: the worker stops at the next batch boundary."""


class StoreDispatcher:
    def __init__(self, store: JobStore, job_id: str, backend: Backend, policy: RetryPolicy | None = None,
                 poll_seconds: float = 2.0, log=None, tracker: Tracker | None = None):
        self.store = store
        self.job_id = job_id
        self.backend = backend
        self.policy = policy or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.log = log or (lambda msg: None)
        self.wave = 0
        self.tracker = tracker or Tracker()  # reused_batches, provider_submissions, retries

    def _call(self, fn, key: str | None = None):
        def note(attempt, exc):
            self.tracker.add(retries=1)
            text = f"transient fault ({type(exc).__name__}: {str(exc)[:80]}); retry {attempt} with backoff"
            self.log(text)
            if key is not None:  # `qssm status` shows it beside the batch until the batch is done
                self.store.note(self.job_id, key, text)

        try:
            return call_with_retries(fn, self.policy, note)
        except JobFailed:
            raise
        except Exception as e:  # noqa: BLE001 - permanent, or transient past the retry budget
            raise PermanentError(f"{type(e).__name__}: {e}") from e

    def __call__(self, batches: list[CircuitBatch]) -> list[BatchResult]:
        self.wave += 1
        results: list[BatchResult | None] = [None] * len(batches)
        pending: dict[int, Handle] = {}
        for i, batch in enumerate(batches):
            self._stop_if_cancelled(pending.values())
            rec = self.store.batch(self.job_id, batch.key)  # one read per batch: what the store knows
            done = self._stored(batch, rec)
            if done is not None:
                results[i] = done
                self.tracker.add(reused_batches=1)
                continue
            try:
                pending[i] = self._handle(batch, i, rec)
            except JobCancelled:
                raise
            except BaseException:
                # a fault while submitting: what is already in flight was paid for, collect it first
                for j, handle in pending.items():
                    try:
                        self._collect(batches[j], handle, j)
                    except Exception:  # noqa: BLE001 - the first fault is the one to report
                        pass
                raise
        for n, (i, handle) in enumerate(pending.items()):
            results[i] = self._collect(batches[i], handle, i, in_flight=list(pending.values())[n:])
        self.store.heartbeat(self.job_id)
        return results  # type: ignore[return-value]

    def _stop_if_cancelled(self, in_flight) -> None:
        """At a batch boundary: if the user cancelled the job, cancel what this worker has in flight
        (never paid for twice, and nothing more is submitted) and stop."""
        if self.store.job(self.job_id)["status"] != "cancelled":
            return
        for handle in in_flight:
            try:
                self.backend.cancel(handle)
            except Exception:  # noqa: BLE001 - best effort: the job is already marked cancelled
                pass
        raise JobCancelled(f"job {self.job_id} was cancelled")

    def _shareable(self, batch: CircuitBatch) -> bool:
        return batch.shots is None and self.backend.capabilities.deterministic

    def _stored(self, batch: CircuitBatch, rec: BatchRecord | None) -> BatchResult | None:
        if rec is not None and rec.status == "done":
            return rec.result
        if self._shareable(batch):
            cached = self.store.cached(self.backend.name, batch.key)
            if cached is not None:
                self.store.record_result(self.job_id, batch.key, cached, self.wave)
                return cached
        return None

    def _handle(self, batch: CircuitBatch, position: int, rec: BatchRecord | None) -> Handle:
        if rec is not None and rec.status == "submitted" and rec.handle is not None:
            return rec.handle  # poll what a previous process submitted
        if rec is not None and rec.status == "claimed" and self.backend.capabilities.find_by_tag:
            found = self._call(lambda: self.backend.find(batch), batch.key)
            if found is not None:  # submitted before the crash, id never recorded: adopt it
                self.store.record_handle(self.job_id, batch.key, found)
                return found
        if not self.store.claim(self.job_id, batch.key, self.wave, position):
            rec = self.store.batch(self.job_id, batch.key)
            if rec is not None and rec.handle is not None:
                return rec.handle
            raise QssmError(f"batch {batch.key[:12]} of job {self.job_id} is being submitted by another process; "
                            f"wait for it to finish (qssm status {self.job_id})")
        self.tracker.add(submitted_batches=1)
        return self._submit(batch)

    def _submit(self, batch: CircuitBatch) -> Handle:
        """One provider submission, counted, its ids recorded before anything waits on them."""
        handle = self._call(lambda: self.backend.submit(batch), batch.key)
        self.tracker.add(provider_submissions=1)
        self.store.record_handle(self.job_id, batch.key, handle)
        return handle

    def _collect(self, batch: CircuitBatch, handle: Handle, position: int, in_flight=()) -> BatchResult:
        delay = self.poll_seconds
        while True:
            state = self._call(lambda: self.backend.status(handle), batch.key)
            if state in ("queued", "running"):
                self._stop_if_cancelled(in_flight or [handle])
            if state == "done":
                break
            if state == "unknown":  # a local simulator's job died with its process: run it again
                self.log(f"batch {batch.key[:12]}: its job {', '.join(handle.job_ids)[:60]} died with the process "
                         "that submitted it (local simulators and testing mode keep no jobs); submitting it again")
                self.tracker.add(resubmitted_batches=1)
                self.store.unsubmit(self.job_id, batch.key)
                self.store.claim(self.job_id, batch.key, self.wave, position)  # counts the submission
                handle = self._submit(batch)
                continue
            if state in ("failed", "cancelled"):
                message = self._failure_message(handle, state)
                self.store.record_failure(self.job_id, batch.key, message)
                raise JobFailed(f"batch {batch.key[:12]} {state} on {self.backend.name}: {message}")
            self.store.heartbeat(self.job_id)
            time.sleep(delay)
            delay = min(delay * 1.5, 60.0)
        try:
            result = self._call(lambda: self.backend.result(handle, batch), batch.key)
        except PermanentError as e:
            self.store.record_failure(self.job_id, batch.key, str(e))
            raise JobFailed(f"batch {batch.key[:12]} failed on {self.backend.name}: {e}") from None
        result.job_ids = result.job_ids or tuple(handle.job_ids)
        result.meta.setdefault("template", batch.meta.get("template"))
        self.store.record_result(self.job_id, batch.key, result, self.wave, position)
        if self._shareable(batch):
            self.store.cache(self.backend.name, batch.key, result)
        return result

    def _failure_message(self, handle: Handle, state: str) -> str:
        try:
            reason = self.backend.failure_reason(handle)
        except Exception:  # noqa: BLE001 - a reason is a courtesy, never a new failure
            reason = None
        return str(reason) if reason else f"provider reports the job {state} ({', '.join(handle.job_ids)})"
