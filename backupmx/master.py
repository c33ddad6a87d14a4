"""The master's smtpd workers: bind for them, spawn, answer, supervise, stop.

The master binds every ``smtpd_listen`` address once (as root, for port 25) and hands
the listening sockets to ``smtpd_worker_processes`` workers (``python -m
backupmx.smtpd.worker``); the kernel gives each new connection to whichever worker
accepts first, so a busy worker takes fewer.  Each worker writes the messages it accepts
into the shared spool itself and then announces them here; the master delivers.

What must be counted across all sessions stays in the master, as in Postfix: anvil
(connection count and rate, MAIL and RCPT rates per client, and the session ceiling)
and the verify service (one cache, one probe per address however many workers ask).
A worker that dies is replaced; messages it had made durable but not yet announced are
found in the spool by their queue IDs, which carry the worker's slot
(backupmx/queue/ids.py).
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from backupmx.ipc import Channel, Message
from backupmx.log import log
from backupmx.metrics.merge import Sum
from backupmx.queue import ids
from backupmx.queue.store import envelope_of
from backupmx.smtpd.host import BACKLOG

if TYPE_CHECKING:
    from backupmx.server import Server

WORKER_MODULE = "backupmx.smtpd.worker"
RESPAWN_DELAY = 1.0  # first wait before replacing a worker; doubles while they keep dying
RESPAWN_DELAY_MAX = 30.0
STABLE_AFTER = 10.0  # a worker that lived this long resets the delay


class BindError(Exception):
    """A listen address cannot be bound; the text names it."""


def bind(listen: list[tuple[str, int]]) -> list[socket.socket]:
    """One listening socket per address of ``smtpd_listen``, to be shared by the workers."""
    socks: list[socket.socket] = []
    try:
        for host, port in listen:
            try:
                infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                           flags=socket.AI_PASSIVE)
            except OSError as e:
                raise BindError(f"cannot listen on {host}:{port}: {e}") from e
            seen: set[tuple[Any, ...]] = set()
            for family, kind, proto, _name, addr in infos:
                if (family, addr) in seen:
                    continue
                seen.add((family, addr))
                s = socket.socket(family, kind, proto)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s.bind(addr)
                except OSError as e:
                    raise BindError(f"cannot listen on {host}:{port}: {e.strerror}") from e
                s.listen(BACKLOG)
                s.setblocking(False)
                s.set_inheritable(True)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _ignore_reload_signals() -> None:
    """In the new worker, before exec: a reload or log reopen that comes while it starts up
    must not kill it (the default action); it reads the file and opens the log as they are
    then anyway, and sets its own handlers once its event loop runs."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


@dataclass
class Worker:
    index: int  # also its queue-ID slot; the master is slot 0
    proc: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    peers: dict[int, SimpleNamespace] = field(default_factory=dict)  # counted clients
    born: float = 0.0
    metrics: str = ""  # its registry as it last answered a scrape (backupmx/metrics/)


