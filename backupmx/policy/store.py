"""The persistent greylist store: triplets and client auto-whitelist counts.

``greylist_store`` names it like every read-write store (interface.md):
``btree:PATH``, ``hash:PATH``, ``lmdb:PATH`` and ``sqlite:PATH`` are all one SQLite
file at exactly PATH, so a configuration written for Postfix-style map types works
and every node keeps the same on-disk format.  Each write is its own transaction:
greylisting survives a restart, which is the point of greylisting a retrying MTA.
``redis://HOST:PORT/DB`` keeps the same records in a Redis that several nodes
share (backupmx/policy/redis_store.py), so a retry through another node passes.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Protocol

from backupmx.redisstore import is_redis, parse_url

_TYPES = ("btree", "hash", "lmdb", "sqlite")


class StoreSpecError(ValueError):
    pass


def store_path(spec: str) -> str:
    """The file (or normalised redis URL) of a store spec; ValueError for what cannot open."""
    if is_redis(spec):
        try:
            return str(parse_url(spec))
        except ValueError as e:
            raise StoreSpecError(f"greylist_store: {e}") from None
    kind, sep, path = spec.partition(":")
    if not sep or kind.lower() not in _TYPES or not path:
        raise StoreSpecError(f"{spec}: expected btree:PATH, hash:PATH, lmdb:PATH, sqlite:PATH "
                             "or redis://HOST:PORT/DB")
    return path


@dataclass(frozen=True)
class Triplet:
    first: float  # first seen (restarted when a retry came too late)
    last: float  # last seen


@dataclass(frozen=True)
class Client:
    count: int  # greylisting passes (at most one per hour)
    last: float


class Tables(Protocol):
    def triplet(self, key: str) -> Triplet | None: ...
    def put_triplet(self, key: str, t: Triplet) -> None: ...
    def client(self, ip: str) -> Client | None: ...
    def put_client(self, ip: str, c: Client) -> None: ...
    def purge(self, now: float, max_age: float, delay: float, retry_window: float) -> int: ...
    def close(self) -> None: ...


class SqliteTables:
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
        n = self.db.execute("DELETE FROM triplet WHERE last < ? OR (last - first < ? AND last < ?)",
                            (now - max_age, delay, now - retry_window)).rowcount
        n += self.db.execute("DELETE FROM awl WHERE last < ?", (now - max_age,)).rowcount
        return n

    def close(self) -> None:
        self.db.close()


class GreylistStore:
    """The greylist records in the store that ``path`` names (see :func:`store_path`)."""

    def __init__(self, path: str) -> None:
        if is_redis(path):
            from backupmx.policy.redis_store import RedisTables

            self.tables: Tables = RedisTables(parse_url(path))
        else:
            self.tables = SqliteTables(path)

    def triplet(self, key: str) -> Triplet | None:
        return self.tables.triplet(key)

    def put_triplet(self, key: str, t: Triplet) -> None:
        self.tables.put_triplet(key, t)

    def client(self, ip: str) -> Client | None:
        return self.tables.client(ip)

    def put_client(self, ip: str, c: Client) -> None:
        self.tables.put_client(ip, c)

    def purge(self, now: float, max_age: float, delay: float, retry_window: float) -> int:
        """Forget old triplets, never-passed ones past the retry window, and old clients."""
        return self.tables.purge(now, max_age, delay, retry_window)

    def close(self) -> None:
        self.tables.close()
