"""Plain data for a message on its way through the house."""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING = "pending"
DEFERRED = "deferred"
DELIVERED = "delivered"
BOUNCED = "bounced"
#: refused by the primary and kept for the administrator (primary_reject_action = hold):
#: still open, so the message stays queued, on hold, until released, bounced or deleted
HELD = "held"
#: refused by the primary and dropped without a DSN (primary_reject_action = discard)
DISCARDED = "discarded"
OPEN_STATES = (PENDING, DEFERRED, HELD)


@dataclass
class Recipient:
    """One envelope recipient with its delivery state."""

    address: str
    orcpt: str | None = None  # ORCPT as given by the client, e.g. "rfc822;bob@nausch.org"
    notify: str | None = None  # NOTIFY as given, e.g. "SUCCESS,FAILURE" or "NEVER"
    state: str = PENDING
    attempts: int = 0
    last_reply: str | None = None
    next_attempt: float | None = None
    #: while HELD: the primary's refusal (backupmx/qmgr/quarantine.py), for a later DSN
    refusal: dict[str, str | None] | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass
class Envelope:
    """What the SMTP transaction said about the message, and what became of it."""

    id: str
    sender: str  # "" for the null sender
    recipients: list[Recipient]
    arrival: float
    size: int = 0
    body: str | None = None  # BODY= parameter: "7BIT" / "8BITMIME"
    smtputf8: bool = False
    ret: str | None = None  # RET=FULL|HDRS
    envid: str | None = None  # ENVID=xtext
    client: str = ""  # "name[ip]" of the client that handed the message in
    client_port: int = 0  # its TCP port; 0 when not known (older spool records, bounces)
    helo: str | None = None  # the HELO/EHLO name it gave
    protocol: str = ""  # how it spoke, as in Received: (SMTP, ESMTP, ESMTPS ...)
    hold: bool = False
    warned: bool = False  # the sender has had the delay_warning_time notice
    history: list[dict[str, object]] = field(default_factory=list)

    @property
    def open_recipients(self) -> list[Recipient]:
        return [r for r in self.recipients if r.open]

    @property
    def made_here(self) -> bool:
        """A notice of backupmx's own (a DSN), which no client handed in."""
        return not self.client

    @property
    def done(self) -> bool:
        return not self.open_recipients
