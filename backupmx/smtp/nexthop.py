"""Where a recipient's mail goes: next-hop syntax and the list of servers to try.

The server list follows Postfix's smtp client: MX records by preference (equal
preferences shuffled), each MX host expanded to A then AAAA, the domain's own
address records when it has no MX, and loop detection that drops this host and
every MX at or above its preference, so a backup MX only hands mail upwards.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from backupmx.dns import DnsTempError
from backupmx.maps import Table
from backupmx.outcome import BOUNCED, DEFERRED, Outcome, Stage

_HOST_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
                      r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
_SERVICES = {"smtp": 25, "submission": 587, "smtps": 465}
DELIVERABLE = ("smtp", "relay")
NON_DELIVERING = ("error", "retry", "discard")


@dataclass(frozen=True)
class NextHop:
    """Parsed ``relayhost`` / transport_maps next hop.

    ``mx`` is False for ``[host]`` forms, which name the host itself, not a domain.
    """

    host: str
    port: int | None
    mx: bool


@dataclass(frozen=True)
class Server:
    """One address to try, with the MX preference it came from."""

    host: str
    ip: str
    port: int
    pref: int

    @property
    def name(self) -> str:
        """``host[ip]``, as Postfix names a peer in its reason texts."""
        return f"{self.host}[{self.ip}]"


class RouteError(Exception):
    """No server list could be made; ``permanent`` says whether to bounce."""

    def __init__(self, permanent: bool, status: str, text: str) -> None:
        super().__init__(text)
        self.permanent = permanent
        self.status = status
        self.text = text

    @property
    def outcome(self) -> Outcome:
        """The result for each recipient that had to go this way."""
        return Outcome(BOUNCED if self.permanent else DEFERRED, self.status, self.text,
                       Stage.ROUTE)


class Lookups(Protocol):
    """The part of :class:`backupmx.dns.Resolver` that routing needs."""

    async def mx(self, domain: str) -> list[tuple[int, str]]: ...

    async def addresses(self, host: str) -> list[str]: ...


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_port(text: str, whole: str) -> int:
    if text in _SERVICES:
        return _SERVICES[text]
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in next hop {whole!r}")
    return int(text)


def parse_nexthop(text: str) -> NextHop:
    """``host``, ``host:port``, ``[host]``, ``[host]:port``, ``[ip]``, ``[ipv6:addr]``."""
    whole = text
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"missing ']' in next hop {whole!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad next hop {whole!r}")
            port = _parse_port(rest[1:], whole)
        host = inner[5:] if inner.lower().startswith("ipv6:") else inner
        if not _is_ip(host) and not _HOST_RE.match(host.lower()):
            raise ValueError(f"bad host in next hop {whole!r}")
        return NextHop(host.lower().rstrip("."), port, False)
    host, sep, p = text.partition(":")
    if sep:
        port = _parse_port(p, whole)
    if _is_ip(host):
        raise ValueError(f"an IP address in a next hop must be enclosed in []: {whole!r}")
    if not _HOST_RE.match(host.lower()):
        raise ValueError(f"bad host in next hop {whole!r}")
    return NextHop(host.lower().rstrip("."), port, True)


def parse_transport(
    value: str, default_transport: str = "smtp"
) -> tuple[str, NextHop | str | None]:
    """A transport_maps result ``transport:nexthop``.

    Returns (transport, hop): for ``smtp``/``relay`` hop is a :class:`NextHop`, or
    None for "the recipient domain"; for ``error``/``retry``/``discard`` hop is the
    text after the colon, for the caller to bounce, defer or discard with. An empty
    transport (``:[h]``) keeps ``default_transport``. Other transports: ValueError.
    """
    transport, _, rest = value.strip().partition(":")
    transport = transport.strip().lower() or default_transport
    rest = rest.strip()
    if transport in NON_DELIVERING:
        return transport, rest
    if transport not in DELIVERABLE:
        raise ValueError(f"unsupported transport {transport!r} in {value!r}")
    return transport, parse_nexthop(rest) if rest else None


def _not_found(name: str) -> RouteError:
    return RouteError(
        True, "5.4.4",
        f"Host or domain name not found. Name service error for name={name} type=A: "
        "Host not found",
    )


def _temp(err: DnsTempError) -> RouteError:
    return RouteError(False, "4.4.3", str(err))


def _shuffled_by_pref(mxs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Sort by preference; equal preferences in random order to spread the load."""
    keyed = [(pref, random.random(), host) for pref, host in mxs]
    keyed.sort()
    return [(pref, host) for pref, _, host in keyed]


