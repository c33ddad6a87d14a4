"""The persistent address-verification cache: one SQLite file at the map's path.

``address_verify_map`` names the store like a Postfix table (``btree:PATH``,
``hash:PATH``, ``lmdb:PATH``, ``sqlite:PATH``); whatever the type, backupmx keeps a
SQLite database at exactly PATH, so the cache survives restarts.  An empty map
keeps the cache in memory only.  A small in-memory mirror answers repeated
queries, so a cache hit at RCPT time costs at most one indexed read.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator

from backupmx.verify.decide import Entry

STORE_TYPES = ("btree", "hash", "lmdb", "sqlite")
MIRROR_SIZE = 50_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS verify (address TEXT PRIMARY KEY, status INTEGER NOT NULL, "
    "probed REAL NOT NULL, updated REAL NOT NULL, text TEXT NOT NULL) WITHOUT ROWID"
)


def map_path(spec: str) -> str | None:
    """The database path of ``address_verify_map``; None for in-memory; ValueError if bad."""
    spec = spec.strip()
    if not spec:
        return None
    kind, sep, path = spec.partition(":")
    if not sep or kind.lower() not in STORE_TYPES:
        raise ValueError(
            f"address_verify_map: unsupported store {spec!r} (use "
            + ", ".join(f"{k}:PATH" for k in STORE_TYPES) + ", or empty for memory only)"
        )
    if not path:
        raise ValueError(f"address_verify_map: {spec!r}: the path is missing")
    return path


def _printable(text: str) -> str:
    return "".join(c if " " <= c < "\x7f" or c > "\xa0" else "?" for c in text)


class Store:
    """Read-through, write-through cache records keyed by the address exactly as given.

    Keys are case-sensitive, as in Postfix.  Only the process that owns the server
    writes; ``readonly`` opens the file for inspection by the command line.
    """

    def __init__(self, path: str | None, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db: sqlite3.Connection | None = None
        self._mirror: OrderedDict[str, Entry | None] = OrderedDict()
        self._memory: dict[str, Entry] = {}

    def open(self) -> None:
        if self._db is not None or self.path is None:
            return
        if self.readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            return
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._mirror.clear()

    def _conn(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        if self._db is None:
            self.open()
        return self._db

    def get(self, address: str) -> Entry | None:
        """The record, or None when there is none (a malformed record counts as none)."""
        if address in self._mirror:
            self._mirror.move_to_end(address)
            return self._mirror[address]
        db = self._conn()
        if db is None:
            return self._memory.get(address)
        try:
            row = db.execute(
                "SELECT status, probed, updated, text FROM verify WHERE address = ?", (address,)
            ).fetchone()
        except sqlite3.OperationalError:
            if self.readonly:
                return None  # no table yet: nothing was ever stored
            raise
        entry = None
        if row is not None and row[0] in (0, 1, 2, 3):
            entry = Entry(int(row[0]), float(row[1]), float(row[2]), str(row[3]))
        self._remember(address, entry)
        return entry

    def put(self, address: str, entry: Entry) -> None:
        entry = Entry(entry.status, entry.probed, entry.updated, _printable(entry.text))
        db = self._conn()
        if db is None:
            self._memory[address] = entry
        else:
            db.execute(
                "INSERT OR REPLACE INTO verify (address, status, probed, updated, text) "
                "VALUES (?, ?, ?, ?, ?)",
                (address, entry.status, entry.probed, entry.updated, entry.text),
            )
        self._remember(address, entry)

    def delete(self, address: str) -> None:
        db = self._conn()
        if db is None:
            self._memory.pop(address, None)
        else:
            db.execute("DELETE FROM verify WHERE address = ?", (address,))
        self._remember(address, None)

    def items(self) -> Iterator[tuple[str, Entry]]:
        db = self._conn()
        if db is None:
            yield from list(self._memory.items())
            return
        for a, s, p, u, t in db.execute(
            "SELECT address, status, probed, updated, text FROM verify"
        ).fetchall():
            if s in (0, 1, 2, 3):
                yield str(a), Entry(int(s), float(p), float(u), str(t))

    def _remember(self, address: str, entry: Entry | None) -> None:
        self._mirror[address] = entry
        self._mirror.move_to_end(address)
        while len(self._mirror) > MIRROR_SIZE:
            self._mirror.popitem(last=False)