class Supervisor:
    def __init__(self, server: Server, count: int, sockets: list[socket.socket]) -> None:
        self.server = server
        self.sockets = sockets
        self.workers = [Worker(i + 1) for i in range(count)]
        self.slots = count + 1
        self.ready = False  # the spool is open: workers may attach to it
        self.stopping = False
        self._delay = RESPAWN_DELAY
        self._tasks: set[asyncio.Task[None]] = set()
        #: the last counts of workers that have ended, so that the sums never go back
        self.retired = Sum()
        ids.configure(0, self.slots)

    # --- spawning -----------------------------------------------------------------
    async def spawn_all(self) -> None:
        for w in self.workers:
            await self._spawn(w)

    async def _spawn(self, w: Worker) -> None:
        mine, theirs = socket.socketpair()
        theirs.set_inheritable(True)
        listen = ",".join(str(s.fileno()) for s in self.sockets)
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WORKER_MODULE,
                "--config", self.server.cfg_path, "--index", str(w.index),
                "--slots", str(self.slots), "--channel", str(theirs.fileno()),
                "--listen", listen,
                pass_fds=[theirs.fileno(), *(s.fileno() for s in self.sockets)],
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=_ignore_reload_signals,
            )
        finally:
            theirs.close()
        w.born = time.monotonic()

        w.channel = await Channel.open(mine, functools.partial(self._handle, w))
        w.channel.notify(self.server.watch.message())  # the standby table as it is now
        task = asyncio.create_task(self._supervise(w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.ready:
            w.channel.notify({"t": "start"})

    def start_all(self) -> None:
        """The spool is open and checked: let the workers attach and serve."""
        self.ready = True
        for w in self.workers:
            if w.channel is not None:
                w.channel.notify({"t": "start"})

    # --- what workers ask and announce ------------------------------------------------
    def _handle(self, w: Worker, msg: Message) -> Message | None | Awaitable[Message]:
        kind = msg.get("t")
        server = self.server
        if kind == "queued":
            server.qmgr.submit(envelope_of(msg["env"]))
        elif kind == "flush":
            server.qmgr.flush(msg.get("domain"))
        elif kind == "admit":
            peer = SimpleNamespace(ctx=SimpleNamespace(client_ip=msg["ip"],
                                                       client_name=msg["name"]))
            answer = server.admit_peer(peer)
            if "refusal" in answer:
                w.peers[int(msg["key"])] = peer
            return answer
        elif kind == "reject":
            server.rejects.add(str(msg["stage"]), str(msg["by"]), int(msg["code"]),
                               str(msg["dsn"]))
        elif kind == "release":
            gone = w.peers.pop(int(msg["key"]), None)
            if gone is not None:
                server.anvil.release(gone)
        elif kind == "rate":
            unit = server.svc.cfg.time("anvil_rate_time_unit")
            return {"rate": server.anvil.request(str(msg["kind"]), str(msg["ip"]), unit)}
        elif kind == "verify":
            return self._verify(msg)
        else:
            log.warning("master", f"worker {w.index}: unknown request {kind!r}")
        return None

    async def _verify(self, msg: Message) -> Message:
        svc = self.server.svc
        verdict = await svc.verifier.query(msg["address"], msg["target"], svc,
                                           float(msg["wait"]), bool(msg.get("recipient")))
        return {"status": verdict.status, "text": verdict.text}

    # --- supervision ----------------------------------------------------------------------
    async def _supervise(self, w: Worker) -> None:
        assert w.channel is not None and w.proc is not None
        await w.channel.serve()  # until the worker closes its end: it is exiting
        status = await w.proc.wait()
        for peer in w.peers.values():
            self.server.anvil.release(peer)
        w.peers.clear()
        w.channel = None
        if w.metrics:
            self.retired.add_text(w.metrics)
            w.metrics = ""
        if self.ready:
            await self._adopt(w)
        if self.stopping:
            return
        log.warning("master", f"smtpd worker {w.index} (pid {w.proc.pid}) exited with "
                    f"status {status}; starting a new one")
        self._delay = RESPAWN_DELAY if time.monotonic() - w.born > STABLE_AFTER \
            else min(RESPAWN_DELAY_MAX, self._delay * 2)
        await asyncio.sleep(self._delay)
        if not self.stopping:
            try:
                await self._spawn(w)
            except OSError as e:
                log.error("master", f"cannot start smtpd worker {w.index}: {e}")

    async def _adopt(self, w: Worker) -> None:
        """Queue what the worker made durable but could not announce before it ended."""
        spool = self.server.spool
        try:
            queued = await spool.queued_ids()  # ordered after every write handed in
            mine = [i for i in queued if ids.slot_of(i, self.slots) == w.index]
            envs = [env for i in mine
                    if not self.server.qmgr.knows(i) and (env := spool.envelope(i))]
        except Exception as e:
            log.error("master", f"cannot read the queue after worker {w.index} ended: {e}")
            return
        if envs:
            log.info("qmgr", f"{len(envs)} messages of smtpd worker {w.index} taken over")
            self.server.qmgr.load(envs)

    async def reload_all(self, wait: float) -> None:
        """Have every running worker re-read the configuration; wait for their word.

        Over the channel rather than by signal, so the master's ``reload`` line is true
        of all of them when it is logged.  A worker that is being replaced reads the file
        as it is when it starts.
        """
        await self._ask_all({"t": "reload"}, wait, "the reload")

    async def reopen_log_all(self, wait: float) -> None:
        """Have every running worker reopen ``maillog_file``; wait for their word."""
        await self._ask_all({"t": "reopen"}, wait, "the log reopen")

    async def _ask_all(self, msg: Message, wait: float, what: str) -> None:
        asks = {asyncio.create_task(w.channel.request(msg)): w.index
                for w in self.workers if w.channel is not None and not w.channel.closed}
        if not asks:
            return
        done, pending = await asyncio.wait(asks, timeout=wait)
        for task in pending:
            task.cancel()
        late = sorted(asks[t] for t in pending) + sorted(
            asks[t] for t in done if t.exception() is not None)
        for index in late:
            log.warning("master", f"smtpd worker {index} did not confirm {what} "
                        f"within {wait:g} s")

    async def metrics(self, wait: float) -> list[str]:
        """Every running worker's registry in the text format (the ended ones' are in
        :attr:`retired`).

        Asked now; a worker that does not answer within ``wait`` is counted by its
        previous answer.
        """
        asks = {asyncio.create_task(w.channel.request({"t": "metrics"})): w
                for w in self.workers if w.channel is not None and not w.channel.closed}
        if asks:
            done, pending = await asyncio.wait(asks, timeout=wait)
            for task in pending:
                task.cancel()
            for task in done:
                if task.exception() is None:
                    asks[task].metrics = str(task.result().get("text", ""))
        return [w.metrics for w in self.workers if w.metrics]

    def tell_all(self, msg: Message) -> None:
        """A notice to every running worker."""
        for w in self.workers:
            if w.channel is not None:
                w.channel.notify(msg)

    def signal_all(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                try:
                    w.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    async def stop(self, deadline: float) -> None:
        """SIGTERM to every worker; those still running at the deadline are killed."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        procs = [w.proc for w in self.workers if w.proc is not None]
        waits = [asyncio.create_task(p.wait()) for p in procs]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=max(0.5, deadline
                                                                   - time.monotonic() + 1))
            if pending:
                self.signal_all(signal.SIGKILL)
                await asyncio.wait(pending, timeout=5)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for s in self.sockets:
            s.close()
