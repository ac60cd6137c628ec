"""The durable job store: SQLite in WAL mode, one file per user (or QSSM_STORE / --store).

A job is its spec plus the batches its round trips dispatched. Every batch record is written
before anything depends on it:

    claimed    -> about to submit (a crash here: look the job up by its tag, else submit again)
    submitted  -> provider job ids / task ARNs recorded (a crash here: poll them, never resubmit)
    done       -> values and standard errors stored (never submitted again)
    failed     -> the provider's message

A job has one runner at a time, holding a lease: its owner (host:pid) and a heartbeat that a
daemon thread renews every few seconds. A lease whose heartbeat is older than LEASE_SECONDS is
free, even if its PID now belongs to another process; on the same host a dead PID frees it at once.
A running job whose lease is free has stalled: `qssm resume` continues it, `--force` takes over a
lease that still looks alive.

The file is marked as a qssm store (PRAGMA application_id and a schema version in user_version);
any other file (another application's database, random bytes, a truncated store) is refused
before anything is written to it. Arrays are stored as .npy bytes and read with
allow_pickle=False; nothing in the store is ever unpickled, and a malformed record is reported as
a corrupt store. Credentials never enter it (every text column passes through jobs.redact).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import secrets
import socket
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qssm.backends.base import Handle
from qssm.errors import QssmError
from qssm.jobs.spec import parse_spec
from qssm.paths import kind, stat_path
from qssm.redact import redact
from qssm.types import BatchResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, created REAL, updated REAL, status TEXT, backend TEXT, spec TEXT, source TEXT,
    estimate TEXT, report TEXT, error TEXT, owner TEXT, heartbeat REAL
);
CREATE TABLE IF NOT EXISTS batches (
    job_id TEXT, key TEXT, wave INTEGER, position INTEGER, status TEXT, handle TEXT,
    "values" BLOB, stderr BLOB, meta TEXT, attempts INTEGER DEFAULT 0, error TEXT,
    claimed REAL, submitted REAL, finished REAL, cost_usd REAL DEFAULT 0, owner TEXT,
    acknowledged INTEGER DEFAULT 0,
    PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS cache (backend TEXT, key TEXT, "values" BLOB, stderr BLOB, meta TEXT,
    PRIMARY KEY (backend, key));
"""
APPLICATION_ID = 0x7173736D  # "qssm": PRAGMA application_id of every qssm store
# PRAGMA user_version. 0: written before the marker existed (`qssm store adopt` marks it);
# 1: batches without `acknowledged`, added by the first write of this qssm (reads never write)
SCHEMA_VERSION = 2
ACK_V1 = "(handle IS NOT NULL OR status = 'done')"  # a version-1 row's acknowledged submissions, at least
SQLITE_MAGIC = b"SQLite format 3\x00"
LEASE_SECONDS = 120.0  # a runner whose heartbeat is older than this has lost its job
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
BATCH_STATES = ("claimed", "submitted", "done", "failed")


