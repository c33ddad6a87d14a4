"""Delivering alerts beyond the log: the webhook and the postmaster's mail.

Neither is on the mail path: an alert is put on a bounded in-memory queue and one task
per channel works through it, so a webhook that hangs or a spool that is slow delays no
session and no delivery.  When the queue is full the alert is only logged (it always is).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import aiohttp

from backupmx.alerts.alert import Alert
from backupmx.envelope import Envelope, Recipient
from backupmx.log import log
from backupmx.queue.ids import new_id

#: alerts waiting per channel; beyond that they are dropped (and the drop logged)
QUEUE_SIZE = 100
#: attempts per webhook alert, and the wait before the second (doubled each time)
ATTEMPTS = 5
BACKOFF = 1.0
#: HTTP statuses worth trying again besides 5xx: the receiver asks for patience
_AGAIN = (408, 429)

T = TypeVar("T")


class Channel(Generic[T]):
    """A bounded queue of work done one item at a time by a task of its own."""

    def __init__(self, name: str, handle: Callable[[T], Awaitable[None]],
                 size: int = QUEUE_SIZE) -> None:
        self.name = name
        self.handle = handle
        self.queue: asyncio.Queue[T] = asyncio.Queue(size)
        self._task: asyncio.Task[None] | None = None

    def put(self, item: T, what: str) -> None:
        """Queue ``item`` (``what`` names it in the log); never waits."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("alert", f"{what}: {self.name} queue full, not sent")

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self.handle(item)
            except Exception as e:  # one failure must not end the channel
                log.warning("alert", f"{self.name} failed: {type(e).__name__}: {e}")

    async def idle(self) -> None:
        """Until everything queued has been handled (tests, shutdown)."""
        while not self.queue.empty():
            await asyncio.sleep(0.05)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


@dataclass(frozen=True)
class Post:
    """One alert for the webhook, with the settings in force when it was raised."""

    kind: str
    url: str
    timeout: float
    payload: dict[str, Any]


def retryable(status: int) -> bool:
    return status >= 500 or status in _AGAIN


class Webhook:
    """POSTs each alert as JSON, trying again with backoff a bounded number of times."""

    def __init__(self, attempts: int = ATTEMPTS, backoff: float = BACKOFF) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self._session: aiohttp.ClientSession | None = None
        self.channel: Channel[Post] = Channel("webhook", self.post)

    async def post(self, p: Post) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.post(
                        p.url, json=p.payload,
                        timeout=aiohttp.ClientTimeout(total=p.timeout)) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as e:
                status, why = 0, str(e) or type(e).__name__
            else:
                why = f"HTTP {status}"
                if 200 <= status < 300:
                    log.info("alert", f"alert={p.kind} webhook: {why}, attempt {attempt}")
                    return
                if not retryable(status):
                    log.warning("alert", f"alert={p.kind} webhook refused it: {why}")
                    return
            if attempt == self.attempts:
                log.warning("alert", f"alert={p.kind} webhook failed: {why}; giving up after "
                            f"{attempt} attempts")
                return
            wait = self.backoff * 2 ** (attempt - 1)
            log.warning("alert", f"alert={p.kind} webhook failed: {why}; trying again in "
                        f"{wait:g}s")
            await asyncio.sleep(wait)

    async def close(self) -> None:
        self.channel.close()
        if self._session is not None:
            await self._session.close()


class Committer(Protocol):
    async def commit(self, env: Envelope, content: bytes) -> str: ...


@dataclass(frozen=True)
class Notice:
    """One alert for the postmaster, with the addresses in force when it was raised."""

    alert: Alert
    host: str
    to: str


class PostmasterMail:
    """Queues each alert as a mail to the postmaster, for the normal delivery path.

    The sender is the null sender, as for a non-delivery notice: a notice that cannot be
    delivered is never bounced, and never counts as mail held for its destination.
    """

    def __init__(self, spool: Committer, submit: Callable[[Envelope], None]) -> None:
        self.spool = spool
        self.submit = submit
        self.channel: Channel[Notice] = Channel("postmaster notification", self.send)

    async def send(self, n: Notice) -> None:
        qid = new_id()
        content = n.alert.mail(n.host, f"MAILER-DAEMON@{n.host}", n.to, f"{qid}.alert@{n.host}")
        env = Envelope(id=qid, sender="", recipients=[Recipient(n.to)], arrival=n.alert.time,
                       size=len(content))
        await self.spool.commit(env, content)
        self.submit(env)
        log.info("alert", f"alert={n.alert.kind} postmaster notification: {qid}")
