"""The headers cleanup adds and reads: our Received: line, the hop count."""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass

_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE)


@dataclass(frozen=True)
class Arrival:
    """Who handed the message in, and how: what the Received: line says."""

    helo: str | None
    client_name: str
    client_ip: str
    protocol: str  # SMTP, ESMTP, ESMTPS, UTF8SMTP ...
    tls: str | None = None  # e.g. "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)"
    client_port: int = 0

    @property
    def client(self) -> str:
        return f"{self.client_name}[{self.client_ip}]"


def count_received(content: bytes) -> int:
    """Received: headers in the header section (up to the first empty line)."""
    n = 0
    for line in content.split(b"\r\n"):
        if not line:
            break
        if _RECEIVED.match(line):
            n += 1
    return n


_last_date: tuple[int, str] = (0, "")


def _date(now: float) -> str:
    """RFC 5322 date of this second (formatted once per second, not per message)."""
    global _last_date
    second = int(now)
    if _last_date[0] != second:
        _last_date = (second, email.utils.formatdate(second, localtime=True))
    return _last_date[1]


def received_header(
    a: Arrival, queue_id: str, recipients: list[str], myhostname: str, now: float | None = None
) -> bytes:
    """Our Received: line (RFC 5321 4.4) in Postfix's layout; ``for <r>`` for one recipient."""
    ip = f"IPv6:{a.client_ip}" if ":" in a.client_ip else a.client_ip
    first = a.helo if a.helo else a.client_name
    date = _date(now if now is not None else time.time())
    lines = [f"Received: from {first} ({a.client_name} [{ip}])"]
    if a.tls:
        lines.append(f"\t{a.tls}")
    by = f"\tby {myhostname} (backupmx) with {a.protocol} id {queue_id}"
    if len(recipients) == 1:
        lines.append(by)
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines.append(by + ";")
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")