async def _host_servers(
    host: str, pref: int, port: int, resolver: Lookups
) -> list[Server]:
    ips = [host] if _is_ip(host) else await resolver.addresses(host)
    return [Server(host, ip, port, pref) for ip in ips]


async def servers_for(
    domain: str,
    nexthop: NextHop | None,
    *,
    resolver: Lookups,
    port: int,
    is_myself: Callable[[str, int], bool],
    mx_address_limit: int = 5,
) -> list[Server]:
    """The servers to try for ``domain`` (or ``nexthop``), best first.

    Raises :class:`RouteError` when there is none; a DNS temporary failure is
    always transient.
    """
    name = nexthop.host if nexthop else domain.lower()
    port = nexthop.port if nexthop and nexthop.port else port
    if nexthop is not None and not nexthop.mx:
        try:
            servers = await _host_servers(name, 0, port, resolver)
        except DnsTempError as e:
            raise _temp(e) from e
        if not servers:
            raise _not_found(name)
        best_pref = 0
    else:
        try:
            mxs = await resolver.mx(name)
        except DnsTempError as e:
            raise _temp(e) from e
        if any(host == "" for _, host in mxs):
            raise RouteError(True, "5.1.0", f"{name} does not accept mail (nullMX)")
        if not mxs:
            try:
                servers = await _host_servers(name, 0, port, resolver)
            except DnsTempError as e:
                raise _temp(e) from e
            if not servers:
                raise _not_found(name)
            best_pref = 0
        else:
            servers, fallback = [], None
            for pref, host in _shuffled_by_pref(mxs):
                try:
                    found = await _host_servers(host, pref, port, resolver)
                except DnsTempError as e:
                    fallback = _temp(e)
                    continue
                if not found and fallback is None:
                    fallback = _not_found(host)
                servers += found
            best_pref = mxs[0][0]
            if not servers:
                raise fallback or _not_found(name)
    servers = _truncate_self(servers, best_pref, name, is_myself)
    return servers[:mx_address_limit]


def _truncate_self(
    servers: list[Server], best_pref: int, name: str, is_myself: Callable[[str, int], bool]
) -> list[Server]:
    """Drop this host and every server not better than it (loop detection)."""
    mine = [s.pref for s in servers if is_myself(s.ip, s.port)]
    if not mine:
        return servers
    self_pref = min(mine)
    kept = [s for s in servers if s.pref < self_pref]
    if kept:
        return kept
    if self_pref == best_pref:
        # Postfix bounces this with 5.4.6. A backup MX that is temporarily the best
        # MX (the primary's records being changed) must keep the mail, so here it
        # is transient: the mail waits until a better MX appears again.
        raise RouteError(False, "4.4.6", f"mail for {name} loops back to myself")
    raise RouteError(False, "4.4.4", f"unable to find primary relay for {name}")


def route(
    address: str, transport_maps: list[Table], relayhost: list[str]
) -> tuple[str, NextHop | str | None]:
    """transport_maps, then relayhost, then the recipient domain (hop None).

    Keys as Postfix looks them up: the address, its domain, parent domains
    (``example.com`` and ``.example.com`` styles) and ``*``.
    """
    domain = address.rpartition("@")[2].lower()
    labels = domain.split(".")
    keys = [address.lower(), domain]
    keys += [".".join(labels[i:]) for i in range(1, len(labels))]
    keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    keys.append("*")
    for table in transport_maps:
        for k in keys:
            value = table.lookup(k)
            if value is not None:
                transport, hop = parse_transport(value)
                if hop is None and relayhost:
                    return transport, _cached_nexthop(relayhost[0])
                return transport, hop
    return "smtp", _cached_nexthop(relayhost[0]) if relayhost else None


@functools.lru_cache(maxsize=256)
def _cached_nexthop(text: str) -> NextHop:
    return parse_nexthop(text)
