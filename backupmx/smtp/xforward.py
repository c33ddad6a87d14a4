"""XFORWARD (Postfix's extension): the original client's attributes, sent before MAIL.

A primary that trusts this host (smtpd_authorized_xforward_hosts) then logs and
checks the client that handed the message to the backup instead of the backup
itself. Pure functions over the envelope, so the exact lines are testable.
"""

from __future__ import annotations

from backupmx.envelope import Envelope
from backupmx.smtp.wire import xtext

UNAVAILABLE = "[UNAVAILABLE]"
# Two commands, as Postfix's client sends them, so that no line grows long.
_GROUPS = (("NAME", "ADDR", "PORT"), ("PROTO", "HELO", "IDENT", "SOURCE"))
_MAX_VALUE = 255  # longer values are cut: the primary refuses over-long attributes


def offered(ehlo_value: str) -> frozenset[str]:
    """The attribute names the server lists after XFORWARD in its EHLO reply."""
    return frozenset(word.upper() for word in ehlo_value.split())


def split_client(client: str) -> tuple[str, str]:
    """``name[ip]`` as (name, ip); either is empty when the envelope does not say."""
    name, sep, rest = client.partition("[")
    if not sep or not rest.endswith("]"):
        return "", ""
    return name, rest[:-1]


def attributes(env: Envelope) -> dict[str, str]:
    """Every XFORWARD attribute of ``env``; what is not known is [UNAVAILABLE].

    Mail that came in over SMTP is SOURCE=REMOTE; mail this host made itself
    (bounces, delay notices) has no client and is SOURCE=LOCAL.
    """
    name, ip = split_client(env.client)
    if ":" in ip:
        ip = "IPv6:" + ip
    return {
        "NAME": name if name and name != "unknown" else UNAVAILABLE,
        "ADDR": ip or UNAVAILABLE,
        "PORT": str(env.client_port) if env.client_port else UNAVAILABLE,
        "PROTO": env.protocol or UNAVAILABLE,
        "HELO": env.helo or UNAVAILABLE,
        "IDENT": env.id or UNAVAILABLE,
        "SOURCE": "REMOTE" if ip else "LOCAL",
    }


def commands(env: Envelope, names: frozenset[str]) -> list[tuple[bytes, ...]]:
    """The XFORWARD command lines' words for the attributes the server offers."""
    attrs = attributes(env)
    out = []
    for group in _GROUPS:
        words = [f"{a}={xtext(attrs[a][:_MAX_VALUE])}".encode() for a in group if a in names]
        if words:
            out.append((b"XFORWARD", *words))
    return out
