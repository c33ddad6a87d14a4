"""Quarantine: mail the primary refused is held for the administrator, not bounced.

A backup MX accepts mail the primary would have refused, and a DSN for it goes to a
sender who is often forged (backscatter).  With ``primary_reject_action = hold`` the
queue manager keeps such recipients HELD and the message on hold (``core.settle`` and
``core.record`` decide it); this module tells the alert port about it and returns a
quarantined message to its sender when the administrator asks (``queue bounce``),
also straight on the spool when no server runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from backupmx.envelope import Envelope, Recipient
from backupmx.log import log
from backupmx.outcome import Outcome, log_text
from backupmx.qmgr import core
from backupmx.qmgr.notify import DsnBouncer
from backupmx.qmgr.ports import Bouncer

if TYPE_CHECKING:
    from backupmx.config import Config
    from backupmx.queue.store import Spool


class LogAlert:
    """The quarantine alert as a log line; the alerts of a later release connect here."""

    def quarantined(self, queue_id: str, destination: str, recipients: list[str],
                    reply: Outcome) -> None:
        rcpts = ", ".join(f"<{a}>" for a in recipients)
        log.warning("qmgr", f"{queue_id}: quarantined, no DSN sent: {destination} refused "
                    f"{rcpts}: {reply.text}; the message is on hold "
                    f"(queue release, bounce or delete {queue_id})")


def by_reply(held: list[tuple[Recipient, Outcome]]) -> list[tuple[str, list[str], Outcome]]:
    """The held recipients grouped by destination and reply, for the alert port."""
    groups: dict[tuple[str, Outcome], list[str]] = {}
    for r, o in held:
        groups.setdefault((r.domain, o), []).append(r.address)
    return [(domain, addresses, o) for (domain, o), addresses in groups.items()]


async def return_to_sender(env: Envelope, content: bytes, bouncer: Bouncer,
                           now: float) -> Envelope | None:
    """The DSN for the quarantined recipients of ``env``, with the primary's reply.

    The recipients become BOUNCED only once the notice is durable: when it cannot be
    stored this raises and nothing has changed.  Returns the notice to submit (None for
    the null sender or NOTIFY=NEVER, where no notice is due).
    """
    failures = [(r, core.refused_outcome(r)) for r in core.quarantined(env)]
    notice = await bouncer.notify(env, failures, content, now)
    for r, o in failures:
        r.state, r.refusal, r.next_attempt = o.kind, None, None
        env.history.append({"time": now, "recipient": r.address, "result": o.kind,
                            "relay": o.relay or "none", "reply": o.text,
                            "by": "administrator"})
        log.info("qmgr", log_text(env.id, r.address, o, now - env.arrival))
    # What was held for the refusal goes on; whatever else is open is tried again.
    env.hold = False
    return notice


async def bounce_on_files(spool: Spool, config: Callable[[], Config], qid: str) -> bool:
    """``queue bounce`` when no server runs: the notice is queued in the spool, where
    the next ``serve`` delivers it.  False when no message by that ID is quarantined."""
    if qid == "ALL":
        ids = [env.id for env in spool.envelopes() if core.quarantined(env)]
    else:
        ids = [qid]
    bouncer = DsnBouncer(spool, config)
    found = qid == "ALL"
    for entry_id in ids:
        env = spool.envelope(entry_id)
        if env is None or not core.quarantined(env):
            continue
        await return_to_sender(env, spool.content(entry_id), bouncer, time.time())
        if env.done:
            await spool.remove(entry_id)
        else:
            await spool.update(env)
        found = True
    return found
