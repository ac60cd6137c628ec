"""The durable job store: SQLite in WAL mode, one file per user (or QSSM_STORE / --store).

A job is its spec plus the batches its round trips dispatched. Every batch record is written
before anything depends on it:

    claimed    -> about to submit (a crash here: look the job up by its tag, else submit again)
    submitted  -> provider job ids / task ARNs recorded (a crash here: poll them, never resubmit)
    done       -> values and standard errors stored (never submitted again)
    failed     -> the provider's message

Arrays are stored as .npy bytes and read with allow_pickle=False; nothing in the store is ever
unpickled. Credentials never enter it (every text column passes through jobs.redact).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qssm.backends.base import Handle
from qssm.errors import QssmError
from qssm.jobs.redact import redact
from qssm.pipeline.types import BatchResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, created REAL, updated REAL, status TEXT, backend TEXT, spec TEXT, source TEXT,
    estimate TEXT, report TEXT, error TEXT, owner TEXT, heartbeat REAL
);
CREATE TABLE IF NOT EXISTS batches (
    job_id TEXT, key TEXT, wave INTEGER, position INTEGER, status TEXT, handle TEXT,
    "values" BLOB, stderr BLOB, meta TEXT, attempts INTEGER DEFAULT 0, error TEXT,
    claimed REAL, submitted REAL, finished REAL, cost_usd REAL DEFAULT 0, owner TEXT,
    PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS cache (backend TEXT, key TEXT, "values" BLOB, stderr BLOB, meta TEXT,
    PRIMARY KEY (backend, key));
"""
LEASE_SECONDS = 120.0  # an owner on another host that stops heart-beating loses the job after this
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


