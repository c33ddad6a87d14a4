"""``backupmx serve``: wire the rooms together; signals; start-up and shutdown.

SIGHUP builds new services from the file and swaps them in (a broken file keeps
the old ones and logs why); SIGTERM stops accepting, lets sessions and
deliveries in flight finish for a grace period, and exits.  Nothing is lost by
stopping: a message was acknowledged only once durable, and an interrupted
delivery leaves its recipients queued.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import signal
import time

from backupmx import admin, anvil, config, privileges, services
from backupmx.log import log
from backupmx.maps import Maps
from backupmx.qmgr import Qmgr
from backupmx.queue.store import Spool
from backupmx.smtpd.conn import Conn
from backupmx.smtpd.session import Session
from backupmx.verify import service as verify_service

SHUTDOWN_GRACE = 10.0
MAPS_CHECK_INTERVAL = 2.0  # how often lookup-table files are checked for changes


def configure_logging(cfg: config.Config) -> None:
    log.configure(
        syslog_name=cfg.str("syslog_name"),
        maillog_file=cfg.str("maillog_file"),
        syslog_facility=cfg.str("syslog_facility"),
        myhostname=cfg.str("myhostname"),
    )


class Server:
    def __init__(self, cfg: config.Config, svc: services.Services) -> None:
        self.cfg_path = cfg.path
        self.svc = svc
        self.spool = Spool(cfg.str("queue_directory"))
        self.qmgr = Qmgr(self)
        self.anvil = anvil.Anvil()
        self.sessions: set[Session] = set()
        self.stopping = False
        self._listeners: list[asyncio.base_events.Server] = []
        self._admin: asyncio.base_events.Server | None = None
        self._stop = asyncio.Event()
        self._free_checked = 0.0
        self._free_ok = True
        self.started = time.time()

    # --- used by sessions and the queue manager ---------------------------------
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

    def anvil_refusal(self, session: Session) -> str | None:
        return self.anvil.admit(session, self.svc)

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Bind (as root for port 25), drop privileges, open the queue, then serve."""
        loop = asyncio.get_running_loop()
        for host, port in self.svc.listen:
            srv = await loop.create_server(
                lambda: Conn(self._session), host, port, reuse_address=True, backlog=1024,
                start_serving=False,
            )
            self._listeners.append(srv)
        privileges.drop(self.svc.cfg)
        report = self.spool.open()
        log.info("qmgr", f"queue {self.svc.cfg.str('queue_directory')}: {report}")
        self.qmgr.load(self.spool.envelopes())
        try:
            self.svc.verifier.open(lambda: self.svc)
        except Exception as e:  # mail still flows; verification answers 450 until fixed
            log.warning("master", f"cannot open address_verify_map "
                        f"{self.svc.verifier.spec}: {e}")
        for srv, (host, port) in zip(self._listeners, self.svc.listen, strict=True):
            await srv.start_serving()
            log.info("master", f"listening on {host}:{port}")
        self._admin = await admin.start(self)
        self._qmgr_task = asyncio.create_task(self.qmgr.run())
        self._maps_task = asyncio.create_task(self._watch_maps())
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        log.info("master", "daemon started -- version backupmx, configuration " + self.cfg_path)

    async def _session(self, conn: Conn) -> None:
        s = Session(self, conn)
        self.sessions.add(s)
        try:
            await s.run()
        finally:
            self.sessions.discard(s)
            self.anvil.release(s)

    async def _watch_maps(self) -> None:
        """Re-read lookup tables whose file changed; SIGHUP re-reads all of them."""
        while True:
            await asyncio.sleep(MAPS_CHECK_INTERVAL)
            self.svc.maps.reload_changed()

    def reload(self) -> None:
        try:
            cfg = config.load(self.cfg_path)
            svc = services.build(cfg, maps=Maps())
        except config.ConfigError as e:
            log.warning("master", f"reload failed, keeping the running configuration: {e}")
            return
        new_listen = set(svc.listen)
        if new_listen != set(self.svc.listen):
            log.warning("master", "smtpd_listen changed: restart backupmx to apply it")
            svc.listen = self.svc.listen
        svc.resolver = self.svc.resolver if cfg.list("dns_nameservers") == \
            self.svc.cfg.list("dns_nameservers") else svc.resolver
        configure_logging(cfg)
        old, self.svc = self.svc, svc
        old.policy.close()  # idle policy connections and the greylist store of the old config
        try:
            svc.verifier.open(lambda: self.svc)  # the same verifier unless the map changed
        except Exception as e:
            log.warning("master", f"cannot open address_verify_map {svc.verifier.spec}: {e}")
        log.info("master", "reload -- configuration " + self.cfg_path)

    async def run_until_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        log.info("master", "terminating on signal")
        self.stopping = True
        for srv in self._listeners:
            srv.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        # Sessions that wait for a command get 421 at once; those in DATA may finish.
        for s in list(self.sessions):
            if not s.in_data:
                s.conn.interrupt(linger=0.2)
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.qmgr.stop(max(0.5, deadline - time.monotonic()))
        self._qmgr_task.cancel()
        self._maps_task.cancel()
        if self._admin:
            self._admin.close()
        self.spool.close()
        self.svc.policy.close()
        await verify_service.close_all()
        log.info("master", "stopped")


async def serve(cfg: config.Config) -> int:
    svc = services.build(cfg)
    configure_logging(cfg)
    server = Server(cfg, svc)
    try:
        await server.start()
    except privileges.PrivilegeError as e:
        log.error("master", f"fatal: {e}")
        return 1
    await server.run_until_stopped()
    return 0


def run(cfg: config.Config) -> int:
    # Every session is a file descriptor: take all the system allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The standard event loop on purpose: under uvloop, pooled delivery connections
    # (aiosmtplib on a reused session) stalled waiting for the reply to the final dot.
    return asyncio.run(serve(cfg))
