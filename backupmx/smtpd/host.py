"""What the SMTP sessions of one process share: services, spool, listeners, admission.

Two kinds of process serve SMTP.  With ``smtpd_worker_processes = 0`` the master does it
itself (backupmx/server.py); otherwise each smtpd worker does (backupmx/smtpd/worker.py)
and the master delivers.  Both are an :class:`SmtpdHost`: sessions see the same
attributes either way and differ only in where a queued message is announced and who
counts connections (:meth:`admit`).
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import socket
import time
from typing import TYPE_CHECKING, Protocol

from backupmx import config, rejects, services
from backupmx.log import log
from backupmx.maps import Maps
from backupmx.metrics import instruments
from backupmx.queue.store import Spool
from backupmx.smtpd import haproxy
from backupmx.smtpd.conn import Closed, Conn
from backupmx.smtpd.session import Session

if TYPE_CHECKING:
    from backupmx.envelope import Envelope

MAPS_CHECK_INTERVAL = 2.0  # how often lookup-table files are checked for changes
BACKLOG = 1024


class QueueFront(Protocol):
    """Where a session announces a durable message and an ETRN."""

    def submit(self, env: Envelope, stored: str) -> None:
        """``env`` is durable; ``stored`` is its JSON as the spool keeps it."""
    def flush(self, domain: str | None = None) -> object: ...


def configure_logging(cfg: config.Config) -> None:
    log.configure(
        syslog_name=cfg.str("syslog_name"),
        maillog_file=cfg.str("maillog_file"),
        syslog_facility=cfg.str("syslog_facility"),
        myhostname=cfg.str("myhostname"),
    )


def raise_fd_limit() -> None:
    """Every session is a file descriptor: take all the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class SmtpdHost:
    qmgr: QueueFront

    def __init__(self, cfg: config.Config, svc: services.Services) -> None:
        self.cfg_path = cfg.path
        self.svc = svc
        self.spool = Spool(cfg.str("queue_directory"))
        self.sessions: set[Session] = set()
        self.stopping = False
        self._listeners: list[asyncio.base_events.Server] = []
        self._free_checked = 0.0
        self._free_ok = True
        self.rejects = rejects.Recent()

    # --- used by sessions -----------------------------------------------------------
    def rejected(self, stage: str, by: str, code: int, dsn: str) -> None:
        """``by`` refused something at ``stage`` with this reply (as sent)."""
        self.rejects.add(stage, by, code, dsn)

    def smtp_port(self) -> int:
        return self.svc.cfg.int("smtp_tcp_port")

    def spool_free_ok(self) -> bool:
        """At least 1.5 × message_size_limit free in the queue directory (cached 1 s)."""
        now = time.monotonic()
        if now - self._free_checked > 1.0:
            self._free_checked = now
            try:
                free = shutil.disk_usage(self.svc.cfg.str("queue_directory")).free
                self._free_ok = free >= 1.5 * self.svc.cfg.int("message_size_limit")
            except OSError:
                self._free_ok = False
        return self._free_ok

    async def admit(self, session: Session) -> str | None:
        """The 421 reply for a client over a connection limit, else None (and counted)."""
        raise NotImplementedError

    def release(self, session: Session) -> None:
        """The session has ended: it no longer counts towards the limits."""
        raise NotImplementedError

    async def request_rate(self, kind: str, session: Session) -> int:
        """Count a MAIL or RCPT (anvil.REQUESTS) of the client; its rate, the request included."""
        raise NotImplementedError

    # --- listening ------------------------------------------------------------------
    async def listen(self, sockets: list[socket.socket]) -> None:
        """Prepare the listeners on the sockets the master bound (backupmx/master.py)."""
        loop = asyncio.get_running_loop()
        for sock in sockets:
            self._listeners.append(await loop.create_server(
                lambda: Conn(self._session), sock=sock, backlog=BACKLOG, start_serving=False))

    async def start_serving(self) -> None:
        for srv in self._listeners:
            await srv.start_serving()

    async def _session(self, conn: Conn) -> None:
        if self.svc.cfg.str("smtpd_upstream_proxy_protocol") and not await self._proxied(conn):
            return
        s = Session(self, conn)
        self.sessions.add(s)
        try:
            await s.run()
        finally:
            self.sessions.discard(s)
            self.release(s)

    async def _proxied(self, conn: Conn) -> bool:
        """Read the balancer's PROXY header before anything else; without a valid one the
        connection is refused (421 4.3.0, as Postfix), never served as the balancer's."""
        try:
            header = await conn.read_header(
                haproxy.parse, self.svc.cfg.time("smtpd_upstream_proxy_timeout"))
        except haproxy.ProxyError as e:
            reason = f"{e}: {haproxy.escape(bytes(conn.buf[:haproxy.V1_MAX]))}"
        except TimeoutError:
            reason = "timeout error"
        except Closed:
            reason = "unexpected EOF"
        else:
            conn.consume(header.length)
            if header.endpoints is not None:
                p = header.endpoints
                conn.proxied = (p.client_ip, p.client_port), (p.server_ip, p.server_port)
            return True
        (peer, _port), _server = conn.endpoints()
        log.warning("smtpd", f"haproxy read: {reason} (from [{peer}])")
        instruments.CONNECTIONS.labels("proxy_refused").inc()
        conn.reply(f"421 4.3.0 {self.svc.cfg.str('myhostname')} Server local error")
        conn.linger = 0.5
        await conn.close()
        return False

    async def watch_maps(self) -> None:
        """Re-read lookup tables whose file changed; SIGHUP re-reads all of them."""
        while True:
            await asyncio.sleep(MAPS_CHECK_INTERVAL)
            self.svc.maps.reload_changed()

    def load_services(self) -> services.Services | None:
        """The services of the file as it is now; None (logged) when it does not load."""
        try:
            cfg = config.load(self.cfg_path)
            svc = services.build(cfg, maps=Maps())
        except config.ConfigError as e:
            log.warning("master", f"reload failed, keeping the running configuration: {e}")
            return None
        if set(svc.listen) != set(self.svc.listen):
            log.warning("master", "smtpd_listen changed: restart backupmx to apply it")
            svc.listen = self.svc.listen
        if cfg.list("dns_nameservers") == self.svc.cfg.list("dns_nameservers"):
            svc.resolver = self.svc.resolver
        configure_logging(cfg)
        return svc

    def reopen_log(self) -> bool:
        """SIGUSR1: open ``maillog_file`` anew; one that cannot be opened keeps the old."""
        try:
            log.reopen()
        except OSError as e:
            log.warning("master", f"cannot reopen maillog_file {log.path}: {e.strerror}")
            return False
        return True

    async def close_sessions(self, deadline: float) -> None:
        """Stop listening; 421 to idle sessions at once, those in DATA may finish."""
        self.stopping = True
        for srv in self._listeners:
            srv.close()
        for s in list(self.sessions):
            if not s.in_data:
                s.conn.interrupt(linger=0.2)
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
