"""The durable spool: every accepted message, its envelope and its delivery state.

Design: the spool is ONE SQLite database, ``$queue_directory/queue.db``, in WAL mode with
``synchronous=FULL``, owned by a single writer thread that does group commit.  Sessions hand in
their writes (``commit``, ``update``, ...) through a queue; the writer takes every request that
is waiting, applies them in ONE transaction and ONE commit -- one WAL fsync for the whole
batch -- and only then resolves each caller's future.  So "250 Ok: queued" is said only after
the message and its envelope are on disk, and a hundred concurrent sessions share one sync
instead of paying one each.  Each request runs in its own savepoint, so one failing request
(a duplicate ID, say) does not take the rest of its batch down with it.

Content and envelope live in separate tables so that recording a delivery attempt
(``update``) rewrites the small envelope row, never the message.  Both carry a SHA-256
taken at commit; ``open`` re-checks every entry and moves what does not verify into
``corrupt/`` instead of delivering damaged mail or refusing to start.  A database file that
SQLite cannot read at all is moved aside whole and a new one started: a mail server must come
up, and the evidence is kept for the administrator.

After the database and its WAL file exist the directory is fsynced, so their directory
entries are durable too.  Files are 0600, directories 0700.  Readers (``envelopes``,
``content``) use a connection of their own; WAL lets them read while the writer writes, and
SQLite's busy timeout keeps a CLI and a server from ever corrupting each other (the server
is normally the only writer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import fcntl
import hashlib
import json
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from backupmx.envelope import Envelope, Recipient
from backupmx.log import log
from backupmx.metrics import instruments

DB_NAME = "queue.db"
LOCK_NAME = "queue.lock"  # serialises the writers of several processes (see _lock_writers)
CORRUPT_DIR = "corrupt"
BUSY_TIMEOUT = 30.0  # seconds a CLI or server waits for the other's write lock
_CORRUPTION_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)
_SQLITE_FULL = 13

_SCHEMA = """
CREATE TABLE IF NOT EXISTS envelope (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS content (
    id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    sha256 TEXT NOT NULL
);
"""

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], object]
Resolve = Callable[[object, BaseException | None], None]


class SpoolError(Exception):
    """The spool could not be written (disk full, unwritable, locked).

    ``disk_full`` says that it was for want of space (SQLITE_FULL, ENOSPC): smtpd answers
    ``452 4.3.1`` then, and ``451 4.3.0`` for any other failure.
    """

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


class _Unreadable(Exception):
    """The database file itself is damaged; it must be moved aside."""


@dataclass
class RecoveryReport:
    """What ``Spool.open`` found and repaired."""

    messages: int = 0  # entries in the spool after recovery
    moved_aside: int = 0
    ids: list[str] = field(default_factory=list)  # the IDs moved aside
    active_reset: int = 0  # "active" markers left behind by a crash
    database_moved_to: str | None = None  # set when the whole database was unreadable

    def __str__(self) -> str:
        text = (
            f"{self.messages} messages, {self.moved_aside} moved to {CORRUPT_DIR}/, "
            f"{self.active_reset} active markers reset"
        )
        if self.database_moved_to:
            text += f", unreadable database moved to {self.database_moved_to}"
        return text


def encode_envelope(env: Envelope) -> str:
    # A shallow copy per field: dataclasses.asdict deep-copies recursively and
    # was a visible share of the CPU per accepted message.
    data = dict(env.__dict__)
    data["recipients"] = [dict(r.__dict__) for r in env.recipients]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode_envelope(text: str) -> Envelope:
    """Rebuild an Envelope from its JSON; raises ValueError/TypeError/KeyError if malformed."""
    return envelope_of(json.loads(text))


def envelope_of(data: dict[str, Any]) -> Envelope:
    """Rebuild an Envelope from its decoded JSON (consumes ``data``)."""
    recipients = [Recipient(**r) for r in data.pop("recipients")]
    return Envelope(recipients=recipients, **data)


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_path(directory: str, stem: str, ext: str) -> str:
    """A name in ``directory`` that does not exist yet, so earlier evidence is never overwritten."""
    path = os.path.join(directory, stem + ext)
    n = 1
    while os.path.exists(path):
        path = os.path.join(directory, f"{stem}.{n}{ext}")
        n += 1
    return path


def _is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL, or ENOSPC/EDQUOT from the file system."""
    if isinstance(exc, SpoolError):
        return exc.disk_full
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == _SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _spool_error(exc: BaseException) -> BaseException:
    if isinstance(exc, (sqlite3.Error, OSError)):
        return SpoolError(f"queue write failed: {exc}", disk_full=_is_disk_full(exc))
    return exc


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPTION_CODES


_STOP = object()


@dataclass
class _Request:
    op: Op
    resolve: Resolve


class Spool:
    """The queue on disk; see the module docstring for the design."""

    def __init__(self, queue_directory: str) -> None:
        self.directory = queue_directory
        self.path = os.path.join(queue_directory, DB_NAME)
        self.corrupt_directory = os.path.join(queue_directory, CORRUPT_DIR)
        self.commits = 0  # transactions committed by the writer (one per batch)
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._requests: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock_fd: int | None = None

    # -- start-up and shutdown ---------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Create or open the spool, verify every entry, and start the writer."""
        try:
            _make_dir(self.directory)
            try:
                report = self._open_db()
            except _Unreadable as exc:
                self._close_connections()
                moved = self._move_database_aside(str(exc))
                report = self._open_db()
                report.database_moved_to = moved
            self._reader = self._connect()
        except (OSError, sqlite3.Error, SpoolError) as exc:
            self._close_connections()
            raise SpoolError(f"cannot open queue {self.path}: {exc}",
                             disk_full=_is_disk_full(exc)) from exc
        self._start_writer()
        return report

    def attach(self) -> None:
        """Open a spool that another process of this server has opened and checked.

        An smtpd worker only adds messages; the start-up checks, moving damaged entries
        aside and resetting crash markers are the master's, done once before any worker
        attaches.  Several processes may write: SQLite serialises their transactions.
        """
        try:
            self._db = self._connect()
            self._reader = self._connect()
        except sqlite3.Error as exc:
            self._close_connections()
            raise SpoolError(f"cannot open queue {self.path}: {exc}") from exc
        self._start_writer()

    def _start_writer(self) -> None:
        try:
            self._lock_fd = os.open(os.path.join(self.directory, LOCK_NAME),
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("qmgr", f"cannot open the writers' lock of {self.directory}: {exc}")
            self._lock_fd = None
        with self._state_lock:
            self._writer = threading.Thread(target=self._run, name="spool-writer", daemon=True)
            self._writer.start()

    def close(self) -> None:
        """Finish the writes already handed in, stop the writer, close the database."""
        with self._state_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._requests.put(_STOP)
            writer.join()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._close_connections()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _close_connections(self) -> None:
        for db in (self._db, self._reader):
            if db is not None:
                db.close()
        self._db = self._reader = None

    def _open_db(self) -> RecoveryReport:
        """Open the database and run the start-up checks; raise _Unreadable if it is damaged."""
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        try:
            db = self._db = self._connect()
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolError(f"cannot put {self.path} into WAL mode (got {mode})")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("COMMIT")
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.chmod(self.path + suffix, 0o600)
            _fsync_dir(self.directory)
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _Unreadable("; ".join(str(p) for p in problems[:3]))
            return self._recover(db)
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise _Unreadable(str(exc)) from exc
            raise

    def _recover(self, db: sqlite3.Connection) -> RecoveryReport:
        report = RecoveryReport()
        db.execute("BEGIN IMMEDIATE")
        try:
            report.active_reset = db.execute(
                "UPDATE envelope SET active = 0 WHERE active != 0"
            ).rowcount
            bad = _unverified(db)
            for entry_id, why in bad:
                self._move_aside(db, entry_id, why)
                report.ids.append(entry_id)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        report.moved_aside = len(report.ids)
        report.messages = db.execute("SELECT count(*) FROM envelope").fetchone()[0]
        return report

    def _move_aside(self, db: sqlite3.Connection, entry_id: str, why: str) -> None:
        """Save what can be read of an entry under corrupt/ (durably), then drop it."""
        _make_dir(self.corrupt_directory)
        stem = re.sub(r"[^0-9A-Za-z]", "_", entry_id)[:64] or "unnamed"
        env_row = db.execute("SELECT data FROM envelope WHERE id = ?", (entry_id,)).fetchone()
        content_row = db.execute("SELECT data FROM content WHERE id = ?", (entry_id,)).fetchone()
        saved = []
        for row, ext in ((content_row, ".eml"), (env_row, ".json")):
            if row is None:
                continue
            data = row[0]
            path = _free_path(self.corrupt_directory, stem, ext)
            _write_file(path, data.encode() if isinstance(data, str) else bytes(data))
            saved.append(os.path.join(CORRUPT_DIR, os.path.basename(path)))
        _fsync_dir(self.corrupt_directory)
        db.execute("DELETE FROM envelope WHERE id = ?", (entry_id,))
        db.execute("DELETE FROM content WHERE id = ?", (entry_id,))
        where = " and ".join(f'"{p}"' for p in saved) or "nowhere (nothing readable)"
        log.warning("qmgr", f"{entry_id}: corrupt queue entry ({why}) saved as {where}")

    def _move_database_aside(self, why: str) -> str:
        _make_dir(self.corrupt_directory)
        stamp = time.strftime("%Y%m%d%H%M%S")
        target = _free_path(self.corrupt_directory, f"{DB_NAME}.{stamp}", "")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, target + suffix)
        _fsync_dir(self.corrupt_directory)
        _fsync_dir(self.directory)
        log.warning(
            "qmgr",
            f"unreadable queue database {self.path} ({why}) moved to {target}; starting a new one",
        )
        return target

    # -- the writer --------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._requests.get()
            if first is _STOP:
                break
            assert isinstance(first, _Request)
            batch = [first]
            self._lock_writers()  # what arrives meanwhile joins this batch
            while True:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                assert isinstance(more, _Request)
                batch.append(more)
            try:
                self._write(batch)
            except BaseException as exc:  # the writer must outlive any single batch
                for req in batch:
                    req.resolve(None, SpoolError(f"queue writer failed: {exc!r}",
                                                 disk_full=_is_disk_full(exc)))
            finally:
                self._unlock_writers()

    def _lock_writers(self) -> None:
        """Wait for the other processes' writers; wakes the moment the holder is done.

        SQLite's own busy handler would sleep 1, 2, 5, 10 ... ms between tries, and with
        several smtpd workers committing at once those sleeps became the latency of a 250.
        """
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            except OSError:
                pass  # SQLite's own locking still keeps the writers apart

    def _unlock_writers(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except OSError:
                pass

    def _write(self, batch: list[_Request]) -> None:
        """Apply a batch in one transaction; drop a failed request and retry the rest if SQLite
        had to abandon the whole transaction (as it may on SQLITE_FULL or I/O errors)."""
        db = self._db
        assert db is not None
        pending = batch
        while pending:
            done: list[tuple[_Request, object]] = []
            failed: list[tuple[_Request, BaseException]] = []
            aborted = False
            started = time.monotonic()
            try:
                db.execute("BEGIN IMMEDIATE")
                for req in pending:
                    db.execute("SAVEPOINT op")
                    try:
                        result = req.op(db)
                    except Exception as op_error:
                        failed.append((req, op_error))
                        if not db.in_transaction:
                            aborted = True
                            break
                        db.execute("ROLLBACK TO op")
                        db.execute("RELEASE op")
                    else:
                        db.execute("RELEASE op")
                        done.append((req, result))
                if not aborted:
                    db.execute("COMMIT")
                    self.commits += 1
                    instruments.SPOOL_COMMITS.observe(time.monotonic() - started)
            except sqlite3.Error as batch_error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                for req in pending:
                    req.resolve(None, _spool_error(batch_error))
                return
            for req, error in failed:
                req.resolve(None, _spool_error(error))
            if not aborted:
                for req, result in done:
                    req.resolve(result, None)
                return
            dropped = {id(req) for req, _ in failed}
            pending = [req for req in pending if id(req) not in dropped]

    def _submit(self, op: Op, resolve: Resolve) -> None:
        with self._state_lock:
            if self._writer is None:
                raise SpoolError("queue is not open")
            self._requests.put(_Request(op, resolve))

    async def _call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: object, exc: BaseException | None) -> None:
            if future.done():  # the caller gave up waiting
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(cast(T, result))

        def resolve(result: object, exc: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(settle, result, exc)
            except RuntimeError:  # the loop is gone; nobody is waiting any more
                pass

        self._submit(op, resolve)
        return await future

    def _call_sync(self, op: Callable[[sqlite3.Connection], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def resolve(result: object, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(cast(T, result))

        self._submit(op, resolve)
        return future.result()

    # -- writes ------------------------------------------------------------------------------

    async def commit(self, env: Envelope, content: bytes) -> str:
        """Store a new message; durable when this returns.  Raises SpoolError.

        Returns the envelope as stored (JSON), so that passing it on costs no second encoding.
        """
        op, text = _insert_op(env, content)
        await self._call(op)
        return text

    def commit_sync(self, env: Envelope, content: bytes) -> None:
        """``commit`` for threads without an event loop (CLI, bounce injection)."""
        self._call_sync(_insert_op(env, content)[0])

    async def update(self, env: Envelope) -> bool:
        """Persist recipient states, hold and history; False if the entry is gone."""
        return await self._call(_update_op(env))

    async def mark_active(self, entry_id: str, active: bool) -> None:
        """Record that a delivery attempt runs (shown by ``queue list``; reset at start-up)."""

        def op(db: sqlite3.Connection) -> None:
            db.execute("UPDATE envelope SET active = ? WHERE id = ?", (int(active), entry_id))

        await self._call(op)

    async def remove(self, entry_id: str) -> None:
        """Drop a finished message."""
        await self._call(_delete_op(entry_id))

    async def delete(self, entry_id: str) -> bool:
        """Delete one message (``postsuper -d``); False if there was none."""
        return await self._call(_delete_op(entry_id))

    async def delete_all(self) -> list[str]:
        """Delete every message (``postsuper -d ALL``) in one transaction; the IDs deleted."""

        def op(db: sqlite3.Connection) -> list[str]:
            ids = [str(row[0]) for row in db.execute("SELECT id FROM envelope")]
            db.execute("DELETE FROM envelope")
            db.execute("DELETE FROM content")
            return ids

        return await self._call(op)

    async def set_hold(self, entry_id: str, hold: bool) -> bool:
        """Put a message on hold or release it; False if there is no such message."""

        def op(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT data FROM envelope WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                return False
            env = decode_envelope(row[0])
            env.hold = hold
            _update_op(env)(db)
            return True

        return await self._call(op)

    # -- reads -------------------------------------------------------------------------------

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._read_lock:
            if self._reader is None:
                raise SpoolError("queue is not open")
            try:
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"queue read failed: {exc}") from exc

    def envelopes(self) -> list[Envelope]:
        """Every queued envelope, in arrival order of the writes, without content."""
        result = []
        for entry_id, data in self._read("SELECT id, data FROM envelope ORDER BY rowid"):
            try:
                result.append(decode_envelope(str(data)))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("qmgr", f"{entry_id}: unreadable envelope skipped: {exc}")
        return result

    async def queued_ids(self) -> set[str]:
        """Every queued ID, read by the writer: after every write already handed in."""
        def op(db: sqlite3.Connection) -> set[str]:
            return {str(row[0]) for row in db.execute("SELECT id FROM envelope")}
        return await self._call(op)

    def envelope(self, entry_id: str) -> Envelope | None:
        rows = self._read("SELECT data FROM envelope WHERE id = ?", (entry_id,))
        return decode_envelope(str(rows[0][0])) if rows else None

    def active_ids(self) -> set[str]:
        """IDs whose delivery attempt runs, as recorded by ``mark_active``."""
        return {str(row[0]) for row in self._read("SELECT id FROM envelope WHERE active != 0")}

    def content(self, entry_id: str) -> bytes:
        """The message as received.  KeyError if there is none -- also when its checksum fails,
        in which case the entry has been moved aside into corrupt/."""
        rows = self._read("SELECT data, sha256 FROM content WHERE id = ?", (entry_id,))
        if not rows:
            raise KeyError(entry_id)
        data, digest = rows[0]
        if not isinstance(data, bytes) or not _content_ok(data, digest):
            self._call_sync(lambda db: self._move_aside(db, entry_id, "content checksum"))
            raise KeyError(entry_id)
        return data


def _insert_op(env: Envelope, content: bytes) -> tuple[Op, str]:
    """Serialise in the caller's thread so the writer only writes; the op and the JSON."""
    text = encode_envelope(env)
    row = (env.id, text, _sha(text))
    blob = (env.id, content, _sha(content))

    def op(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO envelope (id, data, sha256) VALUES (?, ?, ?)", row)
        db.execute("INSERT INTO content (id, data, sha256) VALUES (?, ?, ?)", blob)

    return op, text


def _update_op(env: Envelope) -> Callable[[sqlite3.Connection], bool]:
    text = encode_envelope(env)
    args = (text, _sha(text), env.id)

    def op(db: sqlite3.Connection) -> bool:
        sql = "UPDATE envelope SET data = ?, sha256 = ? WHERE id = ?"
        return db.execute(sql, args).rowcount > 0

    return op


def _delete_op(entry_id: str) -> Callable[[sqlite3.Connection], bool]:
    def op(db: sqlite3.Connection) -> bool:
        found = db.execute("DELETE FROM envelope WHERE id = ?", (entry_id,)).rowcount > 0
        db.execute("DELETE FROM content WHERE id = ?", (entry_id,))
        return found

    return op


def _content_ok(data: object, digest: object) -> bool:
    return isinstance(data, bytes) and _sha(data) == digest


def _envelope_problem(entry_id: str, data: object, digest: object) -> str | None:
    if not isinstance(data, str) or _sha(data) != digest:
        return "envelope checksum"
    try:
        env = decode_envelope(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"envelope unreadable: {exc}"
    return None if env.id == entry_id else "envelope names another queue ID"


def _unverified(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """Every entry whose envelope or content does not verify, with the reason."""
    bad = []
    rows = db.execute(
        "SELECT e.id, e.data, e.sha256, c.data, c.sha256 "
        "FROM envelope e LEFT JOIN content c ON c.id = e.id"
    )
    for entry_id, data, digest, content, content_digest in rows:
        problem = _envelope_problem(entry_id, data, digest)
        if problem is None and content is None:
            problem = "content missing"
        elif problem is None and not _content_ok(content, content_digest):
            problem = "content checksum"
        if problem is not None:
            bad.append((str(entry_id), problem))
    orphans = db.execute("SELECT id FROM content WHERE id NOT IN (SELECT id FROM envelope)")
    bad.extend((str(row[0]), "content without envelope") for row in orphans)
    return bad
