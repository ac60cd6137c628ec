"""StoreDispatcher: the pipeline's dispatch step, made durable and idempotent by the job store.

Every paid circuit reaches the backend through here: planned batches, cut subexperiments, ZNE copies
and readout calibrations alike (docs/architecture.md, "Durable jobs"). For each batch of a round
trip, by its content key:
    done in the store        -> the stored result (a resumed run replays finished round trips free)
    cached (exact values)    -> the stored result of an identical shot-free batch on a deterministic
                                backend from any job (sampled results are never shared: they depend
                                on the job's seed)
    submitted                -> poll the recorded provider ids; never resubmit
    claimed, no ids          -> a crash between submit and record: ask the provider which of the
                                batch's units exist (by identity), create only the missing ones
    new                      -> claim, create its units, record the ids, then collect
Paid backends submit a batch as units, one provider job/task each, with a deterministic identity
(job, batch key, chunk, task; backends/base.py). The recovery rule: nothing is created before the
provider has been asked whether it exists already, whenever it might (a resumed claim, a retry after
a transient fault, which may have been a dropped response to a create that succeeded); retries are
per unit, never per batch. Every provider call goes through call_with_retries; a permanent fault
fails the job with the provider's message and leaves every finished batch in the store.

Results are stored as soon as they are parsed; usage (what the provider billed) is read after, with
its own error handling: a failed or pending usage call leaves the result stored and the batch's
usage "pending", filled in by `settle_usage` at the next round trip, at the end of the job, or by
`qssm resume` on a finished job.
"""

from __future__ import annotations

import time

from qssm.backends.base import Backend, Handle
from qssm.errors import QssmError
from qssm.jobs.retry import PermanentError, RetryPolicy, call_with_retries
from qssm.jobs.store import BatchRecord, JobStore
from qssm.pipeline.tracker import Tracker
from qssm.redact import redact
from qssm.types import BatchResult, CircuitBatch


class JobFailed(QssmError):
    """A batch failed permanently; the message is the provider's."""


class JobCancelled(QssmError):
    """The user cancelled the job: the worker stops at the next batch boundary."""


