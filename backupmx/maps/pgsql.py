"""``pgsql:/etc/backupmx/x.cf`` tables (pgsql_table(5)) on psycopg.

The key is put into ``query`` the way Postfix does it: escaped by libpq for use
inside a quoted string literal (``WHERE a='%s'``), so a quote in an address can
never end the literal.  ``connect_timeout`` (seconds) bounds connecting and each
query.
"""

from __future__ import annotations

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from backupmx.maps.definition import Definition, read_definition
from backupmx.maps.network import COMMON_PARAMETERS, NetworkTable
from backupmx.maps.query import Template, fill, parse_template

PARAMETERS = COMMON_PARAMETERS + ("hosts", "user", "password", "dbname", "query",
                                  "connect_timeout")


def connection_targets(hosts: str) -> list[dict[str, str]]:
    """``hosts`` as connection arguments: ``postgresql://`` URIs, ``unix:/dir``,
    ``inet:host:port``, ``host:port`` or ``host`` (port 5432)."""
    targets: list[dict[str, str]] = []
    for item in hosts.replace(",", " ").split():
        if item.startswith(("postgresql://", "postgres://")):
            targets.append({"conninfo": item})
            continue
        if item.startswith("unix:"):
            targets.append({"host": item[len("unix:"):]})
            continue
        item = item.removeprefix("inet:")
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, port = item.split(":")
        else:
            host, port = item, ""
        targets.append({"host": host, "port": port or "5432"})
    return targets


class PgsqlTable(NetworkTable[psycopg.Connection]):
    def __init__(self, spec: str, definition: Definition) -> None:
        super().__init__(spec, definition)
        self._query: Template = parse_template(definition, "query", definition.require("query"))
        self._targets = connection_targets(definition.get("hosts", "localhost"))
        if not self._targets:
            raise definition.error("hosts", "no server given")
        for target in self._targets:
            if not target.get("port", "1").isdigit():
                raise definition.error("hosts", f"bad port in {target['host']}:{target['port']}")
        self._timeout = definition.number("connect_timeout", 10, low=1)
        self._login = {name: definition.get(name) for name in ("user", "password", "dbname")
                       if definition.get(name)}

    def _connect(self) -> psycopg.Connection:
        failures = []
        for target in self._targets:
            args = dict(target)
            conninfo = args.pop("conninfo", "")
            try:
                dsn = make_conninfo(conninfo, connect_timeout=self._timeout,
                                    options=f"-c statement_timeout={self._timeout * 1000}",
                                    **self._login, **args)
                return psycopg.connect(dsn, autocommit=True)
            except psycopg.Error as exc:
                failures.append(f"{target.get('host', conninfo)}: {exc}".strip())
        raise ConnectionError("; ".join(failures))

    def _search(self, conn: psycopg.Connection, key: str) -> list[str] | None:
        escaping = pq.Escaping(conn.pgconn)

        def escape(text: str) -> str:
            return escaping.escape_string(text.encode()).decode()

        query = fill(self._query, key, key, escape)
        if query is None:
            return None
        with conn.cursor() as cur:
            cur.execute(query.encode())
            rows = cur.fetchall() if cur.description is not None else []
        return [str(v) for row in rows for v in row if v is not None]

    def _disconnect(self, conn: psycopg.Connection) -> None:
        conn.close()


def open_pgsql(spec: str, name: str) -> PgsqlTable:
    return PgsqlTable(spec, read_definition(spec, name, PARAMETERS))
