"""Probes: ask the next hop that real mail would take whether it takes a recipient.

A probe is EHLO, ``MAIL FROM:<address_verify_sender>``, ``RCPT TO`` and RSET --
never DATA.  Probes for one destination share sessions: a few workers per
destination each keep one session, take every address queued meanwhile as one
batch (several RCPTs in one transaction) and keep the session for a short idle
time, so a burst of RCPTs for different users of a domain uses a handful of
connections instead of one each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backupmx.log import log
from backupmx.smtp.nexthop import (
    NextHop,
    RouteError,
    Server,
    servers_for,
)
from backupmx.smtp.nexthop import route as transport_route
from backupmx.smtp.session import ClientSettings, Connection, SessionFailure
from backupmx.smtp.wire import one_line, said, status_of
from backupmx.verify.decide import BOUNCE, DEFER, OK

if TYPE_CHECKING:
    from backupmx.config import Config
    from backupmx.services import Services

IDLE_TIME = 5.0  # seconds an idle probe session is kept for the next probe


def route(svc: Services, address: str) -> tuple[str, NextHop | str | None]:
    """address_verify_transport_maps, then address_verify_relayhost, then the domain."""
    tables = [svc.maps.get(spec) for spec in svc.cfg.list("address_verify_transport_maps")]
    return transport_route(address, tables, svc.cfg.list("address_verify_relayhost"))
SESSIONS_PER_DESTINATION = 2
BATCH_LIMIT = 50  # RCPTs per probe transaction


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found: status (OK/DEFER/BOUNCE), Postfix's reason text, where."""

    status: int
    text: str
    dsn: str
    relay: str = "none"


def probe_sender(cfg: Config) -> str:
    """address_verify_sender, qualified with myorigin; "" for the null sender."""
    sender = cfg.str("address_verify_sender").strip()
    if sender in ("", "<>"):
        return ""
    return sender if "@" in sender else f"{sender}@{cfg.str('myorigin')}"


