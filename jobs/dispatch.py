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
(job, batch key, chunk, task; backends/base.py). A backend that packs (IBM) gets a round trip's
new sampled batches of one `pack_class` as one Pack, whose identity is its members' keys: its
members are claimed together, get the pack's handle together (each with its share of the usage)
and their results are recorded together, in one store transaction each, so a resumed round trip
finds the same members not done and forms the same pack again; its usage is read once and split.

The recovery rule: nothing is created before the provider has been asked whether it exists already,
whenever it might (a resumed claim, a retry after a transient fault, which may have been a dropped
response to a create that succeeded); retries are per unit, never per batch. Every provider call
goes through call_with_retries; a permanent fault fails the job with the provider's message and
leaves every finished batch in the store.

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
from qssm.types import BatchResult, CircuitBatch, Pack, members


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
        waiting: list[tuple[int, BatchRecord | None]] = []
        for i, batch in enumerate(batches):
            rec = self.store.batch(self.job_id, batch.key)  # one read per batch: what the store knows
            done = self._stored(batch, rec)
            if done is not None:
                results[i] = done
                self.tracker.add(reused_batches=1)
            else:
                waiting.append((i, rec))
        pending: list[tuple[CircuitBatch | Pack, list[int], Handle]] = []
        try:
            for unit, idx, recs in self._units(batches, waiting):
                self._stop_if_cancelled([h for *_, h in pending])
                pending.append((unit, idx, self._handle(unit, idx, recs)))
        except JobCancelled:
            raise
        except BaseException:
            # a fault while submitting: what is already in flight was paid for, collect it first
            for unit, idx, handle in pending:
                try:
                    self._collect(unit, handle, idx)
                except Exception:  # noqa: BLE001 - the first fault is the one to report
                    pass
            raise
        for n, (unit, idx, handle) in enumerate(pending):
            got = self._collect(unit, handle, idx, in_flight=[h for *_, h in pending[n:]])
            for i, r in zip(idx, got):
                results[i] = r
        if not self.backend.capabilities.simulator:
            self.settle_usage()  # what earlier round trips' providers had not settled yet
        self.store.heartbeat(self.job_id)
        return results  # type: ignore[return-value]

    def _units(self, batches: list[CircuitBatch], waiting: list[tuple[int, BatchRecord | None]]):
        """(batch or Pack, wave positions, store records) to submit or poll: what an earlier process
        submitted as a pack is polled as that pack; new and claimed batches of one pack class form a
        pack (members in wave order, so a resumed round trip forms the same one)."""
        groups: dict = {}  # ("alone", batch key) | ("class", pack class) | ("submitted", pack key)
        for i, rec in waiting:
            batch = batches[i]
            submitted = rec is not None and rec.status == "submitted" and rec.handle is not None
            if submitted and rec.handle.meta.get("pack"):
                group = ("submitted", rec.handle.meta["pack"])
            else:
                cls = self.backend.pack_class(batch) if self.backend.capabilities.packs and not submitted else None
                group = ("alone", batch.key) if cls is None else ("class", cls)
            groups.setdefault(group, []).append((i, rec))
        for (kind, name), group in groups.items():
            idx, recs = [i for i, _ in group], [r for _, r in group]
            if kind == "alone" or (kind == "class" and len(group) == 1):
                yield batches[idx[0]], idx, recs
                continue
            pack = Pack(tuple(batches[i] for i in idx))
            if kind == "submitted" and pack.key != name:
                raise QssmError(f"job {self.job_id}: a pack of this round trip was submitted with other members than "
                                f"this run plans ({name[:12]}); the job's spec or qssm changed since: submit it again")
            yield pack, idx, recs

    def _keys(self, unit: CircuitBatch | Pack) -> list[str]:
        """The store records of a batch or a pack (a pack has none of its own)."""
        return [m.key for m in members(unit)]

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

    def _handle(self, unit: CircuitBatch | Pack, idx: list[int], recs: list[BatchRecord | None]) -> Handle:
        keys = self._keys(unit)
        if all(r is not None and r.status == "submitted" and r.handle is not None for r in recs):
            return recs[0].handle  # poll what a previous process submitted
        if not self.store.claim_all(self.job_id, keys, self.wave, idx):
            rec = self.store.batch(self.job_id, keys[0])
            if rec is not None and rec.handle is not None:
                return rec.handle
            raise QssmError(f"batch {keys[0][:12]} of job {self.job_id} is being submitted by another process; "
                            f"wait for it to finish (qssm status {self.job_id})")
        self.tracker.add(submitted_batches=len(keys))
        # claimed before (a process died, or a unit failed): some of its units may exist already
        return self._submit(unit, look_first=any(r is not None for r in recs))

    def _submit(self, batch: CircuitBatch | Pack, look_first: bool = True) -> Handle:
        """The provider jobs of a batch or pack, counted, their ids recorded (a pack's on every
        member, with its share of the usage) before anything waits on them."""
        if not self.backend.capabilities.find_by_tag:  # a simulator: one call, nothing billed
            handle = self._call(lambda: self.backend.submit(batch), self._keys(batch))
            self.tracker.add(provider_submissions=1)
        else:
            n = self.backend.units(batch)
            found = self._call(lambda: self.backend.find_units(batch, self.job_id), self._keys(batch)) if look_first else {}
            ids = [found.get(k) or self._create(batch, k) for k in range(n)]
            handle = self.backend.handle(batch, ids)
        if isinstance(batch, Pack):
            handle.meta["pack"] = batch.key
        self.store.record_handles(self.job_id, dict(zip(self._keys(batch), self._shares(batch, handle))))
        return handle

    @staticmethod
    def _shares(unit: CircuitBatch | Pack, handle: Handle) -> list[Handle]:
        """Per member, the handle with the member's share of what the jobs bill (by executions x
        shots): a pack's usage is split over its members' records, so totals count it once."""
        if not isinstance(unit, Pack):
            return [handle]
        weight = [m.executions * (m.shots or 0) for m in unit.members]
        return [Handle(handle.backend, list(handle.job_ids), {**handle.meta, "share": w / max(sum(weight), 1)})
                for w in weight]

    def _create(self, batch: CircuitBatch | Pack, unit: int) -> str:
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

        return self._call(attempt, self._keys(batch))

    def _collect(self, batch: CircuitBatch | Pack, handle: Handle, idx: list[int], in_flight=()) -> list[BatchResult]:
        """The results of a batch (one) or a pack (one per member), recorded together."""
        keys = self._keys(batch)
        delay = self.poll_seconds
        strange_since = None
        while True:
            state = self._call(lambda: self.backend.status(handle), keys)
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
                    self.store.record_failure(self.job_id, keys, message)
                    raise JobFailed(f"batch {keys[0][:12]} on {self.backend.name}: {message}")
                self.store.note(self.job_id, keys, f"provider state {raw!r} (unknown to qssm) for {waited:.0f} s; "
                                f"fails after {self.unrecognized_seconds:.0f} s")
            else:
                strange_since = None
            if state == "unknown":  # a local simulator's job died with its process: run it again
                self.log(f"batch {keys[0][:12]}: its job {', '.join(handle.job_ids)[:60]} died with the process "
                         "that submitted it (local simulators and testing mode keep no jobs); submitting it again")
                self.tracker.add(resubmitted_batches=len(keys))
                self.store.unsubmit(self.job_id, keys)
                self.store.claim_all(self.job_id, keys, self.wave, idx)  # counts the submission
                handle = self._submit(batch)
                continue
            if state in ("failed", "cancelled"):
                message = self._failure_message(handle, state)
                self.store.record_failure(self.job_id, keys, message)
                raise JobFailed(f"batch {keys[0][:12]} {state} on {self.backend.name}: {message}")
            self.store.heartbeat(self.job_id)
            time.sleep(delay)
            delay = min(delay * 1.5, 60.0)
        try:
            got = self._call(lambda: self.backend.result(handle, batch), keys)
        except PermanentError as e:
            self.store.record_failure(self.job_id, keys, str(e))
            raise JobFailed(f"batch {keys[0][:12]} failed on {self.backend.name}: {e}") from None
        results = got if isinstance(batch, Pack) else [got]
        paid = not self.backend.capabilities.simulator
        for member, result in zip(members(batch), results):
            result.job_ids = result.job_ids or tuple(handle.job_ids)
            result.meta.setdefault("template", member.meta.get("template"))
            if paid:
                result.meta["usage"] = "pending"  # stored first; what it cost is read after (below)
        self.store.record_results(self.job_id, dict(zip(keys, results)), self.wave, idx)
        if not isinstance(batch, Pack) and self._shareable(batch):
            self.store.cache(self.backend.name, batch.key, results[0])
        usages = self._settle(list(zip(keys, self._shares(batch, handle)))) if paid else None
        for result, usage in zip(results, usages or []):  # the run's totals (Tracker) read the cost from the result
            result.meta.update(usage="final", qpu_seconds=float(usage["qpu_seconds"]))
            result.cost_usd = float(usage["cost_usd"])
        return results

    def _settle(self, shares: list[tuple[str, Handle]]) -> list[dict] | None:
        """Read the usage of one set of provider jobs once (a batch's, or a pack's: `shares` is each
        member's key and handle with its share) and record each member's part; a failure or a pending
        usage leaves them pending (never the result) and returns None."""
        key, handle = shares[0]
        try:
            usage = call_with_retries(lambda: self.backend.usage(handle), self.policy)
        except Exception as e:  # noqa: BLE001 - usage is bookkeeping: the paid result is kept whatever happens
            self.log(f"usage of batch {key[:12]} not read yet ({type(e).__name__}: {redact(str(e))[:80]}); "
                     "filled in later")
            return None
        if usage is None:
            return None
        parts = []
        for k, h in shares:
            share = float(h.meta.get("share", 1.0))  # a pack member's part of what its jobs billed
            parts.append({**usage, "qpu_seconds": usage["qpu_seconds"] * share, "cost_usd": usage["cost_usd"] * share})
            self.store.record_usage(self.job_id, k, parts[-1])
        return parts

    def settle_usage(self) -> int:
        """Fill in the usage of finished batches whose usage was pending (one read per set of provider
        jobs: a pack's members share theirs); returns how many batches remain pending."""
        by_jobs: dict[tuple[str, ...], list[tuple[str, Handle]]] = {}
        for key, handle in self.store.pending_usage(self.job_id):
            by_jobs.setdefault(tuple(handle.job_ids), []).append((key, handle))
        return sum(len(shares) for shares in by_jobs.values() if self._settle(shares) is None)

    def _failure_message(self, handle: Handle, state: str) -> str:
        try:
            reason = self.backend.failure_reason(handle)
        except Exception:  # noqa: BLE001 - a reason is a courtesy, never a new failure
            reason = None
        return str(reason) if reason else f"provider reports the job {state} ({', '.join(handle.job_ids)})"
