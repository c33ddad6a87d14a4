"""SMTP replies and the one error taxonomy shared by every peer.

A reply is permanent (5xx) or transient (4xx); every failure to talk to a peer is
transient.  Code that meets a peer raises :class:`PeerError` carrying the reply to
pass on, so callers never have to guess whether to retry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backupmx.printable import printable

_DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
MAX_REPLY = 510


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: code, enhanced status code (may be empty) and text."""

    code: int
    dsn: str
    text: str

    @property
    def permanent(self) -> bool:
        return 500 <= self.code <= 599

    @property
    def transient(self) -> bool:
        return 400 <= self.code <= 499

    def line(self) -> str:
        """The reply as one line, without CRLF, cut to 510 characters as Postfix does."""
        s = f"{self.code} {self.dsn} {self.text}" if self.dsn else f"{self.code} {self.text}"
        return printable(s, " ")[:MAX_REPLY]  # one printable line

    def __str__(self) -> str:
        return self.line()


def soft_bounced(reply: Reply) -> Reply:
    """``soft_bounce = yes``: a 5xx becomes the 4xx with the same last digits (577 -> 477,
    5.1.1 -> 4.1.1), so that nothing is refused for good while a configuration is tried."""
    if not reply.permanent:
        return reply
    dsn = "4" + reply.dsn[1:] if reply.dsn else reply.dsn
    return Reply(reply.code - 100, dsn, reply.text)


def soft_bounced_line(line: str) -> str:
    """:func:`soft_bounced` for a reply already written as one line (``550 5.1.1 text``)."""
    code, _, text = line.partition(" ")
    if not (code.isdigit() and len(code) == 3 and code[0] == "5"):
        return line
    dsn, _, rest = text.partition(" ")
    reply = Reply(int(code), dsn, rest) if valid_dsn(dsn) else Reply(int(code), "", text)
    return soft_bounced(reply).line()


def valid_dsn(dsn: str) -> bool:
    return bool(_DSN_RE.match(dsn))


def make_reply(code: int, default_dsn: str, text: str) -> Reply:
    """Build a reply whose text may start with its own enhanced code.

    The first digit of the enhanced code always follows the SMTP code (Postfix
    rewrites ``550 4.7.1`` into ``550 5.7.1``).
    """
    dsn = default_dsn
    parts = text.split(" ", 1)
    if parts and valid_dsn(parts[0]):
        dsn = parts[0]
        text = parts[1] if len(parts) > 1 else ""
    if dsn:
        dsn = str(code)[0] + dsn[1:]
    return Reply(code, dsn, text)


class PeerError(Exception):
    """A peer (DNS, the primary, a policy server, a table) did not give a usable answer.

    ``reply`` is what to pass on; ``permanent`` tells whether a retry could help.
    """

    def __init__(self, reply: Reply, permanent: bool = False) -> None:
        super().__init__(reply.line())
        self.reply = reply
        self.permanent = permanent
