"""From a complete transaction to a durable queued message, and the reply that says so.

smtpd hands over a :class:`Message` (the envelope as the client gave it, the
actions the restrictions asked for, the content as read) and gets back an
:class:`Outcome`: queued, discarded, refused (too many hops) or failed (the spool
could not take it).  The reply is part of the outcome; the decision is its kind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from backupmx.cleanup.actions import MessageActions
from backupmx.cleanup.headers import Arrival, count_received, received_header
from backupmx.envelope import Envelope, Recipient
from backupmx.log import log
from backupmx.queue.store import SpoolError
from backupmx.reply import Reply

QUEUED = "queued"
DISCARDED = "discarded"
REFUSED = "refused"  # the message itself is refused (hop count): a reject to log
FAILED = "failed"  # the spool could not store it: try again later


class Store(Protocol):
    async def commit(self, env: Envelope, content: bytes) -> str:
        """Store ``env`` and ``content`` durably; the envelope as stored. Raises SpoolError."""


class Queue(Protocol):
    def submit(self, env: Envelope, stored: str) -> None:
        """``env`` is durable; ``stored`` is its JSON as the spool keeps it."""


@dataclass(frozen=True)
class Message:
    """What smtpd hands over at the end of DATA."""

    queue_id: str
    sender: str
    recipients: list[Recipient]  # every accepted RCPT, duplicates included
    arrival: Arrival
    actions: MessageActions
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None


@dataclass(frozen=True)
class Outcome:
    kind: str  # QUEUED | DISCARDED | REFUSED | FAILED
    reply: Reply
    envelope: Envelope | None = None  # the queued envelope


def unique(recipients: list[Recipient]) -> list[Recipient]:
    """Each recipient once (the first of its RCPTs wins); the domain compares without case."""
    seen: set[str] = set()
    out = []
    for r in recipients:
        local, at, domain = r.address.rpartition("@")
        key = f"{local}{at}{domain.lower()}"
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


class Cleanup:
    """Builds, stores and announces one process's messages; it gets only what it uses."""

    def __init__(self, spool: Store, queue: Queue) -> None:
        self.spool = spool
        self.queue = queue

    async def enqueue(
        self, msg: Message, content: bytes, myhostname: str, hopcount_limit: int
    ) -> Outcome:
        """Headers, hop count, actions, then the spool: 250 only once the message is durable."""
        qid = msg.queue_id
        recipients = unique(msg.recipients)
        actions = msg.actions
        head = "".join(f"{h}\r\n" for h in actions.prepend).encode()
        received = received_header(msg.arrival, qid, [r.address for r in recipients],
                                   myhostname)
        content = head + received + content
        if count_received(content) >= hopcount_limit:
            return Outcome(REFUSED, Reply(554, "5.4.0", "Error: too many hops"))
        queued = Reply(250, "2.0.0", f"Ok: queued as {qid}")
        if actions.discard:
            log.info("cleanup", f"{qid}: discarded (DISCARD action); not queued")
            return Outcome(DISCARDED, queued)
        env = Envelope(
            id=qid,
            sender=msg.sender,
            recipients=recipients,
            arrival=time.time(),
            size=len(content),
            body=msg.body,
            smtputf8=msg.smtputf8,
            ret=msg.ret,
            envid=msg.envid,
            client=msg.arrival.client,
            client_port=msg.arrival.client_port,
            helo=msg.arrival.helo,
            protocol=msg.arrival.protocol,
        )
        actions.apply(env)
        try:
            stored = await self.spool.commit(env, content)
        except SpoolError as e:
            log.warning("cleanup", f"{qid}: queue file write error: {e}")
            if e.disk_full:
                return Outcome(FAILED, Reply(452, "4.3.1", "Insufficient system storage"))
            return Outcome(FAILED, Reply(451, "4.3.0", "Error: queue file write error"))
        log.info(
            "qmgr",
            f"{qid}: from=<{env.sender}>, size={env.size}, nrcpt={len(env.recipients)} "
            "(queue active)",
        )
        self.queue.submit(env, stored)
        return Outcome(QUEUED, queued, env)
