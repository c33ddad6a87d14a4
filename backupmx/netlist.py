"""Postfix domain lists and network lists (mydestination, relay_domains, mynetworks ...).

Items are tried in order and the first match decides; ``!item`` turns a match into a
non-match.  Both list kinds are built once from the configuration and then answer
per-RCPT questions without parsing anything again.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from backupmx.config import split_list
from backupmx.maps.access import is_numeric_name, parent_domains
from backupmx.maps.cidr import Network, parse_network
from backupmx.maps.registry import Maps

_TABLE = re.compile(r"[a-z][a-z0-9_]*:.")
_DOTTED_NUMBER = re.compile(r"[0-9.]+\Z")


@dataclass(frozen=True, slots=True)
class _Item:
    negate: bool
    name: str | None = None  # host/domain pattern, lower case, "." prefix = subdomains
    network: Network | None = None
    table: str | None = None  # spec, looked up through the shared Maps on every match


def _expand(items: list[str], negate: bool = False) -> Iterator[tuple[bool, str]]:
    """Yield (negated, item); ``/file`` items are replaced by the file's items."""
    for raw in items:
        item, flip = raw, negate
        while item.startswith("!"):
            item, flip = item[1:], not flip
        if not item:
            raise ValueError(f"empty pattern in {raw!r}")
        if item.startswith("/"):
            yield from _expand(_read_items(item), flip)
        else:
            yield flip, item


def _read_items(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read list file {path}: {exc.strerror or exc}") from exc
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    return split_list(text)


def _name_matches(pattern: str, name: str, parent: bool) -> bool:
    if name == pattern:
        return True
    if pattern.startswith("."):
        return name.endswith(pattern)
    return parent and name.endswith("." + pattern)


def _normal_name(name: str) -> str:
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


class _PatternList:
    """What both list kinds share: items, the table registry, the parent rule."""

    def __init__(self, maps: Maps | None, parent_matches: bool) -> None:
        # Without a shared registry the list keeps its own (tables are still opened once).
        self.maps = maps if maps is not None else Maps()
        self.parent = parent_matches

    def _table_has_name(self, spec: str, name: str) -> bool:
        """Full name, then (fixed-key tables only) its parent domains."""
        table = self.maps.get(spec)
        if table.lookup(name) is not None:
            return True
        if table.pattern or is_numeric_name(name):
            return False
        return any(table.lookup(p) is not None for p in parent_domains(name, self.parent))

    def _table_item(self, negate: bool, spec: str) -> _Item:
        self.maps.get(spec)  # open now: a broken table is a configuration error
        return _Item(negate, table=spec)


class DomainList(_PatternList):
    """Domains: ``example.com``, ``.example.com``, ``/file``, ``type:table``, ``!item``."""

    def __init__(self, items: list[str], maps: Maps | None, parent_matches: bool) -> None:
        super().__init__(maps, parent_matches)
        self._items: list[_Item] = []
        for negate, item in _expand(items):
            if _TABLE.match(item):
                self._items.append(self._table_item(negate, item))
            elif "/" in item or ":" in item:
                raise ValueError(f"invalid domain pattern {item!r}")
            else:
                self._items.append(_Item(negate, name=_normal_name(item)))

    def names(self) -> list[str]:
        """The domains the list names itself (not negated, not a subdomain pattern, not
        in a table): what can be enumerated without knowing the mail."""
        return [i.name for i in self._items
                if i.name is not None and not i.negate and not i.name.startswith(".")]

    def match(self, domain: str) -> bool:
        """Case-insensitive, one trailing dot ignored; MapError from a table propagates."""
        name = _normal_name(domain)
        for item in self._items:
            if item.table is not None:
                hit = self._table_has_name(item.table, name)
            else:
                assert item.name is not None
                hit = _name_matches(item.name, name, self.parent)
            if hit:
                return not item.negate
        return False


class NetList(_PatternList):
    """Networks (``1.2.3.0/24``, ``[2001:db8::]/32`` ...), host names, ``/file``, tables."""

    def __init__(self, items: list[str], maps: Maps | None, parent_matches: bool) -> None:
        super().__init__(maps, parent_matches)
        self._items: list[_Item] = []
        for negate, item in _expand(items):
            self._items.append(self._parse(negate, item))

    def _parse(self, negate: bool, item: str) -> _Item:
        address_part = item.partition("/")[0]
        if item.startswith("[") or _is_address(address_part):
            try:
                return _Item(negate, network=parse_network(item))
            except ValueError as exc:
                raise ValueError(f"invalid network {item!r}: {exc}") from exc
        if _TABLE.match(item):
            return self._table_item(negate, item)
        if _DOTTED_NUMBER.match(address_part) or "/" in item or ":" in item:
            raise ValueError(f"invalid network or host pattern {item!r}")
        return _Item(negate, name=_normal_name(item))

    def match(self, ip: str, hostname: str | None = None) -> bool:
        """Does the client (address, and verified name when known) match the list?"""
        address = _client_address(ip)
        name = _normal_name(hostname) if hostname else None
        for item in self._items:
            if item.network is not None:
                net = item.network
                hit = address is not None and address.version == net.version and address in net
            elif item.table is not None:
                hit = (name is not None and self._table_has_name(item.table, name)) or (
                    self.maps.get(item.table).lookup(ip) is not None)
            else:
                assert item.name is not None
                hit = name is not None and _name_matches(item.name, name, self.parent)
            if hit:
                return not item.negate
        return False


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client address; an IPv4-mapped IPv6 address counts as the IPv4 address."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
