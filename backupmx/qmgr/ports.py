"""What the queue manager needs from the world, as small interfaces.

The real ones are wired in ``backupmx/qmgr/__init__.py``: the SQLite spool, SMTP
delivery (``delivery.py``), DSNs (``notify.py``), the health probe (``probe.py``) and
the quarantine alert (``quarantine.py``).
Unit tests hand in fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from backupmx.envelope import Envelope, Recipient
from backupmx.outcome import Outcome
from backupmx.smtp.nexthop import Server as Hop
from backupmx.smtp.session import ClientSettings

#: the time now, as time.time() gives it
Clock = Callable[[], float]


class Spool(Protocol):
    """The part of :class:`backupmx.queue.store.Spool` the queue manager uses."""

    def content(self, entry_id: str) -> bytes: ...

    async def update(self, env: Envelope) -> bool: ...

    async def remove(self, entry_id: str) -> None: ...

    async def set_hold(self, entry_id: str, hold: bool) -> bool: ...

    async def delete(self, entry_id: str) -> bool: ...

    async def delete_all(self) -> list[str]: ...


@dataclass
class Delivery:
    """One destination's outcomes (one per recipient, in order) and the servers tried."""

    outcomes: list[Outcome]
    servers: list[Hop]


class Deliverer(Protocol):
    """Routes and delivers one destination's recipients of a message."""

    async def deliver(self, env: Envelope, domain: str, rcpts: list[Recipient],
                      content: Callable[[], bytes]) -> Delivery: ...

    def client_settings(self) -> ClientSettings: ...

    async def close(self) -> None: ...


class Bouncer(Protocol):
    """Makes the sender's non-delivery notice durable; raises when it cannot."""

    async def notify(self, env: Envelope, failures: list[tuple[Recipient, Outcome]],
                     content: bytes, now: float,
                     delayed_until: float | None = None) -> Envelope | None:
        """The notice queued (to be submitted), or None when none is due.

        ``delayed_until`` makes it a delay notice: still retried until then.
        """
        ...


#: what the verify cache learns from one destination's recipients and their outcomes
Learner = Callable[[list[Recipient], list[Outcome]], None]


class HealthProbe(Protocol):
    """Is anybody there?  The first of ``servers`` that greets, or None."""

    async def answering(self, servers: list[Hop], timeout: float) -> Hop | None: ...


class QuarantineAlert(Protocol):
    """Told of each destination's recipients quarantined (``primary_reject_action = hold``).

    Called once per destination and reply, after the message is on hold; it must not
    block (an alert that needs the network starts its own task).
    """

    def quarantined(self, queue_id: str, destination: str, recipients: list[str],
                    reply: Outcome) -> None: ...
