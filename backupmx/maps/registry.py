"""Opening tables by ``TYPE:NAME`` and the shared cache that reloads changed files."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from backupmx.log import log
from backupmx.maps.base import MapError, Table, inline_lines, logical_lines, read_source
from backupmx.maps.cidr import parse_cidr
from backupmx.maps.ldap import open_ldap
from backupmx.maps.pgsql import open_pgsql
from backupmx.maps.regexp import parse_regexp
from backupmx.maps.text import open_inline, open_source_table, open_static

_SPEC = re.compile(r"([a-z][a-z0-9_]*):(.*)\Z", re.DOTALL)


def _open_pattern(kind: str) -> Callable[[str, str], Table]:
    """An opener for cidr/regexp/pcre, from a file or the 3.7 ``{ {rule}, ... }`` form."""

    def opener(spec: str, name: str) -> Table:
        warnings: list[str] = []
        if name.lstrip().startswith("{"):
            origin, source = spec, None
            lines = [(n, rule) for n, rule in enumerate(inline_lines(spec, name), 1) if rule]
        else:
            origin, source = name, name
            lines = list(logical_lines(read_source(spec, name), name, warnings))
        if kind == "cidr":
            return parse_cidr(spec, origin, lines, source, warnings)
        return parse_regexp(spec, origin, lines, kind == "pcre", source, warnings)

    return opener


_OPENERS: dict[str, Callable[[str, str], Table]] = {
    "hash": lambda spec, name: open_source_table(spec, name, strict_duplicates=False),
    "btree": lambda spec, name: open_source_table(spec, name, strict_duplicates=False),
    "texthash": lambda spec, name: open_source_table(spec, name, strict_duplicates=True),
    "inline": open_inline,
    "static": open_static,
    "cidr": _open_pattern("cidr"),
    "regexp": _open_pattern("regexp"),
    "pcre": _open_pattern("pcre"),
    "pgsql": open_pgsql,
    "ldap": open_ldap,
}


def open_table(spec: str) -> Table:
    """Open ``TYPE:NAME``; MapError for an unknown type, an unreadable file or bad syntax."""
    found = _SPEC.match(spec.strip())
    if found is None or not found.group(2):
        raise MapError(f"{spec}: expected a lookup table as TYPE:NAME")
    kind, name = found.groups()
    opener = _OPENERS.get(kind)
    if opener is None:
        raise MapError(f"{spec}: unsupported lookup table type {kind!r}"
                       f" (supported: {', '.join(sorted(_OPENERS))})")
    return opener(spec.strip(), name)


def lookup_list(tables: list[Table], key: str) -> str | None:
    """The value from the first table that has *key* (a full lookup in every table)."""
    for table in tables:
        value = table.lookup(key)
        if value is not None:
            return value
    return None


_Stamp = tuple[int, int, int] | None


def _stamp(path: str | None) -> _Stamp:
    """What identifies a file version: inode, size, mtime; None when it is missing."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Maps:
    """The server's tables, each opened once and shared by every session.

    A table whose file is replaced is re-read by ``reload_changed``; a new file that
    does not load leaves the old table in service, so a typo never takes mail down.
    """

    def __init__(self, component: str = "smtpd") -> None:
        self.component = component
        self._tables: dict[str, Table] = {}
        self._stamps: dict[str, _Stamp] = {}

    def get(self, spec: str) -> Table:
        table = self._tables.get(spec)
        if table is None:
            table = self._load(spec)
        return table

    def _load(self, spec: str) -> Table:
        table = open_table(spec)
        for warning in table.warnings:
            log.warning(self.component, warning)
        old = self._tables.get(spec)
        if old is not None:
            old.close()
        self._tables[spec] = table
        self._stamps[spec] = _stamp(table.source)
        return table

    def reload_changed(self) -> list[str]:
        """Re-read tables whose file changed; returns (and logs) the load errors."""
        return self._reload(only_changed=True)

    def reload_all(self) -> None:
        """Re-read every table (SIGHUP); a table that fails to load keeps its old contents."""
        self._reload(only_changed=False)

    def _reload(self, only_changed: bool) -> list[str]:
        errors: list[str] = []
        for spec, table in list(self._tables.items()):
            if table.source is None:
                continue  # inline: and static: have nothing to re-read
            stamp = _stamp(table.source)
            if only_changed and stamp == self._stamps[spec]:
                continue
            try:
                self._load(spec)
            except MapError as exc:
                # Remember the broken version so it is reported once, not on every call.
                self._stamps[spec] = stamp
                errors.append(str(exc))
                log.error(self.component, f"{exc}; keeping the previous contents")
                continue
            log.info(self.component, f"reloaded {spec}")
        return errors
