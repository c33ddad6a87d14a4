"""The PROXY protocol header (HAProxy, v1 text and v2 binary) that a TCP load balancer
sends before any SMTP, naming the real client (``smtpd_upstream_proxy_protocol``).

Parsing is pure: :func:`parse` looks at the bytes received so far and says whether
more are needed, what the header names, and how long it is.  As Postfix does, only
TCP over IPv4 and IPv6 is accepted (v1 ``UNKNOWN`` would sidestep every address-based
check); a v2 ``LOCAL`` header (a balancer's health check) means "not proxied".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
_V2_FAMILIES = {0x11: (4, 12), 0x21: (16, 36)}  # TCP over IPv4 / IPv6: address bytes, block


class ProxyError(ValueError):
    """A malformed header; the text says why (Postfix's wording where it has one)."""


@dataclass(frozen=True)
class Endpoints:
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int


@dataclass(frozen=True)
class Header:
    length: int  # bytes the header occupies at the start of the input
    endpoints: Endpoints | None  # None: not proxied (v2 LOCAL), use the socket's


def _unmap(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (as Postfix)."""
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


def _ip(text: str, version: int, what: str) -> str:
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        a = None
    if a is None or a.version != version:
        raise ProxyError(f"bad or missing {what}")
    return _unmap(a)


def _port(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ProxyError(f"bad or missing {what}")
    return int(text)


def _v1(buf: bytes) -> Header | None:
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise ProxyError("missing protocol header terminator")
        return None
    fields = buf[:end].decode("ascii", "replace").split(" ")
    if len(fields) < 2 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyError("bad or missing protocol type")
    if len(fields) != 6:
        raise ProxyError("bad or missing protocol header")
    version = 4 if fields[1] == "TCP4" else 6
    client = _ip(fields[2], version, "client address")
    server = _ip(fields[3], version, "server address")
    return Header(end + 2, Endpoints(client, _port(fields[4], "client port"),
                                     server, _port(fields[5], "server port")))


def _v2(buf: bytes) -> Header | None:
    if len(buf) < 16:
        return None
    ver_cmd, fam = buf[12], buf[13]
    if ver_cmd >> 4 != 2:
        raise ProxyError("unrecognized protocol version")
    length = 16 + int.from_bytes(buf[14:16], "big")
    if len(buf) < length:
        return None
    cmd = ver_cmd & 0x0F
    if cmd == 0:  # LOCAL: the balancer's own connection; any address block and TLVs skipped
        return Header(length, None)
    if cmd != 1:
        raise ProxyError("bad command in proxy header")
    if fam not in _V2_FAMILIES:
        raise ProxyError("unsupported network protocol")
    size, block = _V2_FAMILIES[fam]
    if length - 16 < block:
        raise ProxyError("short address field")
    a = buf[16:16 + block]
    client = _unmap(ipaddress.ip_address(a[:size]))
    server = _unmap(ipaddress.ip_address(a[size:2 * size]))
    ports = a[2 * size:]
    return Header(length, Endpoints(client, int.from_bytes(ports[:2], "big"),
                                    server, int.from_bytes(ports[2:4], "big")))  # TLVs skipped


def parse(buf: bytes) -> Header | None:
    """The header at the start of ``buf``; None while it may still be incomplete.

    Raises ProxyError for input that is no valid header whatever follows.
    """
    if buf.startswith(V1_PREFIX):
        return _v1(buf)
    if buf.startswith(V2_SIGNATURE):
        return _v2(buf)
    if V1_PREFIX.startswith(buf) or V2_SIGNATURE.startswith(buf):
        return None
    raise ProxyError("unrecognized protocol header")


def escape(data: bytes) -> str:
    """Input as a log line shows it: printable ASCII as is, the rest as escapes."""
    return "".join(chr(b) if 32 <= b < 127 and b != 0x5C else f"\\{b:03o}" for b in data)
