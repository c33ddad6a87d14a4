"""One alert and how it reads: a log line, the webhook's JSON, the postmaster's mail.

The log line is fixed so that it can be grepped for:
``alert=KIND [destination=NAME] [queue_id=ID] [COUNT=N ...]: TEXT``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from backupmx.bounce import rfc822_date
from backupmx.queue.listing import iso_utc

HOLDING = "holding"
DRAINED = "drained"
QUEUE_AGE = "queue_age"
DISK_LOW = "disk_low"
QUARANTINED = "quarantined"
KINDS = (HOLDING, DRAINED, QUEUE_AGE, DISK_LOW, QUARANTINED)

_SUMMARY = {
    HOLDING: "holding mail for {d}",
    DRAINED: "mail for {d} drained",
    QUEUE_AGE: "old mail in the queue",
    DISK_LOW: "the queue's disk is low on space",
    QUARANTINED: "mail for {d} quarantined",
}
_WIDTH = 76
CRLF = "\r\n"


@dataclass(frozen=True)
class Alert:
    """What happened (``kind``), when, where, in words and in numbers."""

    kind: str
    time: float
    text: str
    destination: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    queue_id: str | None = None

    def log_line(self) -> str:
        words = [f"alert={self.kind}"]
        if self.destination is not None:
            words.append(f"destination={self.destination}")
        if self.queue_id is not None:
            words.append(f"queue_id={self.queue_id}")
        words += [f"{k}={v}" for k, v in self.counts.items()]
        return " ".join(words) + ": " + self.text

    def summary(self) -> str:
        return _SUMMARY[self.kind].format(d=self.destination)

    def payload(self, host: str) -> dict[str, Any]:
        """The webhook's JSON object."""
        data: dict[str, Any] = {
            "kind": self.kind, "destination": self.destination, "text": self.text,
            "time": iso_utc(self.time), "host": host, "counts": dict(self.counts),
        }
        if self.queue_id is not None:
            data["queue_id"] = self.queue_id
        return data

    def subject(self, host: str) -> str:
        return f"backupmx alert on {host}: {self.summary()}"

    def mail(self, host: str, sender: str, to: str, message_id: str) -> bytes:
        """The postmaster's notice: plain text, machine-generated (RFC 3834)."""
        head = [
            f"From: Mail Delivery System <{sender}>",
            f"To: <{to}>",
            f"Subject: {self.subject(host)}",
            f"Date: {rfc822_date(self.time)}",
            f"Message-ID: <{message_id}>",
            "Auto-Submitted: auto-generated",
            f"X-Backupmx-Alert: {self.kind}",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
        ]
        body = [f"This is the mail system at host {host}.", ""]
        body += textwrap.wrap(self.text, _WIDTH, break_long_words=True) or [""]
        body.append("")
        body.append(f"alert: {self.kind}")
        if self.destination is not None:
            body.append(f"destination: {self.destination}")
        if self.queue_id is not None:
            body.append(f"queue id: {self.queue_id}")
        body += [f"{k}: {v}" for k, v in self.counts.items()]
        body.append(f"time: {iso_utc(self.time)}")
        return (CRLF.join(head) + CRLF + CRLF + CRLF.join(body) + CRLF).encode()
