"""The one resolver: MX, A/AAAA, PTR, TXT, with caching.

Rule of the house: a temporary failure (SERVFAIL, timeout, no server answering)
raises :class:`DnsTempError` and is never turned into "not found" by this module.
"Not found" (NXDOMAIN or no records of that type) is an empty answer.
"""

from __future__ import annotations

import ipaddress
import time

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

REVERSE_TTL = 60.0


class DnsTempError(Exception):
    """The DNS could not answer now; try again later."""

    def __init__(self, name: str, rtype: str) -> None:
        self.name = name
        self.rtype = rtype
        super().__init__(
            f"Host or domain name not found. Name service error for name={name} "
            f"type={rtype}: Host not found, try again"
        )


def parse_nameserver(item: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` to (ip, port); ValueError when malformed."""
    item = item.strip()
    port = 53
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad nameserver {item!r}")
            port = int(rest[1:])
    elif item.count(":") == 1:
        host, p = item.split(":")
        port = int(p)
    else:
        host = item
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {item!r}")
    return host, port


class Resolver:
    """Async DNS lookups through dnspython, cached for the records' TTL."""

    def __init__(self, nameservers: list[str] | None = None, timeout: float = 5.0) -> None:
        if nameservers:
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [
                dns.nameserver.Do53Nameserver(ip, port)
                for ip, port in map(parse_nameserver, nameservers)
            ]
        else:
            r = dns.asyncresolver.Resolver()
        r.lifetime = timeout
        r.timeout = min(timeout, 2.0)
        r.cache = dns.resolver.LRUCache(50000)
        self._r = r
        self._reverse: dict[str, tuple[float, tuple[str, str]]] = {}

    async def _query(self, name: str, rtype: str) -> dns.resolver.Answer | None:
        try:
            return await self._r.resolve(name, rtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.name.LabelTooLong:
            return None
        except dns.name.EmptyLabel:
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN) as e:
            raise DnsTempError(name, rtype) from e
        except dns.exception.DNSException as e:
            raise DnsTempError(name, rtype) from e

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """MX records sorted by preference; [] when the domain has none.

        A null MX (RFC 7505) is returned as ``[(0, "")]``.
        """
        ans = await self._query(domain, "MX")
        if ans is None:
            return []
        out = []
        for rr in ans:
            host = rr.exchange.to_text(omit_final_dot=True).lower()
            out.append((int(rr.preference), "" if host in ("", ".") else host))
        out.sort(key=lambda t: t[0])
        return out

    async def a(self, name: str) -> list[str]:
        ans = await self._query(name, "A")
        return [rr.address for rr in ans] if ans else []

    async def aaaa(self, name: str) -> list[str]:
        ans = await self._query(name, "AAAA")
        return [rr.address for rr in ans] if ans else []

    async def addresses(self, host: str) -> list[str]:
        """A then AAAA records of a host; [] when it has neither.

        Raises DnsTempError only when neither family could be answered.
        """
        out: list[str] = []
        err: DnsTempError | None = None
        for fn in (self.a, self.aaaa):
            try:
                out += await fn(host)
            except DnsTempError as e:
                err = err or e
        if err and not out:
            raise err
        return out

    async def ptr(self, ip: str) -> list[str]:
        name = dns.reversename.from_address(ip).to_text()
        ans = await self._query(name, "PTR")
        return [rr.target.to_text(omit_final_dot=True).lower() for rr in ans] if ans else []

    async def txt(self, name: str) -> list[str]:
        ans = await self._query(name, "TXT")
        if not ans:
            return []
        return [b"".join(rr.strings).decode("utf-8", "replace") for rr in ans]

    async def reverse_name(self, ip: str) -> tuple[str, str]:
        """Forward-confirmed reverse name of a client, as Postfix finds it at connect.

        Returns (name, status): name is ``unknown`` unless a PTR name resolves back
        to ``ip``; status is ``ok``, ``nxdomain`` (no PTR or no match) or ``tempfail``.
        Answers are kept for a minute: a busy client reconnects many times.
        """
        now = time.monotonic()
        hit = self.known_reverse_name(ip)
        if hit is not None:
            return hit
        result = await self._reverse_name(ip)
        if result[1] != "tempfail":
            if len(self._reverse) > 20000:
                self._reverse.clear()
            self._reverse[ip] = (now + REVERSE_TTL, result)
        return result

    def known_reverse_name(self, ip: str) -> tuple[str, str] | None:
        """The kept answer of :meth:`reverse_name`, if there is one: no task, no timer."""
        hit = self._reverse.get(ip)
        return hit[1] if hit and hit[0] > time.monotonic() else None

    async def _reverse_name(self, ip: str) -> tuple[str, str]:
        try:
            names = await self.ptr(ip)
        except DnsTempError:
            return "unknown", "tempfail"
        if not names:
            return "unknown", "nxdomain"
        for name in names:
            try:
                addrs = await self.addresses(name)
            except DnsTempError:
                return "unknown", "tempfail"
            if any(ipaddress.ip_address(a) == ipaddress.ip_address(ip) for a in addrs):
                return name, "ok"
        return "unknown", "nxdomain"
