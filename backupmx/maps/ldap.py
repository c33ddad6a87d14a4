"""``ldap:/etc/backupmx/x.cf`` tables (ldap_table(5)) on ldap3.

The key is escaped for a filter (RFC 4515) in ``query_filter`` and for a DN (RFC
4514) in ``search_base``.  ``timeout`` bounds connecting, binding and each search.
A search base that does not exist finds nothing, as in Postfix.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import ldap3
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from backupmx.maps.definition import Definition, read_definition
from backupmx.maps.network import COMMON_PARAMETERS, NetworkTable
from backupmx.maps.query import Template, fill, parse_template

PARAMETERS = COMMON_PARAMETERS + (
    "server_host", "server_port", "search_base", "query_filter", "result_attribute",
    "scope", "bind", "bind_dn", "bind_pw", "version", "timeout")

_SCOPES = {"sub": ldap3.SUBTREE, "one": ldap3.LEVEL, "base": ldap3.BASE}
_NO_SUCH_OBJECT = 32


def servers(definition: Definition, timeout: int) -> list[ldap3.Server]:
    """``server_host``: ``ldap://host:port``, ``ldaps://host``, ``host:port`` or ``host``."""
    default_port = definition.number("server_port", 389, low=1)
    out = []
    for item in definition.get("server_host", "localhost").replace(",", " ").split():
        ssl = False
        if "://" in item:
            url = urlsplit(item)
            if url.scheme not in ("ldap", "ldaps"):
                raise definition.error("server_host", f"unsupported URL scheme in {item!r}")
            ssl = url.scheme == "ldaps"
            host = url.hostname or "localhost"
            try:
                port = url.port or (636 if ssl else default_port)
            except ValueError:
                raise definition.error("server_host", f"bad port in {item!r}") from None
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
            try:
                port = int(port_text) if port_text else default_port
            except ValueError:
                raise definition.error("server_host", f"bad port in {item!r}") from None
        out.append(ldap3.Server(host, port=port, use_ssl=ssl, get_info=ldap3.NONE,
                                connect_timeout=timeout))
    if not out:
        raise definition.error("server_host", "no server given")
    return out


class LdapTable(NetworkTable[ldap3.Connection]):
    def __init__(self, spec: str, definition: Definition) -> None:
        version = definition.get("version", "3")
        if version not in ("2", "3"):
            raise definition.error("version", f"expected 2 or 3, got {version!r}")
        if version == "2":
            definition.warn(definition.line("version"),
                            "version = 2: LDAP version 3 is spoken, which every server knows")
        super().__init__(spec, definition)
        self._timeout = definition.number("timeout", 10, low=1)
        self._servers = servers(definition, self._timeout)
        self._base: Template = parse_template(definition, "search_base",
                                              definition.get("search_base"))
        self._filter: Template = parse_template(
            definition, "query_filter",
            definition.get("query_filter", "(mailacceptinggeneralid=%s)"))
        self._attributes = definition.get("result_attribute", "maildrop").replace(
            ",", " ").split()
        scope = definition.get("scope", "sub").lower()
        if scope not in _SCOPES:
            raise definition.error("scope", f"expected sub, one or base, got {scope!r}")
        self._scope = _SCOPES[scope]
        self._bind = definition.boolean("bind", True)
        self._bind_dn = definition.get("bind_dn")
        self._bind_pw = definition.get("bind_pw")

    def _connect(self) -> ldap3.Connection:
        pool = ldap3.ServerPool(self._servers, ldap3.FIRST, active=1, exhaust=False)
        user = self._bind_dn if self._bind and self._bind_dn else None
        conn = ldap3.Connection(pool, user=user, password=self._bind_pw if user else None,
                                receive_timeout=self._timeout, read_only=True,
                                raise_exceptions=False)
        if not conn.bind():
            raise ConnectionError(f"bind failed: {conn.result.get('description')}"
                                  f" {conn.result.get('message', '')}".strip())
        return conn

    def _search(self, conn: ldap3.Connection, key: str) -> list[str] | None:
        base = fill(self._base, key, key, escape_rdn)
        query = fill(self._filter, key, key, escape_filter_chars)
        if base is None or query is None:
            return None
        conn.search(base, query, search_scope=self._scope, attributes=self._attributes,
                    time_limit=self._timeout)
        code = conn.result.get("result")
        if code == _NO_SUCH_OBJECT:
            return None
        if code != 0:
            raise OSError(f"search failed: {conn.result.get('description')}"
                          f" {conn.result.get('message', '')}".strip())
        wanted = {a.lower() for a in self._attributes}
        values = []
        for entry in conn.response or []:
            if entry.get("type") != "searchResEntry":
                continue
            for name, raw in entry.get("raw_attributes", {}).items():
                if name.lower() in wanted:
                    values += [v.decode("utf-8", "replace") for v in raw]
        return values

    def _disconnect(self, conn: ldap3.Connection) -> None:
        conn.unbind()


def open_ldap(spec: str, name: str) -> LdapTable:
    return LdapTable(spec, read_definition(spec, name, PARAMETERS))
