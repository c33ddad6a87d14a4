"""``backupmx serve``: wire the rooms together; signals; start-up and shutdown.

The process started by ``serve`` is the master: it owns the queue manager, the
delivery side, the verify service, anvil and the admin endpoint.  SMTP is served by
``smtpd_worker_processes`` worker processes (backupmx/master.py) or, with 0, by the
master itself -- one Python process runs on one core, and a backup MX after an outage
needs both accepting and delivering at full speed.

SIGHUP builds new services from the file and swaps them in (a broken file keeps
the old ones and logs why) and is passed on to the workers; SIGUSR1 reopens
``maillog_file`` here and in the workers, for logrotate; SIGTERM stops
accepting, lets sessions and deliveries in flight finish for a grace period, and
exits.  Nothing is lost by stopping: a message was acknowledged only once durable,
and an interrupted delivery leaves its recipients queued.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

from backupmx import (
    __version__,
    admin,
    adminauth,
    alerts,
    anvil,
    cluster,
    config,
    healthwatch,
    privileges,
    qmgr,
    services,
)
from backupmx.cluster.node import Node
from backupmx.log import log
from backupmx.master import BindError, Supervisor, bind
from backupmx.smtpd.host import SmtpdHost, configure_logging, raise_fd_limit
from backupmx.smtpd.session import Session, anvil_reply
from backupmx.verify import service as verify_service

__all__ = ["Server", "configure_logging", "run", "serve"]

SHUTDOWN_GRACE = 10.0
RELOAD_WAIT = 10.0  # the longest a reload waits for the workers to confirm theirs


class Server(SmtpdHost):
    qmgr: qmgr.Qmgr

    def __init__(self, cfg: config.Config, svc: services.Services) -> None:
        super().__init__(cfg, svc)
        self.qmgr = qmgr.build(self.spool, lambda: self.svc, self.smtp_port)
        self.watch = healthwatch.HealthWatch(self)
        self.alerts = alerts.Alerts(self)
        self.anvil = anvil.Anvil()
        self.node: Node | None = None
        self._node_task: asyncio.Task[None] | None = None
        self.workers: Supervisor | None = None
        self._admin: admin.Endpoint | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        self.started = time.time()

    # --- admission: the master's own sessions and the workers' -------------------
    async def admit(self, session: Session) -> str | None:
        refusal = self.anvil.admit(session, self.svc)
        return anvil_reply(session, refusal) if refusal else None

    def release(self, session: Session) -> None:
        self.anvil.release(session)

    async def request_rate(self, kind: str, session: Session) -> int:
        return self.anvil.request(kind, session.ctx.client_ip,
                                  self.svc.cfg.time("anvil_rate_time_unit"))

    def admit_peer(self, peer: SimpleNamespace) -> dict[str, object]:
        """A worker's client: over the global session ceiling, over an anvil limit, or in."""
        ceiling = self.svc.cfg.int("smtpd_max_sessions")
        if ceiling and self.anvil.sessions >= ceiling:
            return {"ceiling": ceiling}
        return {"refusal": self.anvil.admit(peer, self.svc)}

    def session_count(self) -> int:
        return len(self.sessions) if self.workers is None else self.anvil.sessions

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Bind (as root for port 25), drop privileges, open the queue, then serve."""
        await self.svc.own_addresses()  # proxy_interfaces names, before anything uses them
        sockets = bind(self.svc.listen)
        count = self.svc.cfg.int("smtpd_worker_processes")
        if count:
            self.workers = Supervisor(self, count, sockets)
            await self.workers.spawn_all()  # as root: each drops privileges itself
        else:
            await self.listen(sockets)
        token = self._admin_token()  # a file only root reads: before giving up root
        privileges.drop(self.svc.cfg)
        report = self.spool.open()
        log.info("qmgr", f"queue {self.svc.cfg.str('queue_directory')}: {report}")
        self.qmgr.load(self.spool.envelopes())
        try:
            self.svc.verifier.open(lambda: self.svc)
        except Exception as e:  # mail still flows; verification answers 450 until fixed
            log.warning("master", f"cannot open address_verify_map "
                        f"{self.svc.verifier.spec}: {e}")
        self._join(self.svc.cfg)  # before the first client: anvil counts across the nodes
        if self.workers is not None:
            self.workers.start_all()
        else:
            await self.start_serving()
        for host, port in self.svc.listen:
            log.info("master", f"listening on {host}:{port}")
        self._admin = await admin.start(self, token)
        self._qmgr_task = asyncio.create_task(self.qmgr.run())
        self._watch_task = asyncio.create_task(self.watch.run())
        self._alerts_task = asyncio.create_task(self.alerts.run())
        self._maps_task = asyncio.create_task(self.watch_maps())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_log_all)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        log.info("master",
                 f"daemon started -- version {__version__}, configuration {self.cfg_path}")

    # --- the cluster (backupmx/cluster/) ----------------------------------------
    def _join(self, cfg: config.Config) -> None:
        """Count anvil's clients in ``cluster_store`` and publish this node there."""
        self.node = Node.configured(cfg)
        self.anvil.shared = self.node.counts if self.node else None
        if self.node is None:
            return
        problem = self.node.clash(cfg.str("queue_directory"))
        if problem:
            log.warning("cluster", problem)
        log.info("cluster", f"node {self.node.name} in {self.node.url}")
        self._node_task = asyncio.create_task(self.node.run(
            self._node_record, lambda: self.svc.cfg.time("cluster_publish_interval")))

    def _leave(self) -> None:
        """Say this node stopped, so that its record reads so and its counts stop at once."""
        if self._node_task is not None:
            self._node_task.cancel()
            self._node_task = None
        if self.node is not None:
            self.node.publish(self._node_record("stopped"),
                              self.svc.cfg.time("cluster_publish_interval"))
            self.node.close()
        self.node = None
        self.anvil.shared = None

    def _node_record(self, state: str = "running") -> dict[str, Any]:
        assert self.node is not None
        listen = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.svc.listen]
        return self.node.record(self.watch.status(), self.session_count(), listen,
                                self.svc.cfg.str("queue_directory"), state)

    def _admin_token(self) -> str | None:
        path = self.svc.cfg.str("admin_token_file")
        if not path:
            return None
        token, problem = adminauth.read_token(path)
        if problem:
            log.warning("master", f"{problem}: {adminauth.NO_TOKEN}")
        return token

    def reload(self) -> None:
        self._in_turn(self._reload())

    def reopen_log_all(self) -> None:
        self._in_turn(self._reopen_log())

    def _in_turn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reopen_log(self) -> None:
        """SIGUSR1, after logrotate moved ``maillog_file``: the master and every worker
        open it anew; the log line comes once all of them write to the new file."""
        if not log.path:
            return
        async with self._reload_lock:
            if not self.reopen_log():
                return
            if self.workers is not None:
                await self.workers.reopen_log_all(RELOAD_WAIT)
            log.info("master", f"reopened {log.path}")

    async def _reload(self) -> None:
        """Re-read the file here and in every worker; the log line says all of them did."""
        async with self._reload_lock:  # two quick SIGHUPs: applied and logged in order
            svc = self.load_services()
            if svc is None:
                return  # the workers would fail alike: they keep theirs too
            count = "smtpd_worker_processes"
            if svc.cfg.int(count) != self.svc.cfg.int(count):
                log.warning("master", f"{count} changed: restart backupmx to apply it")
            await svc.own_addresses()
            if svc.cfg.str("admin_token_file") != self.svc.cfg.str("admin_token_file"):
                log.warning("master", "admin_token_file changed: restart backupmx to apply it")
            old, self.svc = self.svc, svc
            old.policy.close()  # idle policy connections and the greylist store of the old config
            await self.qmgr.reload()
            try:
                svc.verifier.open(lambda: self.svc)  # the same verifier unless the map changed
            except Exception as e:
                log.warning("master", f"cannot open address_verify_map {svc.verifier.spec}: {e}")
            if self.workers is not None:
                await self.workers.reload_all(RELOAD_WAIT)
            self.watch.push()  # standby_health_expire_time may have changed
            if not (self.node.same(svc.cfg) if self.node else not svc.cfg.str(cluster.PARAM)):
                self._leave()
                self._join(svc.cfg)
            log.info("master", "reload -- configuration " + self.cfg_path)

    async def run_until_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        log.info("master", "terminating on signal")
        deadline = time.monotonic() + SHUTDOWN_GRACE
        if self.workers is not None:
            await self.workers.stop(deadline)
        await self.close_sessions(deadline)
        await self.qmgr.stop(max(0.5, deadline - time.monotonic()))
        self._leave()
        self._qmgr_task.cancel()
        self._watch_task.cancel()
        self.watch.stop()
        self._alerts_task.cancel()
        await self.alerts.close()
        self._maps_task.cancel()
        if self._admin:
            await self._admin.close()
        self.spool.close()
        self.svc.policy.close()
        await verify_service.close_all()
        log.info("master", "stopped")


async def serve(cfg: config.Config) -> int:
    svc = services.build(cfg)
    configure_logging(cfg)
    # what `check` warns of, for the log
    for issue in cfg.warnings + services.warnings(svc, resolve_names=False):
        log.warning("master", str(issue).replace(": warning: ", ": ", 1))
    server = Server(cfg, svc)
    try:
        await server.start()
    except (privileges.PrivilegeError, BindError) as e:
        log.fatal("master", str(e))
        if server.workers is not None:
            await server.workers.stop(time.monotonic() + 1)
        return 1
    await server.run_until_stopped()
    return 0


def run(cfg: config.Config) -> int:
    raise_fd_limit()
    # The standard event loop on purpose: under uvloop, pooled delivery connections
    # (aiosmtplib on a reused session) stalled waiting for the reply to the final dot.
    return asyncio.run(serve(cfg))
