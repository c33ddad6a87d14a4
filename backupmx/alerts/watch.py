"""The master's side of the alerts: events in, a look every second, alerts out.

The queue manager tells of every recipient's result (backupmx/qmgr/manager.py); a
deferral of mail from a real sender (not a notice backupmx sends itself) makes its
destination a candidate for holding.  Once a second, while anything is held or queued,
a look at the queue decides holding, drained and queue-age alerts, and ``os.statvfs``
of the queue directory the low-disk alert; a large queue is looked at less often, so
that the look never takes more than a small share of the master's time.  The health
state machines (backupmx/health.py) say in the drained alert how the primary is.
Every alert is logged; the webhook and the postmaster's mail go through ``send``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from backupmx.alerts.alert import Alert
from backupmx.alerts.decide import Backlog, Decisions, QueueView
from backupmx.alerts.send import Notice, Post, PostmasterMail, Webhook
from backupmx.envelope import DEFERRED, Envelope
from backupmx.log import log
from backupmx.outcome import Outcome
from backupmx.qmgr.core import Verdict
from backupmx.qmgr.ports import QuarantineAlert

if TYPE_CHECKING:
    from collections.abc import Iterable

    from backupmx.server import Server

#: how often the queue and the disk are looked at
TICK = 1.0
#: a look at the queue may take at most 1/LOOK_SHARE of the time between two looks
LOOK_SHARE = 50


def look(envs: Iterable[Envelope]) -> QueueView:
    """The queue as the decisions see it; mail on hold waits for the administrator, not
    for a primary, and does not count."""
    counts: dict[str, list[int]] = {}
    messages = 0
    oldest: float | None = None
    for env in envs:
        if env.hold:
            continue
        messages += 1
        if oldest is None or env.arrival < oldest:
            oldest = env.arrival
        seen: set[str] = set()
        for r in env.open_recipients:
            c = counts.setdefault(r.domain, [0, 0])
            c[1] += 1
            if r.domain not in seen:
                seen.add(r.domain)
                c[0] += 1
    return QueueView({d: Backlog(m, n) for d, (m, n) in counts.items()}, messages, oldest)


def free_bytes(path: str) -> int | None:
    """Free space for unprivileged writers on the file system of ``path``; None: unknown."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class _QuarantineTap:
    """The queue manager's quarantine port: its own log line first, then the alert."""

    def __init__(self, inner: QuarantineAlert, alerts: Alerts) -> None:
        self.inner, self.alerts = inner, alerts

    def quarantined(self, queue_id: str, destination: str, recipients: list[str],
                    reply: Outcome) -> None:
        self.inner.quarantined(queue_id, destination, recipients, reply)
        self.alerts.quarantined(queue_id, destination, reply.text)


class Alerts:
    """Raises alerts from the queue manager's events and its own looks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.decisions = Decisions()
        self.webhook = Webhook()
        self.mail = PostmasterMail(server.spool, server.qmgr.submit)
        self._next_look = 0.0
        server.qmgr.listeners.append(self._noted)
        server.qmgr.alert = _QuarantineTap(server.qmgr.alert, self)

    def _noted(self, env: Envelope, verdict: Verdict) -> None:
        if not env.sender:
            return
        now = time.time()
        for r, o in verdict.results:
            if o.kind == DEFERRED:
                self.decisions.deferred(r.domain, o.text, now)

    def quarantined(self, queue_id: str, destination: str, reply_text: str) -> None:
        """A message was put on hold because the primary refused it."""
        self.raise_alert(self.decisions.quarantined(queue_id, destination, reply_text,
                                                    time.time()))

    def raise_alert(self, alert: Alert) -> None:
        """Log it, and hand it to the webhook and the postmaster's mail as configured."""
        log.warning("alert", alert.log_line())
        cfg = self.server.svc.cfg
        host = cfg.str("myhostname")
        url = cfg.str("alert_webhook_url")
        if url:
            self.webhook.channel.put(Post(alert.kind, url, cfg.time("alert_webhook_timeout"),
                                          alert.payload(host)), f"alert={alert.kind}")
        if cfg.bool("alert_notify_postmaster"):
            self.mail.channel.put(Notice(alert, host, cfg.str("postmaster_address")),
                                  f"alert={alert.kind}")

    def check(self) -> None:
        """One round: the disk, and the queue when it is due for a look."""
        cfg = self.server.svc.cfg
        now = time.time()
        alerts: list[Alert] = []
        threshold = cfg.int("alert_disk_free_threshold")
        free = free_bytes(cfg.str("queue_directory")) if threshold > 0 else None
        if free is not None or threshold <= 0:
            alerts += self.decisions.disk(free or 0, threshold, now)
        age = cfg.time("alert_queue_age_threshold")
        msgs = self.server.qmgr.msgs
        started = time.monotonic()
        wanted = self.decisions.busy() or self.decisions.age_fired or (age > 0 and msgs)
        if wanted and started >= self._next_look:
            view = look(msgs.values())
            self._next_look = started + (time.monotonic() - started) * LOOK_SHARE
            health = self.server.qmgr.health
            states = {d.name: d.state.value for d in health.destinations.values()}
            alerts += self.decisions.queue(view, now, age, states)
        for alert in alerts:
            self.raise_alert(alert)

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            try:
                self.check()
            except Exception as e:  # an alert that fails must not end the watch
                log.error("alert", f"alert check failed: {type(e).__name__}: {e}")
            await asyncio.sleep(TICK)

    async def close(self) -> None:
        self.webhook.channel.close()
        self.mail.channel.close()
        await self.webhook.close()