def rcpt_result(server: Server, code: int, message: str) -> ProbeResult:
    """2xx deliverable, 5xx undeliverable, anything else undecided."""
    relay = f"{server.name}:{server.port}"
    status = status_of(code, message)
    if code // 100 == 2:
        return ProbeResult(OK, one_line(code, message), status, relay)
    text = said(server.name, code, message, "RCPT TO")
    return ProbeResult(BOUNCE if code // 100 == 5 else DEFER, text, status, relay)


Job = tuple[str, asyncio.Future[ProbeResult]]
STOPPED = ProbeResult(DEFER, "address verification stopped", "4.3.0")


@dataclass
class _Destination:
    key: tuple[str, str]
    domain: str
    transport: str
    hop: NextHop | str | None
    svc: Services
    pending: list[Job] = field(default_factory=list)
    workers: int = 0
    idle: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Prober:
    """Runs probes; ``probe`` returns when the primary has answered (or could not)."""

    def __init__(
        self, idle_time: float = IDLE_TIME, sessions: int = SESSIONS_PER_DESTINATION
    ) -> None:
        self.idle_time = idle_time
        self.sessions = sessions
        self._dests: dict[tuple[str, str], _Destination] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0  # sessions opened, for metrics and tests
        self._closed = False

    async def probe(self, address: str, svc: Services) -> ProbeResult:
        try:
            transport, hop = route(svc, address)
        except Exception as e:
            return ProbeResult(DEFER, f"transport_maps lookup failure: {e}", "4.3.0")
        if transport == "error":
            return ProbeResult(BOUNCE, str(hop or "mail for this destination is refused"), "5.0.0")
        if transport == "retry":
            return ProbeResult(DEFER, str(hop or "delivery deferred by transport_maps"), "4.0.0")
        if transport == "discard":
            return ProbeResult(OK, "discarded by transport_maps", "2.0.0")
        if self._closed:
            return STOPPED
        domain = address.rpartition("@")[2].lower()
        key = (transport, str(hop) if hop is not None else domain)
        dest = self._dests.get(key)
        if dest is None:
            dest = self._dests[key] = _Destination(key, domain, transport, hop, svc)
        dest.svc = svc
        fut: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
        dest.pending.append((address, fut))
        if dest.idle:
            dest.wake.set()
        elif dest.workers < self.sessions:
            self._spawn(dest)
        return await fut

    def _spawn(self, dest: _Destination) -> None:
        dest.workers += 1
        task = asyncio.create_task(self._worker(dest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _worker(self, dest: _Destination) -> None:
        conn: Connection | None = None
        try:
            while not self._closed:
                if not dest.pending:
                    dest.idle += 1
                    dest.wake.clear()
                    try:
                        await asyncio.wait_for(dest.wake.wait(), self.idle_time)
                    except TimeoutError:
                        if not dest.pending:
                            return
                    finally:
                        dest.idle -= 1
                    continue
                batch = dest.pending[:BATCH_LIMIT]
                del dest.pending[:BATCH_LIMIT]
                try:
                    conn = await self._batch(dest, conn, batch)
                except Exception as e:  # a bug must answer "undecided", never hang a RCPT
                    log.warning("verify", f"probe for {dest.domain} failed: {e!r}")
                    _answer(batch, ProbeResult(DEFER, f"address verification failed: {e}",
                                               "4.3.0"))
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            dest.workers -= 1
            if conn is not None:
                conn.quit()
            if self._closed:
                _answer(dest.pending, STOPPED)
                dest.pending.clear()
            elif dest.pending and dest.workers == 0:
                self._spawn(dest)
            elif dest.workers == 0 and self._dests.get(dest.key) is dest:
                del self._dests[dest.key]

    async def _batch(
        self, dest: _Destination, conn: Connection | None, batch: list[Job]
    ) -> Connection | None:
        """Probe every address of ``batch``; returns the session to keep, if any."""
        svc = dest.svc
        cfg = svc.cfg
        try:
            servers = await servers_for(
                dest.domain,
                dest.hop if isinstance(dest.hop, NextHop) else None,
                resolver=svc.resolver,
                port=cfg.int("smtp_tcp_port"),
                is_myself=lambda ip, port: svc.is_own_ip(ip),
                mx_address_limit=cfg.int("smtp_mx_address_limit"),
            )
        except RouteError as e:
            # A temporary DNS failure is never an undeliverable address.
            _answer(batch, ProbeResult(BOUNCE if e.permanent else DEFER, e.text, e.status))
            return conn
        client = ClientSettings.from_config(cfg)
        sender = probe_sender(cfg)
        if (conn is not None and conn.connected and conn.server in servers
                and conn.settings == client):  # not a session of an older configuration
            try:
                await self._transaction(conn, sender, batch)
                return conn if conn.connected else None
            except SessionFailure:
                pass  # the kept session went stale: go on with new ones
        if conn is not None:
            conn.close()
        failure = SessionFailure(False, "4.4.4", f"no mail servers for {dest.domain}")
        sessions = 0
        for server in servers:
            conn = None
            try:
                self.connections += 1
                conn = await Connection.open(server, client)
                await self._transaction(conn, sender, batch)
                return conn if conn.connected else None
            except SessionFailure as f:
                if conn is not None:
                    conn.close()
                failure = f
                sessions += f.greeted
                if sessions >= client.mx_session_limit:
                    break
        _answer(batch, ProbeResult(DEFER, failure.text, "4" + failure.status[1:]))
        return None

    @staticmethod
    async def _transaction(conn: Connection, sender: str, batch: list[Job]) -> None:
        """MAIL, one RCPT per address, RSET; each future gets its RCPT's result."""
        server = conn.server
        resp = await conn.mail(sender, [])
        if resp.code // 100 != 2:
            if resp.code // 100 != 5:
                raise SessionFailure(False, "4" + status_of(resp.code, resp.message)[1:],
                                     said(server.name, resp.code, resp.message, "MAIL FROM"))
            text = said(server.name, resp.code, resp.message, "MAIL FROM")
            relay = f"{server.name}:{server.port}"
            _answer(batch, ProbeResult(BOUNCE, text, status_of(resp.code, resp.message), relay))
        else:
            results: list[ProbeResult] = []
            for address, _ in batch:
                resp = await conn.rcpt(address, [])
                if resp.code == 421:
                    raise SessionFailure(False, "4" + status_of(resp.code, resp.message)[1:],
                                         said(server.name, resp.code, resp.message, "RCPT TO"))
                results.append(rcpt_result(server, resp.code, resp.message))
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        resp = await conn.rset()
        if resp.code != 250:
            conn.quit()

    async def close(self) -> None:
        # The flag as well as the cancel: a cancel that meets a finished reply is lost.
        self._closed = True
        for dest in self._dests.values():
            dest.wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for dest in self._dests.values():
            _answer(dest.pending, STOPPED)
        self._dests.clear()


def _answer(batch: list[Job], result: ProbeResult) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_result(result)


def elapsed(start: float) -> str:
    """Postfix's delay= format for a probe that started at monotonic time ``start``."""
    d = max(0.0, time.monotonic() - start)
    return str(round(d)) if d >= 10 else (f"{d:.2f}".rstrip("0").rstrip(".") or "0")