class StoreDispatcher:
    def __init__(self, store: JobStore, job_id: str, backend: Backend, policy: RetryPolicy | None = None,
                 poll_seconds: float = 2.0, log=None, tracker: Tracker | None = None,
                 unrecognized_seconds: float = 3600.0):
        self.store = store
        self.job_id = job_id
        self.backend = backend
        self.policy = policy or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.log = log or (lambda msg: None)
        self.wave = 0
        self.tracker = tracker or Tracker()  # reused_batches, provider_submissions, retries
        # a provider state qssm does not know is polled this long, then fails the batch
        self.unrecognized_seconds = unrecognized_seconds

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
        if not self.backend.capabilities.simulator:
            self.settle_usage()  # what earlier round trips' providers had not settled yet
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
        if not self.store.claim(self.job_id, batch.key, self.wave, position):
            rec = self.store.batch(self.job_id, batch.key)
            if rec is not None and rec.handle is not None:
                return rec.handle
            raise QssmError(f"batch {batch.key[:12]} of job {self.job_id} is being submitted by another process; "
                            f"wait for it to finish (qssm status {self.job_id})")
        self.tracker.add(submitted_batches=1)
        # claimed before (a process died, or a unit failed): some of its units may exist already
        return self._submit(batch, look_first=rec is not None)

    def _submit(self, batch: CircuitBatch, look_first: bool = True) -> Handle:
        """The batch's provider jobs, counted, their ids recorded before anything waits on them."""
        if not self.backend.capabilities.find_by_tag:  # a simulator: one call, nothing billed
            handle = self._call(lambda: self.backend.submit(batch), batch.key)
            self.tracker.add(provider_submissions=1)
        else:
            n = self.backend.units(batch)
            found = self._call(lambda: self.backend.find_units(batch, self.job_id), batch.key) if look_first else {}
            ids = [found.get(k) or self._create(batch, k) for k in range(n)]
            handle = self.backend.handle(batch, ids)
        self.store.record_handle(self.job_id, batch.key, handle)
        return handle

    def _create(self, batch: CircuitBatch, unit: int) -> str:
        """One unit, retried on its own. After a transient fault the create may have succeeded with
        its response lost: the provider is asked for the unit's identity before trying again."""
        faults = []

        def attempt() -> str:
            if faults:
                existing = self.backend.find_units(batch, self.job_id).get(unit)
                if existing:
                    return existing
            try:
                provider_id = self.backend.submit_unit(batch, unit, self.job_id)
            except Exception as e:
                faults.append(e)
                raise
            self.tracker.add(provider_submissions=1)
            return provider_id

        return self._call(attempt, batch.key)

    def _collect(self, batch: CircuitBatch, handle: Handle, position: int, in_flight=()) -> BatchResult:
        delay = self.poll_seconds
        strange_since = None
        while True:
            state = self._call(lambda: self.backend.status(handle), batch.key)
            if state in ("queued", "running", "unrecognized"):
                self._stop_if_cancelled(in_flight or [handle])
            if state == "done":
                break
            if state == "unrecognized":  # a provider state qssm does not know: shown, then timed out
                raw = handle.meta.get("provider_state", "?")
                strange_since = strange_since or time.time()
                waited = time.time() - strange_since
                if waited >= self.unrecognized_seconds:
                    message = (f"provider reports state {raw!r}, unknown to qssm, for {waited:.0f} s "
                               f"({', '.join(handle.job_ids)}); check the job on the provider's console, "
                               f"then `qssm resume {self.job_id}`")
                    self.store.record_failure(self.job_id, batch.key, message)
                    raise JobFailed(f"batch {batch.key[:12]} on {self.backend.name}: {message}")
                self.store.note(self.job_id, batch.key, f"provider state {raw!r} (unknown to qssm) for {waited:.0f} s; "
                                f"fails after {self.unrecognized_seconds:.0f} s")
            else:
                strange_since = None
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
        paid = not self.backend.capabilities.simulator
        if paid:
            result.meta["usage"] = "pending"  # stored first; what it cost is read after (below)
        self.store.record_result(self.job_id, batch.key, result, self.wave, position)
        if self._shareable(batch):
            self.store.cache(self.backend.name, batch.key, result)
        usage = self._settle(batch.key, handle) if paid else None
        if usage:  # the run's totals (Tracker) read the cost from the result
            result.meta.update(usage="final", qpu_seconds=float(usage["qpu_seconds"]))
            result.cost_usd = float(usage["cost_usd"])
        return result

    def _settle(self, key: str, handle: Handle) -> dict | None:
        """Read one batch's usage; a failure or a pending usage leaves it pending (never the result)."""
        try:
            usage = call_with_retries(lambda: self.backend.usage(handle), self.policy)
        except Exception as e:  # noqa: BLE001 - usage is bookkeeping: the paid result is kept whatever happens
            self.log(f"usage of batch {key[:12]} not read yet ({type(e).__name__}: {redact(str(e))[:80]}); "
                     "filled in later")
            return None
        if usage is not None:
            self.store.record_usage(self.job_id, key, usage)
        return usage

    def settle_usage(self) -> int:
        """Fill in the usage of finished batches whose usage was pending; returns how many remain."""
        left = 0
        for key, handle in self.store.pending_usage(self.job_id):
            left += self._settle(key, handle) is None
        return left

    def _failure_message(self, handle: Handle, state: str) -> str:
        try:
            reason = self.backend.failure_reason(handle)
        except Exception:  # noqa: BLE001 - a reason is a courtesy, never a new failure
            reason = None
        return str(reason) if reason else f"provider reports the job {state} ({', '.join(handle.job_ids)})"
