"""The persistent greylist store: triplets and client auto-whitelist counts.

``greylist_store`` names it like every read-write store (interface.md):
``btree:PATH``, ``hash:PATH``, ``lmdb:PATH`` and ``sqlite:PATH`` are all one SQLite
file at exactly PATH, so a configuration written for Postfix-style map types works
and every node keeps the same on-disk format.  Each write is its own transaction:
greylisting survives a restart, which is the point of greylisting a retrying MTA.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

_TYPES = ("btree", "hash", "lmdb", "sqlite")


class StoreSpecError(ValueError):
    pass


def store_path(spec: str) -> str:
    """The file of a store spec; ValueError for what this version cannot open."""
    if spec.startswith("redis://"):
        raise StoreSpecError(f"{spec}: redis stores are not supported in this version")
    kind, sep, path = spec.partition(":")
    if not sep or kind.lower() not in _TYPES or not path:
        raise StoreSpecError(f"{spec}: expected btree:PATH, hash:PATH, lmdb:PATH or sqlite:PATH")
    return path


@dataclass(frozen=True)
class Triplet:
    first: float  # first seen (restarted when a retry came too late)
    last: float  # last seen


@dataclass(frozen=True)
class Client:
    count: int  # greylisting passes (at most one per hour)
    last: float


class GreylistStore:
    """SQLite tables ``triplet(key, first, last)`` and ``awl(client, count, last)``."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS triplet "
                        "(key TEXT PRIMARY KEY, first REAL NOT NULL, last REAL NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS awl "
                        "(client TEXT PRIMARY KEY, count INTEGER NOT NULL, last REAL NOT NULL)")

    def triplet(self, key: str) -> Triplet | None:
        row = self.db.execute("SELECT first, last FROM triplet WHERE key = ?", (key,)).fetchone()
        return Triplet(row[0], row[1]) if row else None

    def put_triplet(self, key: str, t: Triplet) -> None:
        self.db.execute("INSERT OR REPLACE INTO triplet VALUES (?, ?, ?)", (key, t.first, t.last))

    def client(self, ip: str) -> Client | None:
        row = self.db.execute("SELECT count, last FROM awl WHERE client = ?", (ip,)).fetchone()
        return Client(row[0], row[1]) if row else None

    def put_client(self, ip: str, c: Client) -> None:
        self.db.execute("INSERT OR REPLACE INTO awl VALUES (?, ?, ?)", (ip, c.count, c.last))

    def purge(self, now: float, max_age: float, delay: float, retry_window: float) -> int:
        """Forget old triplets, never-passed ones past the retry window, and old clients."""
        n = self.db.execute("DELETE FROM triplet WHERE last < ? OR (last - first < ? AND last < ?)",
                            (now - max_age, delay, now - retry_window)).rowcount
        n += self.db.execute("DELETE FROM awl WHERE last < ?", (now - max_age,)).rowcount
        return n

    def close(self) -> None:
        self.db.close()
