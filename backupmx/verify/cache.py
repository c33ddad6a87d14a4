"""The persistent address-verification cache: one SQLite file, or a Redis shared by nodes.

``address_verify_map`` names the store like a Postfix table (``btree:PATH``,
``hash:PATH``, ``lmdb:PATH``, ``sqlite:PATH``); whatever the type, backupmx keeps a
SQLite database at exactly PATH, so the cache survives restarts.
``redis://HOST:PORT/DB`` keeps the records in Redis instead, shared by every node
that names it (backupmx/verify/redis_cache.py).  An empty map keeps the cache in
memory only.  A small in-memory mirror answers repeated queries, so a cache hit at
RCPT time costs at most one indexed read.  With a shared store another node's
newer record is seen once this node's mirrored one is due for a refresh probe;
a miss is never mirrored, so a record that another node stored is found at once.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from typing import Protocol

from backupmx.printable import printable
from backupmx.redisstore import is_redis, parse_url
from backupmx.verify.decide import Entry
from backupmx.verify.redis_cache import RedisRecords

STORE_TYPES = ("btree", "hash", "lmdb", "sqlite")
MIRROR_SIZE = 50_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS verify (address TEXT PRIMARY KEY, status INTEGER NOT NULL, "
    "probed REAL NOT NULL, updated REAL NOT NULL, text TEXT NOT NULL) WITHOUT ROWID"
)


def map_path(spec: str) -> str | None:
    """The database path (or redis URL) of ``address_verify_map``; None for in-memory.

    ValueError if the spec names nothing this version can open.
    """
    spec = spec.strip()
    if not spec:
        return None
    if is_redis(spec):
        try:
            return str(parse_url(spec))
        except ValueError as e:
            raise ValueError(f"address_verify_map: {e}") from None
    kind, sep, path = spec.partition(":")
    if not sep or kind.lower() not in STORE_TYPES:
        raise ValueError(
            f"address_verify_map: unsupported store {spec!r} (use "
            + ", ".join(f"{k}:PATH" for k in STORE_TYPES)
            + ", redis://HOST:PORT/DB, or empty for memory only)"
        )
    if not path:
        raise ValueError(f"address_verify_map: {spec!r}: the path is missing")
    return path


class Records(Protocol):
    """Where the records live; ``shared``: other processes write them too."""

    shared: bool

    def get(self, address: str) -> Entry | None: ...
    def put(self, address: str, entry: Entry) -> None: ...
    def delete(self, address: str) -> None: ...
    def items(self) -> Iterator[tuple[str, Entry]]: ...
    def close(self) -> None: ...


class MemoryRecords:
    shared = False

    def __init__(self) -> None:
        self.records: dict[str, Entry] = {}

    def get(self, address: str) -> Entry | None:
        return self.records.get(address)

    def put(self, address: str, entry: Entry) -> None:
        self.records[address] = entry

    def delete(self, address: str) -> None:
        self.records.pop(address, None)

    def items(self) -> Iterator[tuple[str, Entry]]:
        yield from list(self.records.items())

    def close(self) -> None:
        pass


class SqliteRecords:
    """Table ``verify(address, status, probed, updated, text)`` in the file at ``path``."""

    shared = False

    def __init__(self, path: str, readonly: bool) -> None:
        self.readonly = readonly
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            return
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)

    def get(self, address: str) -> Entry | None:
        try:
            row = self.db.execute(
                "SELECT status, probed, updated, text FROM verify WHERE address = ?", (address,)
            ).fetchone()
        except sqlite3.OperationalError:
            if self.readonly:
                return None  # no table yet: nothing was ever stored
            raise
        if row is not None and row[0] in (0, 1, 2, 3):
            return Entry(int(row[0]), float(row[1]), float(row[2]), str(row[3]))
        return None

    def put(self, address: str, entry: Entry) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO verify (address, status, probed, updated, text) "
            "VALUES (?, ?, ?, ?, ?)",
            (address, entry.status, entry.probed, entry.updated, entry.text),
        )

    def delete(self, address: str) -> None:
        self.db.execute("DELETE FROM verify WHERE address = ?", (address,))

    def items(self) -> Iterator[tuple[str, Entry]]:
        for a, s, p, u, t in self.db.execute(
            "SELECT address, status, probed, updated, text FROM verify"
        ).fetchall():
            if s in (0, 1, 2, 3):
                yield str(a), Entry(int(s), float(p), float(u), str(t))

    def close(self) -> None:
        self.db.close()


class Store:
    """Read-through, write-through cache records keyed by the address exactly as given.

    Keys are case-sensitive, as in Postfix.  Only the process that owns the server
    writes (with Redis: the servers of every node); ``readonly`` opens the store for
    inspection by the command line.
    """

    def __init__(self, path: str | None, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._records: Records | None = MemoryRecords() if path is None else None
        self._mirror: OrderedDict[str, Entry | None] = OrderedDict()

    def open(self) -> None:
        self._conn()

    def close(self) -> None:
        if self._records is not None and self.path is not None:
            self._records.close()
            self._records = None
        self._mirror.clear()

    def _conn(self) -> Records:
        if self._records is None:
            assert self.path is not None  # only a memory store has no path, and it is made
            if is_redis(self.path):
                self._records = RedisRecords(parse_url(self.path))
            else:
                self._records = SqliteRecords(self.path, self.readonly)
        return self._records

    def get(self, address: str) -> Entry | None:
        """The record, or None when there is none (a malformed record counts as none)."""
        if address in self._mirror:
            self._mirror.move_to_end(address)
            return self._mirror[address]
        records = self._conn()
        entry = records.get(address)
        self._remember(records, address, entry)
        return entry

    def put(self, address: str, entry: Entry) -> None:
        entry = Entry(entry.status, entry.probed, entry.updated, printable(entry.text))
        records = self._conn()
        records.put(address, entry)
        self._remember(records, address, entry)

    def delete(self, address: str) -> None:
        records = self._conn()
        records.delete(address)
        self._remember(records, address, None)

    def items(self) -> Iterator[tuple[str, Entry]]:
        return self._conn().items()

    def _remember(self, records: Records, address: str, entry: Entry | None) -> None:
        if entry is None and records.shared:
            self._mirror.pop(address, None)
            return
        self._mirror[address] = entry
        self._mirror.move_to_end(address)
        while len(self._mirror) > MIRROR_SIZE:
            self._mirror.popitem(last=False)
