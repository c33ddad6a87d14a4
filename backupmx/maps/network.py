"""What the tables on a server (pgsql:, ldap:) share: one kept connection, timeouts,
the ``domain`` restriction and ``result_format``; any failure is a MapError.

A MapError is a temporary lookup failure to every caller (451 4.3.0 at RCPT, a
deferral in delivery), so a server that is down never permits and never rejects.
The connection is opened at the first lookup, not when the table is opened (``check``
and start-up read the definition file only); a connection that fails is dropped and
the next lookup connects again.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from typing import Generic, TypeVar

from backupmx.maps.base import MapError, Table
from backupmx.maps.definition import Definition
from backupmx.maps.query import Template, fill, in_domains, parse_template

C = TypeVar("C")

COMMON_PARAMETERS = ("domain", "result_format")


def domain_list(definition: Definition) -> frozenset[str]:
    """The ``domain`` parameter: domain names only (tables in it are not supported)."""
    names = definition.get("domain").replace(",", " ").split()
    for name in names:
        if ":" in name or "/" in name:
            raise definition.error("domain", f"only domain names are supported, got {name!r}")
    return frozenset(n.lower().rstrip(".") for n in names)


class NetworkTable(Table, Generic[C]):
    """A fixed-key table answered by a server; lookups block, so async callers use a thread.

    Lookups of one table are serialised on its connection (a lock); a lookup on a
    connection kept from before that fails is tried once more on a new connection,
    since the server may just have closed an idle one.
    """

    blocking = True

    def __init__(self, spec: str, definition: Definition) -> None:
        super().__init__(spec, definition.path, [str(n) for n in definition.notes])
        self.notes = definition.notes
        self._domains = domain_list(definition)
        self._format: Template = parse_template(
            definition, "result_format", definition.get("result_format", "%s"))
        self._lock = threading.Lock()
        self._conn: C | None = None

    def _find(self, key: str) -> str | None:
        key = key.lower()
        if not in_domains(key, self._domains):
            return None
        with self._lock:
            values = self._ask(key)
        if values is None:
            return None
        results = [r for r in (fill(self._format, v, key) for v in values) if r]
        return ",".join(results) if results else None

    def _ask(self, key: str) -> list[str] | None:
        if self._conn is not None:
            try:
                return self._search(self._conn, key)
            except Exception:  # perhaps an idle connection the server closed: once more, anew
                self._drop()
        try:
            self._conn = self._connect()
            return self._search(self._conn, key)
        except Exception as exc:  # any driver or socket error: the server is unusable
            self._drop()
            reason = " ".join(str(exc).split())
            raise MapError(f"{self.spec}: lookup of {key!r} failed: "
                           f"{type(exc).__name__}: {reason}") from exc

    def close(self) -> None:
        """Drop the connection when a reload replaces the table (after a running lookup)."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._disconnect(conn)
            except Exception:  # closing a broken connection may fail too; it is gone anyway
                pass

    @abstractmethod
    def _connect(self) -> C:
        """A new connection; raises when no server can be reached within the timeout."""

    @abstractmethod
    def _search(self, conn: C, key: str) -> list[str] | None:
        """The raw result values for ``key`` (None: the query is not run for this key)."""

    @abstractmethod
    def _disconnect(self, conn: C) -> None: ...