def default_path() -> Path:
    if os.environ.get("QSSM_STORE"):
        return Path(os.environ["QSSM_STORE"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "qssm" / "jobs.sqlite"


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None, heartbeat: float | None) -> bool:
    """A lease is held while its heartbeat is fresh; on this host a dead PID frees it at once. A
    PID reused by another process keeps it only until the heartbeat expires."""
    if not owner or heartbeat is None or time.time() - heartbeat >= LEASE_SECONDS:
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:  # alive, another user's
            pass
    return True


def _result_blob(result: BatchResult) -> bytes:
    """A result's arrays (values, stderr, per-circuit outcome histograms) as one .npz, no pickles."""
    arrays = {f"counts_{i}": np.ascontiguousarray(c) for i, c in enumerate(result.counts)}
    if result.values is not None:
        arrays.update(values=np.ascontiguousarray(result.values), stderr=np.ascontiguousarray(result.stderr))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _json(obj) -> str:
    return redact(json.dumps(obj, default=_plain))


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {t: [r[0] for r in db.execute("SELECT name FROM pragma_table_info(?)", (t,))] for t in names}


@functools.lru_cache(maxsize=2)
def _qssm_tables(version: int = SCHEMA_VERSION) -> dict[str, list[str]]:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    tables = _tables(db)
    if version < 2:
        tables["batches"] = [c for c in tables["batches"] if c != "acknowledged"]
    return tables


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Bring a marked store's schema to SCHEMA_VERSION, inside the caller's write transaction."""
    if version < 2:
        db.execute("ALTER TABLE batches ADD COLUMN acknowledged INTEGER DEFAULT 0")
        db.execute(f"UPDATE batches SET acknowledged = {ACK_V1}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


# the type of every column qssm reads back (None allowed where the column may be NULL): a row edited
# behind qssm's back is one "store is corrupt" line, never a traceback in a formatter
_JOB_COLUMNS = {"created": (_number, False), "updated": (_number, False), "heartbeat": (_number, True),
                "backend": (str, False), "source": (str, True), "error": (str, True), "owner": (str, True)}
_BATCH_COLUMNS = {"key": (str, False), "wave": (int, False), "position": (int, False), "attempts": (int, False),
                  "cost_usd": (_number, False), "handle": (str, True), "error": (str, True)}


def _bad_column(row: dict, columns: dict) -> str | None:
    for name, (expected, nullable) in columns.items():
        v = row[name]
        if v is None:
            if not nullable:
                return f"{name} is NULL"
            continue
        ok = expected(v) if expected is _number else type(v) is expected
        if not ok:
            return f"{name} is {v!r:.40}"
    return None


def _db_error(path: Path, e: sqlite3.Error) -> QssmError:
    text = str(e)
    if "readonly" in text or "read-only" in text:
        return QssmError(f"store {path} is read-only ({text}); give a writable --store or fix its permissions")
    if "locked" in text or "busy" in text:
        return QssmError(f"store {path} is locked by another process ({text}); try again in a moment")
    return QssmError(f"store is corrupt: {path} ({text}); restore it from a backup or move it aside")


def _each(key: str | list[str]) -> list[str]:
    """One batch key, or a pack's members' keys, as a list (the calls a pack's members share)."""
    return [key] if isinstance(key, str) else list(key)


def _guarded(method):
    """SQLite errors (a malformed page, a locked or read-only file) as one line naming the store."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise _db_error(self.path, e) from None

    return wrapper


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


class _Heartbeat(threading.Thread):
    """Renews a job's lease from its own connection while the runner works (a batch can take
    minutes); stops when released, or when another process has taken the lease over."""

    def __init__(self, path: Path, job_id: str, owner: str):
        super().__init__(daemon=True, name=f"qssm-heartbeat-{job_id}")
        self.path, self.job_id, self.owner = path, job_id, owner
        self.stop = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            while not self.stop.wait(LEASE_SECONDS / 6):
                try:
                    n = db.execute("UPDATE jobs SET heartbeat = ? WHERE id = ? AND owner = ?",
                                   (time.time(), self.job_id, self.owner)).rowcount
                except sqlite3.Error:
                    continue  # busy or transiently unavailable: the next beat tries again
                if n == 0:
                    return  # taken over (`qssm resume --force`): the runner's own heartbeat() stops it
        finally:
            db.close()


class JobStore:
    @_guarded
    def __init__(self, path: str | Path | None = None, create: bool = True):
        """Opens the store at `path` (default: $QSSM_STORE or the user data dir), creating it if
        `create` and it does not exist. Refuses, before writing anything, a path that is not a
        qssm store; opens read-only where the file or its directory cannot be written."""
        if path is not None and not str(path).strip():
            raise QssmError("store path is empty; give the job store file with --store (default: $QSSM_STORE "
                            "or ~/.local/share/qssm/jobs.sqlite)")
        self.path = Path(path) if path is not None else default_path()
        self._beats: dict[str, _Heartbeat] = {}
        self.db = None
        if stat_path(self.path, "store") is None:
            if not create:
                raise QssmError(f"no job store at {self.path}; submit a job first (`qssm submit SPEC`) or pass "
                                f"the --store it was submitted to")
            self._create()
        self.version = self._check()
        self.readonly = not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK))
        self.db = self._connect()
        if not self.readonly:
            self.db.execute("PRAGMA synchronous=NORMAL")

    @classmethod
    def adopt(cls, path: str | Path) -> tuple[JobStore, bool]:
        """Mark a store qssm wrote before the marker existed (its tables, no application_id) as a
        qssm store: the one command that does so (`qssm store adopt`), so a read never writes.
        Returns the store and whether it needed marking."""
        path = Path(path)
        try:
            return cls(path, create=False), False
        except QssmError as e:
            if "qssm store adopt" not in str(e):
                raise
        try:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                if _tables(db) != _qssm_tables(1) or db.execute("PRAGMA application_id").fetchone()[0]:
                    raise QssmError(f"store {path} changed while being adopted; try again")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                _upgrade(db, 1)
                db.execute("COMMIT")
            finally:
                db.close()
        except sqlite3.Error as e:
            raise _db_error(path, e) from None
        return cls(path, create=False), True

    def _create(self) -> None:
        """A new store appears complete or not at all: built beside its path, then linked into place."""
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.new")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(tmp, isolation_level=None)
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("PRAGMA journal_mode=WAL")
            db.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            except OSError:  # no hard links on this filesystem
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except (OSError, sqlite3.Error) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise QssmError(f"cannot create a job store at {self.path} ({reason}); give a writable --store") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _check(self) -> int:
        """Refuse anything but a qssm store, reading only; returns its schema version."""
        p = self.path
        st = stat_path(p, "store")
        if stat.S_ISDIR(st.st_mode):
            raise QssmError(f"store {p} is a directory; give the store file, e.g. --store {p / 'jobs.sqlite'}")
        if not stat.S_ISREG(st.st_mode):
            raise QssmError(f"not a qssm store: {p} is {kind(st.st_mode)}; give a store file with --store")
        try:
            with open(p, "rb") as f:
                header = f.read(100)
        except OSError as e:
            raise QssmError(f"store {p} cannot be read ({e.strerror}); fix its permissions or give another --store") from None
        if not header:
            raise QssmError(f"not a qssm store: {p} is an empty file; remove it or give another --store")
        if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
            raise QssmError(f"not a qssm store: {p} is not an SQLite database; give another --store")
        page_size = int.from_bytes(header[16:18], "big")
        pages = int.from_bytes(header[28:32], "big")
        expected = (65536 if page_size == 1 else page_size) * pages
        if header[24:28] == header[92:96] and st.st_size < expected:  # the page count is valid
            raise QssmError(f"store is corrupt: {p} is truncated ({st.st_size} of {expected} bytes); restore it "
                               f"from a backup or move it aside")
        if int.from_bytes(header[68:72], "big") not in (0, APPLICATION_ID):
            raise QssmError(f"not a qssm store: {p} is another application's SQLite database; give another --store")
        ro = self._connect(readonly=True)
        try:
            app = ro.execute("PRAGMA application_id").fetchone()[0]
            version = ro.execute("PRAGMA user_version").fetchone()[0]
            tables = _tables(ro)
        finally:
            ro.close()
        if app != APPLICATION_ID and tables != _qssm_tables(1):
            names = ", ".join(sorted(tables)) or "none"
            raise QssmError(f"not a qssm store: {p} is an SQLite database with other tables ({names:.80}); "
                            f"give another --store")
        if app != APPLICATION_ID:  # qssm's tables without the marker: a store from before it existed
            raise QssmError(f"store {p} has qssm's tables but no qssm marker (written by an older qssm); if it is "
                            f"yours, adopt it once with `qssm store adopt {p}`")
        if version > SCHEMA_VERSION:
            raise QssmError(f"store {p} has schema version {version}, newer than this qssm's {SCHEMA_VERSION}; "
                            f"upgrade qssm")
        if tables != _qssm_tables(max(version, 1)):
            raise QssmError(f"store is corrupt: {p} lacks qssm's tables; restore it from a backup or move it aside")
        return max(version, 1)

    def _connect(self, readonly: bool | None = None) -> sqlite3.Connection:
        readonly = self.readonly if readonly is None else readonly
        if not readonly:
            return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # autocommit; explicit txns
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return db
        except sqlite3.OperationalError:  # WAL without a writable directory for its index: a snapshot
            db.close()
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def close(self) -> None:
        for job_id in list(self._beats):
            self._stop_beat(job_id)
        if self.db is not None:
            self.db.close()

    def require_writable(self) -> None:
        """Commands that will write call this before any work, so a read-only store fails first."""
        if self.readonly:
            raise QssmError(f"store {self.path} is read-only (no write permission on it or its directory); reading "
                            f"works, this needs to write: give a writable --store or fix its permissions")

    @contextlib.contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE: one writer at a time, so check-then-write steps are atomic across processes."""
        self.require_writable()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self.version < SCHEMA_VERSION:  # the first write of this qssm to an older store
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    _upgrade(self.db, version)
                self.version = SCHEMA_VERSION
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _corrupt(self, what: str, e: Exception | str) -> QssmError:
        return QssmError(f"store is corrupt: {self.path}: {what} is unreadable ({str(e)[:100]}); restore the "
                            f"store from a backup, or submit the job again")

    # -- jobs -------------------------------------------------------------------------------------
    @_guarded
    def create_job(self, spec: dict, backend: str, source: str = "", estimate: dict | None = None) -> str:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO jobs (id, created, updated, status, backend, spec, source, estimate) "
                       "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                       (job_id, now, now, backend, _json(spec), source, _json(estimate or {})))
        return job_id

    @_guarded
    def job(self, job_id: str) -> dict:
        row = self.db.execute("SELECT id, created, updated, status, backend, spec, source, estimate, report, error, "
                              "owner, heartbeat FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise QssmError(f"no job {job_id!r:.60} in {self.path}; list jobs with `qssm status`")
        keys = ("id", "created", "updated", "status", "backend", "spec", "source", "estimate", "report", "error",
                "owner", "heartbeat")
        job = dict(zip(keys, row))
        if job["status"] not in JOB_STATES:
            raise self._corrupt(f"job {job_id}'s status", repr(job["status"]))
        if bad := _bad_column(job, _JOB_COLUMNS):
            raise self._corrupt(f"job {job_id}'s row", bad)
        for k in ("spec", "estimate", "report"):
            try:
                job[k] = json.loads(job[k]) if job[k] else None
            except (TypeError, ValueError, RecursionError) as e:
                raise self._corrupt(f"job {job_id}'s {k}", e) from None
            if job[k] is not None and not isinstance(job[k], dict):
                raise self._corrupt(f"job {job_id}'s {k}", "not a JSON object")
        return job

    @_guarded
    def jobs(self, limit: int = 50) -> list[dict]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM jobs ORDER BY created DESC LIMIT ?", (limit,))]
        return [self.job(i) for i in ids]

    def job_spec(self, job_id: str):
        job = self.job(job_id)
        if job["spec"] is None:
            raise self._corrupt(f"job {job_id}'s spec", "empty")
        return parse_spec(job["spec"], job["source"] or job_id)

    @_guarded
    def set_status(self, job_id: str, status: str, error: str | None = None, report: dict | None = None) -> None:
        assert status in JOB_STATES
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = ?, updated = ?, error = COALESCE(?, error), "
                       "report = COALESCE(?, report) WHERE id = ?",
                       (status, time.time(), redact(error) if error else None,
                        _json(report) if report is not None else None, job_id))

    @_guarded
    def acquire(self, job_id: str, owner: str | None = None, force: bool = False) -> bool:
        """Become the job's only runner unless a live process already is (atomic across processes);
        `force` takes the lease over from a runner that looks alive. Starts the heartbeat."""
        owner = owner or me()
        self._check_results(job_id)  # a corrupt record is found before anything is written
        with self.transaction() as db:
            row = db.execute("SELECT owner, heartbeat FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise QssmError(f"no job {job_id!r:.60} in {self.path}")
            if row[0] and row[0] != owner and _alive(row[0], row[1]) and not force:
                return False
            db.execute("UPDATE jobs SET owner = ?, heartbeat = ?, status = 'running', updated = ? WHERE id = ?",
                       (owner, time.time(), time.time(), job_id))
        self._stop_beat(job_id)
        beat = self._beats[job_id] = _Heartbeat(self.path, job_id, owner)
        beat.start()
        return True

    @_guarded
    def owner(self, job_id: str) -> str | None:
        row = self.db.execute("SELECT owner, heartbeat FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row and _alive(row[0], row[1]) else None

    def stalled(self, job: dict) -> bool:
        """Queued or running, and nobody holds its lease: `qssm resume` is what it needs."""
        if job["status"] not in ("queued", "running") or _alive(job["owner"], job["heartbeat"]):
            return False
        return job["status"] == "running" or time.time() - (job["updated"] or 0) > LEASE_SECONDS

    @_guarded
    def release(self, job_id: str, owner: str | None = None) -> None:
        self._stop_beat(job_id)
        with self.transaction() as db:
            db.execute("UPDATE jobs SET owner = NULL WHERE id = ? AND owner = ?", (job_id, owner or me()))

    def _stop_beat(self, job_id: str) -> None:
        beat = self._beats.pop(job_id, None)
        if beat is not None:
            beat.stop.set()
            beat.join(timeout=5.0)

    @_guarded
    def heartbeat(self, job_id: str) -> None:
        """Renew this process's lease; if another process has taken the job over, stop here."""
        with self.transaction() as db:
            row = db.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None and row[0] not in (None, me()):
                raise QssmError(f"job {job_id} was taken over by {row[0]} (qssm resume --force); this process stops")
            db.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (time.time(), job_id))

    # -- batches ----------------------------------------------------------------------------------
    def _arrays(self, blob, what: str) -> dict[str, np.ndarray]:
        """A result blob (.npz of 2-d numeric arrays, written by _result_blob), checked."""
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, TypeError, AttributeError) as e:
            raise self._corrupt(what, e) from None
        for k, a in arrays.items():
            if a.dtype.kind not in "fiu" or a.ndim != 2:
                raise self._corrupt(f"{what}: {k}", f"expected a 2-d numeric array, got {a.dtype} of shape {a.shape}")
        return arrays

    def _result(self, job_id: str, key: str, blob, meta) -> BatchResult:
        what = f"batch {key[:12]} of job {job_id}"
        arrays = self._arrays(blob, what)
        v, e = arrays.pop("values", None), arrays.pop("stderr", None)
        if (v is None) != (e is None) or (v is not None and v.shape != e.shape):
            raise self._corrupt(what, "values and standard errors do not match")
        try:
            counts = tuple(arrays.pop(f"counts_{i}") for i in range(len(arrays)))
        except KeyError:
            raise self._corrupt(what, f"unexpected arrays {sorted(arrays)}") from None
        try:
            m = json.loads(meta or "{}")
        except (TypeError, ValueError, RecursionError) as err:
            raise self._corrupt(f"{what}: meta", err) from None
        if not isinstance(m, dict):
            raise self._corrupt(f"{what}: meta", "not a JSON object")
        try:  # the accounting fields are stored beside the report-only tags (BatchResult.accounting)
            acc = {"shots": int(m.pop("shots", 0) or 0), "job_ids": tuple(str(j) for j in m.pop("job_ids", None) or ()),
                   "cost_usd": float(m.pop("cost_usd", 0.0) or 0.0), "seconds": float(m.pop("seconds", 0.0) or 0.0)}
        except (TypeError, ValueError) as err:
            raise self._corrupt(f"{what}: meta", err) from None
        return BatchResult(v, e, counts, m, **acc)

    def parse_handle(self, job_id: str, key: str, text: str) -> Handle:
        """A batch's stored handle (provider job ids), or a one-line "store is corrupt"."""
        try:
            handle = Handle(**json.loads(text))
        except (TypeError, ValueError, RecursionError) as e:
            raise self._corrupt(f"batch {key[:12]} of job {job_id}: handle", e) from None
        if not (isinstance(handle.backend, str) and isinstance(handle.job_ids, list)
                and all(isinstance(i, str) for i in handle.job_ids) and isinstance(handle.meta, dict)):
            raise self._corrupt(f"batch {key[:12]} of job {job_id}: handle", "fields of the wrong type")
        return handle

    def _checked_batch(self, job_id: str, row: tuple) -> tuple:
        """A `batches()` row with every column of its type, or a one-line "store is corrupt"."""
        fields = dict(zip(("key", "wave", "position", "status", "attempts", "cost_usd", "handle", "error"), row))
        bad = _bad_column(fields, _BATCH_COLUMNS)
        if bad is None and fields["status"] not in BATCH_STATES:
            bad = f"status is {fields['status']!r:.40}"
        if bad:
            raise self._corrupt(f"a batch of job {job_id}", bad)
        return row

    @_guarded
    def _check_results(self, job_id: str) -> None:
        self.batches(job_id)  # every row's columns of their types
        for key, values, stderr, meta, handle in self.db.execute(
                'SELECT key, "values", stderr, meta, handle FROM batches WHERE job_id = ? AND status = \'done\'',
                (job_id,)):
            self._result(job_id, key, values, meta)
            if handle:
                self.parse_handle(job_id, key, handle)

    @_guarded
    def batch(self, job_id: str, key: str) -> BatchRecord | None:
        row = self.db.execute('SELECT key, wave, position, status, handle, "values", stderr, meta, attempts, error '
                              "FROM batches WHERE job_id = ? AND key = ?", (job_id, key)).fetchone()
        if row is None:
            return None
        self._checked_batch(job_id, (row[0], row[1], row[2], row[3], row[8], 0.0, row[4], row[9]))
        handle = self.parse_handle(job_id, key, row[4]) if row[4] else None
        result = self._result(job_id, key, row[5], row[7]) if row[3] == "done" else None
        return BatchRecord(row[0], row[1], row[2], row[3], handle, result, row[8], row[9])

    @_guarded
    def batches(self, job_id: str) -> list[tuple]:
        rows = self.db.execute("SELECT key, wave, position, status, attempts, cost_usd, handle, error FROM batches "
                               "WHERE job_id = ? ORDER BY wave, position", (job_id,)).fetchall()
        return [self._checked_batch(job_id, r) for r in rows]

    def claim(self, job_id: str, key: str, wave: int, position: int) -> bool:
        """Mark a batch as being submitted by this process; False if another process holds it (it
        claimed the batch and still holds the job's lease)."""
        return self.claim_all(job_id, [key], wave, [position])

    @_guarded
    def claim_all(self, job_id: str, keys: list[str], wave: int, positions: list[int]) -> bool:
        """Claim batches together (a pack's members), all or none: False, claiming none, if any is
        submitted, done, or held by another live process."""
        with self.transaction() as db:
            for key in keys:
                row = db.execute("SELECT b.status, b.owner, j.owner, j.heartbeat FROM batches b JOIN jobs j ON "
                                 "j.id = b.job_id WHERE b.job_id = ? AND b.key = ?", (job_id, key)).fetchone()
                if row is not None and row[0] in ("submitted", "done"):
                    return False
                if row is not None and row[1] and row[1] != me() and row[1] == row[2] and _alive(row[2], row[3]):
                    return False
            for key, position in zip(keys, positions):
                db.execute("INSERT INTO batches (job_id, key, wave, position, status, claimed, owner, attempts) "
                           "VALUES (?, ?, ?, ?, 'claimed', ?, ?, 1) ON CONFLICT(job_id, key) DO UPDATE SET "
                           "status = 'claimed', claimed = excluded.claimed, owner = excluded.owner, "
                           "attempts = attempts + 1", (job_id, key, wave, position, time.time(), me()))
        return True

    def record_handle(self, job_id: str, key: str, handle: Handle) -> None:
        self.record_handles(job_id, {key: handle})

    @_guarded
    def record_handles(self, job_id: str, handles: dict[str, Handle]) -> None:
        """The provider acknowledged the submission (it returned ids, or holds them under our tag):
        one transaction for a pack's members."""
        with self.transaction() as db:
            for key, handle in handles.items():
                db.execute("UPDATE batches SET status = 'submitted', handle = ?, submitted = ?, "
                           "acknowledged = acknowledged + 1 WHERE job_id = ? AND key = ?",
                           (_json({"backend": handle.backend, "job_ids": handle.job_ids, "meta": handle.meta}),
                            time.time(), job_id, key))

    def record_result(self, job_id: str, key: str, result: BatchResult, wave: int = 0, position: int = 0) -> None:
        self.record_results(job_id, {key: result}, wave, [position])

    @_guarded
    def record_results(self, job_id: str, results: dict[str, BatchResult], wave: int, positions: list[int]) -> None:
        """Results, all in one transaction (a pack's members are done together or not at all)."""
        with self.transaction() as db:
            for (key, result), position in zip(results.items(), positions):
                db.execute('INSERT INTO batches (job_id, key, wave, position, status, "values", stderr, meta, '
                           "finished, cost_usd) VALUES (?, ?, ?, ?, 'done', ?, ?, ?, ?, ?) ON CONFLICT(job_id, key) "
                           'DO UPDATE SET status = \'done\', "values" = excluded."values", stderr = excluded.stderr, '
                           "meta = excluded.meta, finished = excluded.finished, cost_usd = excluded.cost_usd, "
                           "error = NULL", (job_id, key, wave, position, _result_blob(result), None,
                                            _json({**result.meta, **result.accounting()}), time.time(),
                                            float(result.cost_usd)))

    @_guarded
    def record_usage(self, job_id: str, key: str, usage: dict) -> None:
        """What the provider billed for a finished batch, once it has settled (usage "final")."""
        with self.transaction() as db:
            row = db.execute("SELECT meta FROM batches WHERE job_id = ? AND key = ?", (job_id, key)).fetchone()
            meta = json.loads(row[0] or "{}") if row else {}
            meta.update(usage="final", qpu_seconds=float(usage["qpu_seconds"]), cost_usd=float(usage["cost_usd"]))
            db.execute("UPDATE batches SET meta = ?, cost_usd = ? WHERE job_id = ? AND key = ?",
                       (_json(meta), float(usage["cost_usd"]), job_id, key))

    @_guarded
    def pending_usage(self, job_id: str) -> list[tuple[str, Handle]]:
        """(key, handle) of finished batches whose usage the provider had not settled when stored."""
        out = []
        for key, meta, handle in self.db.execute("SELECT key, meta, handle FROM batches WHERE job_id = ? AND "
                                                 "status = 'done' AND handle IS NOT NULL", (job_id,)).fetchall():
            try:
                pending = json.loads(meta or "{}").get("usage") == "pending"
            except (TypeError, ValueError, AttributeError) as e:
                raise self._corrupt(f"batch {key[:12]} of job {job_id}: meta", e) from None
            if pending:
                out.append((key, self.parse_handle(job_id, key, handle)))
        return out

    @_guarded
    def record_failure(self, job_id: str, key: str | list[str], message: str) -> None:
        with self.transaction() as db:
            for k in _each(key):
                db.execute("UPDATE batches SET status = 'failed', error = ? WHERE job_id = ? AND key = ?",
                           (redact(message), job_id, k))

    @_guarded
    def note(self, job_id: str, key: str | list[str], message: str) -> None:
        """A passing remark on a batch (a pack's members) still under way (a transient fault being
        retried): `qssm status` shows it beside the batch until its result is recorded."""
        with self.transaction() as db:
            for k in _each(key):
                db.execute("UPDATE batches SET error = ? WHERE job_id = ? AND key = ? AND status != 'done'",
                           (redact(message), job_id, k))

    @_guarded
    def unsubmit(self, job_id: str, key: str | list[str]) -> None:
        """A local simulator's job died with its process: the batch (a pack's members) may be
        submitted again."""
        with self.transaction() as db:
            for k in _each(key):
                db.execute("UPDATE batches SET status = 'claimed', handle = NULL WHERE job_id = ? AND key = ?",
                           (job_id, k))

    # -- result cache for deterministic backends ---------------------------------------------------
    @_guarded
    def cached(self, backend: str, key: str) -> BatchResult | None:
        row = self.db.execute('SELECT "values", stderr, meta FROM cache WHERE backend = ? AND key = ?',
                              (backend, key)).fetchone()
        return None if row is None else self._result(f"cache:{backend}", key, row[0], row[2])

    @_guarded
    def cache(self, backend: str, key: str, result: BatchResult) -> None:
        with self.transaction() as db:
            db.execute('INSERT OR REPLACE INTO cache (backend, key, "values", stderr, meta) VALUES (?, ?, ?, ?, ?)',
                       (backend, key, _result_blob(result), None, _json({**result.meta, **result.accounting()})))

    @_guarded
    def reopen(self, job_id: str) -> int:
        """A cancelled job, continued by the runner holding its lease: running again, and the batches it had in flight (cancelled at
        the provider) marked failed so the dispatcher submits them afresh; finished batches stay
        done and are never paid again. Returns how many in-flight batches were reopened."""
        with self.transaction() as db:
            n = db.execute("UPDATE batches SET status = 'failed', error = 'cancelled in flight; submitted again on "
                           "resume' WHERE job_id = ? AND status IN ('claimed', 'submitted')", (job_id,)).rowcount
            db.execute("UPDATE jobs SET status = 'running', error = NULL, report = NULL, updated = ? WHERE id = ?",
                       (time.time(), job_id))
        return n

    @_guarded
    def totals(self, job_id: str) -> dict:
        """Batches recorded and done; provider submissions the provider acknowledged (ids returned)
        and claims (attempts to submit, some of which may never have reached it); cost; QPU seconds
        the provider reported; the first claim and last finish (for elapsed time and the ETA); batches
        whose usage the provider had not settled when their result was stored."""
        ack = "acknowledged" if self.version >= 2 else ACK_V1
        row = self.db.execute(f"SELECT COUNT(*), SUM(status = 'done'), SUM({ack}), SUM(attempts), SUM(cost_usd), "
                              "SUM(CASE WHEN json_valid(meta) THEN json_extract(meta, '$.qpu_seconds') END), "
                              "MIN(claimed), MAX(finished), "
                              "SUM(status = 'done' AND meta LIKE '%\"usage\": \"pending\"%') "
                              "FROM batches WHERE job_id = ?", (job_id,)).fetchone()
        numbers = [v if v is None or _number(v) else float("nan") for v in row]
        if any(v != v for v in numbers):
            raise self._corrupt(f"job {job_id}'s batch counters", "not numbers")
        return {"batches": int(numbers[0] or 0), "done": int(numbers[1] or 0), "submissions": int(numbers[2] or 0),
                "claims": int(numbers[3] or 0), "cost_usd": float(numbers[4] or 0.0),
                "qpu_seconds": float(numbers[5] or 0.0), "first_claimed": numbers[6], "last_finished": numbers[7],
                "usage_pending": int(numbers[8] or 0)}
