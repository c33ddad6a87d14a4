"""The one result type of a delivery attempt, whoever decided it.

Routing, the SMTP client, ``transport_maps`` actions, the dead-destination cache and
queue expiry all answer with an :class:`Outcome` per recipient, and every later decision
(bounce or retry, is the destination dead, what the log line and the DSN say) reads its
fields, never its text.  Postfix keeps the same discipline: one place
(``smtp_trouble.c``) classifies what went wrong, the rest reads the classification.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, DISCARDED, HELD

__all__ = ["BOUNCED", "DEFERRED", "DELIVERED", "DISCARDED", "HELD", "Outcome", "Stage",
           "delay_text", "log_text"]


class Stage(enum.Enum):
    """Where the outcome was decided."""

    ROUTE = "route"  # no server list could be made (DNS, null MX, loops back to me)
    CONNECT = "connect"  # no server could be connected to: nobody is there
    SESSION = "session"  # a server answered, then the session failed (greeting to dot)
    RECIPIENT = "recipient"  # the server's reply for this recipient (RCPT or end of data)
    TRANSPORT = "transport"  # transport_maps said error:, retry: or discard:
    SUSPENDED = "suspended"  # deferred without an attempt: the destination is known dead
    LOCAL = "local"  # a failure of our own (a bug, a table that cannot be read)


_LOG_STATUS = {DELIVERED: "sent", DEFERRED: "deferred", BOUNCED: "bounced", HELD: "held",
               DISCARDED: "discarded"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one recipient in one attempt.

    ``text`` is Postfix's reason text (for a reply: ``host X said: ...``), ``relay``
    the ``host[ip]:port`` that answered (None: no server did), ``diagnostic`` the
    server's reply as a DSN diagnostic (``smtp; 550 ...``) when there was one;
    ``replied`` that the server's own reply decided it, rather than a check of ours
    (a size or SMTPUTF8 the server did not offer, a route, a table).
    ``rcpt`` the reply code that server gave to this recipient's RCPT (0: none), what
    address verification learns from (backupmx/verify/learn.py).
    """

    kind: str  # delivered | deferred | bounced | held | discarded
    status: str  # RFC 3463 enhanced status code
    text: str
    stage: Stage
    relay: str | None = None
    diagnostic: str | None = None
    replied: bool = False
    rcpt: int = 0

    @property
    def reached(self) -> bool:
        """Whether a server of the destination was reached (or none was needed)."""
        return self.stage not in (Stage.CONNECT, Stage.SUSPENDED)

    @property
    def suspended(self) -> bool:
        """Deferred without an attempt (nothing to persist, nobody asked)."""
        return self.stage is Stage.SUSPENDED

    @property
    def unreachable(self) -> bool:
        """A deferral because nobody answered: what makes a destination dead.

        A session that broke after the connection (a stall after the final dot, a
        dropped connection) is not one: the health probe would find that server
        alive and flush it into the same failure again.
        """
        return self.kind == DEFERRED and self.stage is Stage.CONNECT

    @property
    def remote(self) -> str | None:
        """The answering server's host name, for a DSN's Remote-MTA."""
        return self.relay.split("[", 1)[0] if self.relay else None

    @property
    def refused(self) -> bool:
        """A 5xx the server itself gave: what primary_reject_action decides about."""
        return self.kind == BOUNCED and self.replied

    def soft(self) -> Outcome:
        """``soft_bounce``: a bounce becomes a deferral with the 4.X.Y status."""
        if self.kind != BOUNCED:
            return self
        return replace(self, kind=DEFERRED, status="4" + self.status[1:])

    def expired(self) -> Outcome:
        """Out of queue lifetime: the deferral becomes final, its reason and status kept."""
        return replace(self, kind=BOUNCED) if self.kind == DEFERRED else self

    def as_kind(self, kind: str) -> Outcome:
        """The same reply with another result: a refusal HELD or DISCARDED."""
        return replace(self, kind=kind)


def delay_text(seconds: float) -> str:
    """Postfix's delay= format: two significant digits, at most two decimals."""
    d = max(0.0, seconds)
    if d >= 10:
        return str(round(d))
    return f"{d:.{1 if d >= 1 else 2}f}".rstrip("0").rstrip(".") or "0"


def log_text(qid: str, address: str, outcome: Outcome, delay: float) -> str:
    """The Postfix log line of one recipient result (pflogsumm reads these)."""
    return (
        f"{qid}: to=<{address}>, relay={outcome.relay or 'none'}, delay={delay_text(delay)}, "
        f"dsn={outcome.status}, status={_LOG_STATUS[outcome.kind]} ({outcome.text})"
    )
