"""An smtpd worker process: SMTP sessions on the master's listening sockets.

Started by the master (backupmx/master.py) as ``python -m backupmx.smtpd.worker``, as
root: it reads the configuration and lookup tables, gives up root like the master, and
dies with the master (parent-death signal, and the end of its channel).  It attaches
to the spool only when the master says ``start`` -- after the master's start-up checks
-- and then writes each accepted message there itself, answers 250 once it is durable,
and announces it to the master, who delivers.  Connection limits and recipient
verification are asked of the master, where they are counted and cached for all workers.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import socket
import sys
import time

from backupmx import config, privileges, services, standby
from backupmx.envelope import Envelope
from backupmx.ipc import Channel, ChannelClosed, Message, RemoteError
from backupmx.log import log
from backupmx.metrics import scrape
from backupmx.queue import ids
from backupmx.queue.store import SpoolError
from backupmx.smtpd.host import SmtpdHost, configure_logging, raise_fd_limit
from backupmx.smtpd.session import Session, anvil_reply, ceiling_reply
from backupmx.verify.service import Answer

SHUTDOWN_GRACE = 10.0
_PR_SET_PDEATHSIG = 1


class RemoteQueue:
    """The master's queue manager, seen from a worker."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def submit(self, env: Envelope, stored: str) -> None:
        self.channel.notify_raw(b'{"t":"queued","env":' + stored.encode() + b"}")

    def flush(self, domain: str | None = None) -> None:
        self.channel.notify({"t": "flush", "domain": domain})


class RemoteVerifier:
    """The master's verify service, seen from a worker: one cache and one probe per address.

    ``known_ok`` is the in-process shortcut before the relay test; here every question
    goes to the master, whose cached answer is just as exact.
    """

    def __init__(self, channel: Channel, spec: str) -> None:
        self.channel = channel
        self.spec = spec

    def known_ok(self, address: str, svc: services.Services) -> bool:
        return False

    async def query(self, address: str, target: str, svc: services.Services,
                    wait: float, recipient: bool = False) -> Answer:
        reply = await self.channel.request({"t": "verify", "address": address,
                                            "target": target, "wait": wait,
                                            "recipient": recipient})
        if "error" in reply:
            raise RemoteError(str(reply["error"]))
        return Answer(int(reply["status"]), str(reply["text"]))


class Worker(SmtpdHost):
    qmgr: RemoteQueue

    def __init__(self, cfg: config.Config, svc: services.Services) -> None:
        super().__init__(cfg, svc)
        self.channel: Channel | None = None
        self._start = asyncio.Event()
        self._stop = asyncio.Event()

    def _adopt(self, svc: services.Services) -> services.Services:
        assert self.channel is not None
        svc.verifier = RemoteVerifier(self.channel, svc.verifier.spec)  # type: ignore[assignment]
        return svc

    async def admit(self, session: Session) -> str | None:
        assert self.channel is not None
        try:
            answer = await self.channel.request({
                "t": "admit", "key": id(session), "ip": session.ctx.client_ip,
                "name": session.ctx.client_name})
        except ChannelClosed:
            return f"421 4.3.2 {session.host} Service shutting down, closing connection"
        if answer.get("ceiling"):
            return ceiling_reply(session, int(answer["ceiling"]))
        refusal = answer.get("refusal")
        return anvil_reply(session, str(refusal)) if refusal else None

    def rejected(self, stage: str, by: str, code: int, dsn: str) -> None:
        if self.channel is not None:
            self.channel.notify(
                {"t": "reject", "stage": stage, "by": by, "code": code, "dsn": dsn})

    def release(self, session: Session) -> None:
        if self.channel is not None:
            self.channel.notify({"t": "release", "key": id(session)})

    async def request_rate(self, kind: str, session: Session) -> int:
        assert self.channel is not None
        try:
            answer = await self.channel.request(
                {"t": "rate", "kind": kind, "ip": session.ctx.client_ip})
        except ChannelClosed:
            return 0  # the master is going away: nothing to count against
        return int(answer.get("rate", 0))

    def _from_master(self, msg: Message) -> Message | None:
        kind = msg.get("t")
        if kind == "start":
            self._start.set()
        elif kind == "reload":
            self.reload()
            return {}
        elif kind == "reopen":
            self.reopen_log()
            return {}
        elif kind == "metrics":
            return {"text": scrape.own()}
        elif kind == "standby":
            standby.VIEW.until = {str(d): float(u) for d, u in msg["until"].items()}
        return None

    def reload(self) -> None:
        svc = self.load_services()
        if svc is None:
            return
        old, self.svc = self.svc, self._adopt(svc)
        old.policy.close()

    async def run(self, channel_fd: int, listen_fds: list[int]) -> None:
        sock = socket.socket(fileno=channel_fd)
        self.channel = await Channel.open(sock, self._from_master)
        self.qmgr = RemoteQueue(self.channel)
        self.svc = self._adopt(self.svc)
        serving = asyncio.create_task(self.channel.serve())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_log)
        serving.add_done_callback(lambda _t: self._stop.set())  # the master has gone
        await asyncio.wait([asyncio.create_task(self._start.wait()),
                            asyncio.create_task(self._stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if self._stop.is_set():
            return
        try:
            self.spool.attach()
        except SpoolError as e:  # the master logs the exit and starts a new worker
            log.fatal("smtpd", str(e))
            return
        socks = [socket.socket(fileno=fd) for fd in listen_fds]
        await self.listen(socks)
        await self.start_serving()
        maps = asyncio.create_task(self.watch_maps())
        await self._stop.wait()
        await self.close_sessions(time.monotonic() + SHUTDOWN_GRACE)
        maps.cancel()
        self.spool.close()
        self.svc.policy.close()
        self.channel.close()


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the master ends, however it ends (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the closed channel still ends the worker
    if os.getppid() != parent:
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="backupmx-smtpd-worker")
    p.add_argument("--config", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--slots", type=int, required=True)
    p.add_argument("--channel", type=int, required=True)
    p.add_argument("--listen", default="")
    args = p.parse_args(argv)
    parent = os.getppid()
    raise_fd_limit()
    try:
        cfg = config.load(args.config)
        svc = services.build(cfg)
    except config.ConfigError as e:
        print(f"backupmx smtpd worker {args.index}: {e}", file=sys.stderr)
        return 1
    configure_logging(cfg)
    ids.configure(args.index, args.slots)
    try:
        privileges.drop(cfg)
    except privileges.PrivilegeError as e:
        log.fatal("smtpd", str(e))
        return 1
    _die_with_parent(parent)
    listen = [int(fd) for fd in args.listen.split(",") if fd]
    asyncio.run(Worker(cfg, svc).run(args.channel, listen))
    log.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