def default_path() -> Path:
    if os.environ.get("QSSM_STORE"):
        return Path(os.environ["QSSM_STORE"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "qssm" / "jobs.sqlite"


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None, heartbeat: float | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return True
    return heartbeat is not None and time.time() - heartbeat < LEASE_SECONDS


def _result_blob(result: BatchResult) -> bytes:
    """A result's arrays (values, stderr, per-circuit outcome histograms) as one .npz, no pickles."""
    arrays = {f"counts_{i}": np.ascontiguousarray(c) for i, c in enumerate(result.counts)}
    if result.values is not None:
        arrays.update(values=np.ascontiguousarray(result.values), stderr=np.ascontiguousarray(result.stderr))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _result(blob: bytes, meta: str | None) -> BatchResult:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        counts = tuple(z[f"counts_{i}"] for i in range(sum(k.startswith("counts_") for k in z.files)))
        values = z["values"] if "values" in z.files else None
        stderr = z["stderr"] if "stderr" in z.files else None
    return BatchResult(values, stderr, counts, json.loads(meta or "{}"))


def _json(obj) -> str:
    return redact(json.dumps(obj, default=_plain))


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


@dataclass
class BatchRecord:
    key: str
    wave: int
    position: int
    status: str
    handle: Handle | None
    result: BatchResult | None
    attempts: int
    error: str | None


class JobStore:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # autocommit; explicit txns
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE: one writer at a time, so check-then-write steps are atomic across processes."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- jobs -------------------------------------------------------------------------------------
    def create_job(self, spec: dict, backend: str, source: str = "", estimate: dict | None = None) -> str:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO jobs (id, created, updated, status, backend, spec, source, estimate) "
                       "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                       (job_id, now, now, backend, _json(spec), source, _json(estimate or {})))
        return job_id

    def job(self, job_id: str) -> dict:
        row = self.db.execute("SELECT id, created, updated, status, backend, spec, source, estimate, report, error, "
                              "owner, heartbeat FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise QssmError(f"no job {job_id!r} in {self.path}; list jobs with `qssm status`")
        keys = ("id", "created", "updated", "status", "backend", "spec", "source", "estimate", "report", "error",
                "owner", "heartbeat")
        job = dict(zip(keys, row))
        for k in ("spec", "estimate", "report"):
            job[k] = json.loads(job[k]) if job[k] else None
        return job

    def jobs(self, limit: int = 50) -> list[dict]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM jobs ORDER BY created DESC LIMIT ?", (limit,))]
        return [self.job(i) for i in ids]

    def job_spec(self, job_id: str):
        from qssm.jobs.spec import parse_spec

        job = self.job(job_id)
        return parse_spec(job["spec"], job["source"] or job_id)

    def set_status(self, job_id: str, status: str, error: str | None = None, report: dict | None = None) -> None:
        assert status in JOB_STATES
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = ?, updated = ?, error = COALESCE(?, error), "
                       "report = COALESCE(?, report) WHERE id = ?",
                       (status, time.time(), redact(error) if error else None,
                        _json(report) if report is not None else None, job_id))

    def acquire(self, job_id: str, owner: str | None = None) -> bool:
        """Become the job's only runner unless a live process already is (atomic across processes)."""
        owner = owner or me()
        with self.transaction() as db:
            row = db.execute("SELECT owner, heartbeat, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise QssmError(f"no job {job_id!r} in {self.path}")
            if row[0] and row[0] != owner and _alive(row[0], row[1]):
                return False
            db.execute("UPDATE jobs SET owner = ?, heartbeat = ?, status = 'running', updated = ? WHERE id = ?",
                       (owner, time.time(), time.time(), job_id))
        return True

    def owner(self, job_id: str) -> str | None:
        row = self.db.execute("SELECT owner, heartbeat FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row and _alive(row[0], row[1]) else None

    def release(self, job_id: str, owner: str | None = None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET owner = NULL WHERE id = ? AND owner = ?", (job_id, owner or me()))

    def heartbeat(self, job_id: str) -> None:
        self.db.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (time.time(), job_id))

    # -- batches ----------------------------------------------------------------------------------
    def batch(self, job_id: str, key: str) -> BatchRecord | None:
        row = self.db.execute('SELECT key, wave, position, status, handle, "values", stderr, meta, attempts, error '
                              "FROM batches WHERE job_id = ? AND key = ?", (job_id, key)).fetchone()
        if row is None:
            return None
        handle = Handle(**json.loads(row[4])) if row[4] else None
        result = None
        if row[3] == "done":
            result = _result(row[5], row[7])
        return BatchRecord(row[0], row[1], row[2], row[3], handle, result, row[8], row[9])

    def batches(self, job_id: str) -> list[tuple]:
        return self.db.execute("SELECT key, wave, position, status, attempts, cost_usd, handle, error FROM batches "
                               "WHERE job_id = ? ORDER BY wave, position", (job_id,)).fetchall()

    def claim(self, job_id: str, key: str, wave: int, position: int) -> bool:
        """Mark a batch as being submitted by this process; False if another process holds it."""
        with self.transaction() as db:
            row = db.execute("SELECT status, owner FROM batches WHERE job_id = ? AND key = ?", (job_id, key)).fetchone()
            if row is not None and row[0] in ("submitted", "done"):
                return False
            if row is not None and row[1] and row[1] != me() and _alive(row[1], None):
                return False
            db.execute("INSERT INTO batches (job_id, key, wave, position, status, claimed, owner, attempts) "
                       "VALUES (?, ?, ?, ?, 'claimed', ?, ?, 1) ON CONFLICT(job_id, key) DO UPDATE SET "
                       "status = 'claimed', claimed = excluded.claimed, owner = excluded.owner, "
                       "attempts = attempts + 1", (job_id, key, wave, position, time.time(), me()))
        return True

    def record_handle(self, job_id: str, key: str, handle: Handle) -> None:
        with self.transaction() as db:
            db.execute("UPDATE batches SET status = 'submitted', handle = ?, submitted = ? WHERE job_id = ? AND key = ?",
                       (_json({"backend": handle.backend, "job_ids": handle.job_ids, "meta": handle.meta}),
                        time.time(), job_id, key))

    def record_result(self, job_id: str, key: str, result: BatchResult, wave: int = 0, position: int = 0) -> None:
        with self.transaction() as db:
            db.execute('INSERT INTO batches (job_id, key, wave, position, status, "values", stderr, meta, finished, '
                       "cost_usd) VALUES (?, ?, ?, ?, 'done', ?, ?, ?, ?, ?) ON CONFLICT(job_id, key) DO UPDATE SET "
                       'status = \'done\', "values" = excluded."values", stderr = excluded.stderr, '
                       "meta = excluded.meta, finished = excluded.finished, cost_usd = excluded.cost_usd, error = NULL",
                       (job_id, key, wave, position, _result_blob(result), None, _json(result.meta),
                        time.time(), float(result.meta.get("cost_usd", 0.0))))

    def record_failure(self, job_id: str, key: str, message: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE batches SET status = 'failed', error = ? WHERE job_id = ? AND key = ?",
                       (redact(message), job_id, key))

    def unsubmit(self, job_id: str, key: str) -> None:
        """A local simulator's job died with its process: the batch may be submitted again."""
        with self.transaction() as db:
            db.execute("UPDATE batches SET status = 'claimed', handle = NULL WHERE job_id = ? AND key = ?",
                       (job_id, key))

    # -- result cache for deterministic backends ---------------------------------------------------
    def cached(self, backend: str, key: str) -> BatchResult | None:
        row = self.db.execute('SELECT "values", stderr, meta FROM cache WHERE backend = ? AND key = ?',
                              (backend, key)).fetchone()
        return None if row is None else _result(row[0], row[2])

    def cache(self, backend: str, key: str, result: BatchResult) -> None:
        self.db.execute('INSERT OR REPLACE INTO cache (backend, key, "values", stderr, meta) VALUES (?, ?, ?, ?, ?)',
                        (backend, key, _result_blob(result), None, _json(result.meta)))

    def totals(self, job_id: str) -> dict:
        row = self.db.execute("SELECT COUNT(*), SUM(status = 'done'), SUM(attempts), SUM(cost_usd) FROM batches "
                              "WHERE job_id = ?", (job_id,)).fetchone()
        return {"batches": row[0] or 0, "done": row[1] or 0, "submissions": row[2] or 0, "cost_usd": row[3] or 0.0}
