"""The master's watch over the primaries: standby tables, probes, drained backlogs.

The queue manager feeds each destination's state machine (backupmx/health.py) with its
deliveries.  :class:`HealthWatch` adds what needs a clock of its own: once a second it
moves recovering destinations whose queued mail has drained to ``up``; while
``standby_while_primary_up`` is on it probes each relayed destination's primary every
``standby_probe_interval`` (connect, EHLO, QUIT), so the master knows whether the
primary is healthy without mail flowing through the backup; and it sends the standby
table (backupmx/standby.py) to the smtpd workers whenever it changes: a destination
found down, or healthy again, or its time moved on by a quarter of
``standby_health_expire_time``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from backupmx import health, standby
from backupmx.health import Destination, Transition
from backupmx.log import log
from backupmx.outcome import Outcome
from backupmx.qmgr.delivery import SmtpDeliverer
from backupmx.smtp.client import ConnectionPool
from backupmx.smtp.session import Connection, SessionFailure
from backupmx.status import queued, report

if TYPE_CHECKING:
    from backupmx.server import Server

#: how often the master looks for recovering destinations whose backlog has drained
TICK = 1.0
#: probes under way at once in one round
PROBES_AT_ONCE = 8
#: servers of a destination a probe tries, as the dead-destination probe does
SERVERS_TRIED = 2


class HealthWatch:
    """The master's side: keeps the workers' views current, probes, notices drained backlogs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.health = server.qmgr.health
        self.pushed: dict[str, float] = {}
        self._probe: asyncio.Task[None] | None = None
        self._deliverer = SmtpDeliverer(lambda: server.svc, server.smtp_port, ConnectionPool())
        self.health.listeners.append(self._changed)

    def lifetime(self) -> float:
        return self.server.svc.cfg.time("standby_health_expire_time")

    def message(self) -> dict[str, Any]:
        """The notice that gives a worker the whole table."""
        return {"t": "standby", "until": self.pushed}

    def _changed(self, domain: str, dest: Destination, moved: Transition | None) -> None:
        if moved is not None:
            was = moved.old.value if moved.old else "unknown"
            log.info("qmgr", f"{domain}: primary {was} -> {moved.new.value} ({moved.reason})")
        lifetime = self.lifetime()
        until = self.health.healthy_until(domain, lifetime)
        old = self.pushed.get(domain)
        if until is None and old is None:
            return
        if until is not None and old is not None and until - old < lifetime / 4:
            return
        self.push()

    def push(self) -> None:
        """Send the table to every worker and take it as this process's own view."""
        self.pushed = standby.table(self.health, self.lifetime(), time.time())
        standby.VIEW.until = dict(self.pushed)
        workers = self.server.workers
        if workers is not None:
            workers.tell_all(self.message())

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` answers."""
        cfg = self.server.svc.cfg
        return report(self.health, self.server.qmgr.msgs.values(), self.lifetime(),
                      cfg.bool(standby.PARAM), self.server.svc.verifier.catchall.report())

    async def run(self) -> None:
        """Until cancelled: drained backlogs every second, probes when standby is on."""
        due = 0.0
        while True:
            now = time.time()
            if self.health.recovering():
                self.health.drained(set(queued(e for e in self.server.qmgr.msgs.values()
                                               if not e.hold)), now)
            cfg = self.server.svc.cfg
            idle = self._probe is None or self._probe.done()
            if cfg.bool(standby.PARAM) and now >= due and idle:
                due = now + cfg.time("standby_probe_interval")
                self._probe = asyncio.create_task(self.probe_all())
            await asyncio.sleep(TICK)

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()

    def targets(self) -> list[str]:
        """The relayed destinations: relay_domains' own names and every destination that
        mail was delivered to (at most as many as the health states kept)."""
        names = set(self.server.svc.relay_domains.names()) | set(self.health.names())
        return sorted(names)[:health.LIMIT]

    async def probe_all(self) -> None:
        gate = asyncio.Semaphore(PROBES_AT_ONCE)

        async def one(domain: str) -> None:
            async with gate:
                try:
                    found = await self.probe(domain)
                except Exception as e:  # a probe that fails says nothing about the primary
                    log.warning("qmgr", f"{domain}: standby probe failed: {e!r}")
                    return
            if found is not None:
                self.health.observe(domain, found[0], found[1], time.time())

        await asyncio.gather(*(one(d) for d in self.targets()))

    async def probe(self, domain: str) -> tuple[bool, str] | None:
        """Does the primary of ``domain`` greet and answer EHLO?  None: no SMTP server to ask
        (a DNS failure, a transport_maps action)."""
        servers = await self._deliverer.route(domain, f"postmaster@{domain}")
        if isinstance(servers, Outcome):
            return None
        base = self._deliverer.client_settings()
        settings = replace(base, tls_level="none", helo_timeout=base.connect_timeout)
        failure = "no server to probe"
        for srv in servers[:SERVERS_TRIED]:
            try:
                conn = await Connection.open(srv, settings)
            except SessionFailure as e:
                failure = e.text
                continue
            conn.quit()
            return True, f"{srv.name}:{srv.port} answers EHLO"
        return False, failure

