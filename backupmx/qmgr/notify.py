"""The bouncer: the sender's non-delivery notice, made durable in the spool.

``bounce.py`` lays the notice out; this queues it.  A notice that cannot be stored
raises, so that the queue manager keeps the original (and its bounced recipients)
until the notice is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from backupmx import bounce
from backupmx.envelope import Envelope, Recipient
from backupmx.log import log
from backupmx.outcome import Outcome
from backupmx.queue.ids import new_id

if TYPE_CHECKING:
    from backupmx.config import Config


class Committer(Protocol):
    async def commit(self, env: Envelope, content: bytes) -> str: ...


def failure(rcpt: Recipient, outcome: Outcome) -> bounce.Failure:
    """A recipient's outcome as the DSN reports it."""
    return bounce.Failure(rcpt, outcome.status, outcome.diagnostic or f"X-Backupmx; {outcome.text}",
                          outcome.remote, outcome.text)


class DsnBouncer:
    def __init__(self, spool: Committer, config: Callable[[], Config]) -> None:
        self.spool = spool
        self.config = config

    async def notify(self, env: Envelope, failures: list[tuple[Recipient, Outcome]],
                     content: bytes, now: float,
                     delayed_until: float | None = None) -> Envelope | None:
        """A DSN to the sender; never to the null sender (no bounce of a bounce).

        A delay notice carries the original's headers only, as Postfix's does.
        """
        cfg = self.config()
        kind = bounce.FAILED if delayed_until is None else bounce.DELAYED
        wanted = [failure(r, o) for r, o in failures if bounce.should_notify(env, r, kind)]
        if not wanted:
            if env.sender == "" and kind == bounce.FAILED:
                log.info("qmgr", f"{env.id}: undeliverable bounce discarded (null sender)")
            return None
        dsn = bounce.make_dsn(
            env, wanted, content, myhostname=cfg.str("myhostname"), kind=kind, now=now,
            bounce_size_limit=cfg.int("bounce_size_limit") if delayed_until is None else 0,
            will_retry_until=delayed_until,
        )
        notice = Envelope(
            id=new_id(), sender="", recipients=[Recipient(env.sender)], arrival=now,
            size=len(dsn),
        )
        await self.spool.commit(notice, dsn)
        what = "non-delivery" if delayed_until is None else "delay"
        log.info("bounce", f"{env.id}: sender {what} notification: {notice.id}")
        return notice
