"""Scheduling: next attempt, backoff, per-destination concurrency, flush, expiry.

The queue manager keeps every open envelope in memory (content stays on disk)
and a timer heap of next attempts, so it wakes exactly when a message is due
rather than scanning the queue.  An attempt groups a message's open recipients
by destination domain; each group goes through one next-hop decision and one
SMTP transaction.  Results are persisted before the next attempt is planned.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backupmx import bounce
from backupmx.concurrency import DestinationSlots
from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, Envelope, Recipient
from backupmx.log import log
from backupmx.queue.ids import new_id
from backupmx.smtp.client import ClientSettings, ConnectionPool, RcptResult, deliver
from backupmx.smtp.nexthop import (
    NextHop,
    RouteError,
    route,
    servers_for,
)
from backupmx.smtp.nexthop import Server as Hop

if TYPE_CHECKING:
    from backupmx.server import Server
    from backupmx.services import Services

# Failures that mean "nobody there" (Postfix's dead destination).  A session that
# broke after the greeting (a stall after the final dot, a dropped connection) is
# not one: the health probe would find that server "alive" and flush it into the
# same failure again, sending one more copy each time.
_UNREACHABLE = ("connect to ",)
WATCH_INTERVAL = 1.0
SUSPENDED = "delivery temporarily suspended: "
_GONE_KEPT = 10_000  # finished IDs remembered (about 1 MB)
#: attempts started per destination, as a multiple of its concurrency limit; the rest of
#: its due mail waits parked, without a task (see Qmgr._park)
STARTED_PER_SLOT = 2
#: due messages handled in one go before the scheduler lets the sessions run
SCHEDULE_BATCH = 500


async def _greets(ip: str, port: int, timeout: float) -> bool:
    """Does an SMTP server answer with 220 there?  (A cheap health probe.)"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.write(b"QUIT\r\n")
        return line.startswith(b"220")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def backoff(now: float, arrival: float, minimal: float, maximal: float) -> float:
    """Postfix's delay: time in queue, clamped (roughly doubling intervals)."""
    return min(max(now - arrival, minimal), maximal)


def _dsn_status(reply: str, default: str) -> str:
    for word in reply.split():
        parts = word.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in "245":
            return word
    return default


@dataclass
class Dead:
    until: float
    reason: str


class Qmgr:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.msgs: dict[str, Envelope] = {}
        #: IDs recently delivered or deleted, oldest first: a late announcement of one of
        #: them from a worker (backupmx/master.py) must not queue it again
        self._gone: dict[str, None] = {}
        self.active: set[str] = set()
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self.slots = DestinationSlots(
            lambda: self.svc.cfg.int("default_destination_concurrency_limit")
        )
        self._dead: dict[str, Dead] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._settings: tuple[Services, ClientSettings] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: per destination: attempts started and not finished, and the due mail parked
        self._started: dict[str, int] = defaultdict(int)
        self._parked: dict[str, dict[str, None]] = {}
        self._flush_waiters: list[tuple[set[str], asyncio.Future[None]]] = []
        self.pool = ConnectionPool()
        self.stats: dict[str, int] = defaultdict(int)
        self._stopping = False

    @property
    def svc(self) -> Services:
        return self.server.svc

    # --- entry points --------------------------------------------------------
    def load(self, envs: list[Envelope]) -> None:
        now = time.time()
        for env in envs:
            self.msgs[env.id] = env
            if not env.hold:
                self._schedule(env, self._due(env, now))

    def submit(self, env: Envelope, stored: str = "") -> None:
        """A message just became durable: try it at once (once, however often announced).

        ``stored`` (its JSON, for a queue elsewhere) is not needed: this is the queue.
        """
        if self.knows(env.id):
            return
        self.msgs[env.id] = env
        self._schedule(env, 0.0)

    def knows(self, qid: str) -> bool:
        """Queued here, or finished here lately: an ID the queue must not take on again."""
        return qid in self.msgs or qid in self._gone

    def _forget(self, qid: str) -> None:
        self.msgs.pop(qid, None)
        self._gone[qid] = None
        if len(self._gone) > _GONE_KEPT:
            del self._gone[next(iter(self._gone))]

    def flush(self, domain: str | None = None) -> asyncio.Future[None]:
        """Attempt delivery now of everything, or of one domain's mail.

        Returns a future that is done when that round of attempts has ended.
        """
        d = domain.lower() if domain else None
        if d:
            self._dead.pop(d, None)
        else:
            self._dead.clear()
        ids: set[str] = set()
        for env in self.msgs.values():
            if env.hold:
                continue
            if d is None or any(r.domain == d for r in env.open_recipients):
                ids.add(env.id)
                for r in env.open_recipients:
                    r.next_attempt = None
                if env.id not in self.active:
                    self._schedule(env, 0.0)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = ids & (set(self.msgs) | self.active)
        if not pending:
            fut.set_result(None)
        else:
            self._flush_waiters.append((pending, fut))
        what = f"of {d}" if d else "of all mail"
        log.info("qmgr", f"flush {what} requested: {len(ids)} messages")
        return fut

    async def hold(self, qid: str) -> bool:
        env = self.msgs.get(qid)
        if env is None:
            return False
        env.hold = True  # in force at once; the spool's writer records it meanwhile
        await self.server.spool.set_hold(qid, True)
        log.info("qmgr", f"{qid}: placed on hold")
        return True

    async def release(self, qid: str) -> bool:
        env = self.msgs.get(qid)
        if env is None or not env.hold:
            return False
        env.hold = False
        self._schedule(env, 0.0)
        await self.server.spool.set_hold(qid, False)
        log.info("qmgr", f"{qid}: released from hold")
        return True

    async def delete(self, qid: str) -> bool:
        if qid not in self.msgs:
            return False
        self._drop(qid)
        await self.server.spool.delete(qid)
        log.info("qmgr", f"{qid}: removed (deleted by the administrator)")
        return True

    async def delete_all(self) -> int:
        """Delete every message in one spool transaction (``postsuper -d ALL``).

        Memory first, so that no attempt starts on what is going; then the IDs the
        spool deleted, so that those a worker stored but has not announced yet are
        not queued again when it does.
        """
        for qid in list(self.msgs):
            self._drop(qid)
        ids = await self.server.spool.delete_all()
        for qid in ids:
            self._drop(qid)
            log.info("qmgr", f"{qid}: removed (deleted by the administrator)")
        return len(ids)

    def _drop(self, qid: str) -> None:
        """Forget a deleted message; an attempt in flight finds it gone and ends."""
        self._forget(qid)
        self._done_waiting(qid)

    # --- the loop ----------------------------------------------------------------
    def _due(self, env: Envelope, now: float) -> float:
        times = [r.next_attempt for r in env.open_recipients if r.next_attempt is not None]
        return min(times) if times else now

    def _schedule(self, env: Envelope, when: float) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), env.id))
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            now = time.time()
            limit = self.svc.cfg.int("qmgr_message_active_limit")
            handled = 0
            while self._heap and self._heap[0][0] <= now and len(self.active) < limit:
                if handled >= SCHEDULE_BATCH:  # a large backlog: let the sessions in between
                    handled = 0
                    await asyncio.sleep(0)
                    now = time.time()
                    continue
                handled += 1
                _, _, qid = heapq.heappop(self._heap)
                env = self.msgs.get(qid)
                if env is None or env.hold or qid in self.active:
                    continue
                if self._due(env, now) > now + 0.001:
                    continue  # a stale timer; the real one is still in the heap
                if self._defer_suspended(env, now):
                    continue
                domains = {r.domain for r in env.open_recipients}
                if self._park(qid, domains):
                    continue
                for d in domains:
                    self._started[d] += 1
                self.active.add(qid)
                task = asyncio.create_task(self._attempt(env, domains))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = self._heap[0][0] - now if self._heap else self.svc.cfg.time("queue_run_delay")
            if len(self.active) >= limit:
                timeout = self.svc.cfg.time("queue_run_delay")  # a finishing attempt wakes us
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, timeout))
            except TimeoutError:
                pass

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._wake.set()
        for w in list(self._watchers.values()):
            w.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        await self.pool.close_all()

    async def reload(self) -> None:
        """The configuration changed: its concurrency limit and delivery settings apply
        from the next delivery on (attempts in flight finish as they began)."""
        self.slots.refresh()
        await self.pool.close_all()
        self._wake.set()

    def _park(self, qid: str, domains: set[str]) -> bool:
        """Hold back a due message whose destination already has its fill of attempts.

        A task per due message would hold every message of a large backlog in memory at
        once while all but a few wait for a delivery slot (20,000 of them cost the master
        about 150 MB that it kept).  Parked, a message costs a dict entry; it is started
        as that destination's attempts finish.
        """
        bound = self._start_bound()
        for d in domains:
            if self._started.get(d, 0) >= bound:
                self._parked.setdefault(d, {})[qid] = None
                return True
        return False

    def _start_bound(self) -> int:
        """How many attempts one destination may have started at once."""
        return STARTED_PER_SLOT * max(1, self.svc.cfg.int("default_destination_concurrency_limit"))

    def _dead_now(self, domain: str, now: float) -> Dead | None:
        """The destination's dead-cache entry while it is in force."""
        dead = self._dead.get(domain)
        return dead if dead and dead.until > now else None

    def _unpark(self, domain: str) -> None:
        """Due mail parked for ``domain`` goes back to the scheduler as attempts end: as
        much as there is room for, or all of it once the destination is known dead (then
        it is deferred without an attempt)."""
        parked = self._parked.get(domain)
        if not parked:
            return
        if self._dead_now(domain, time.time()):
            room = len(parked)
        else:
            room = self._start_bound() - self._started.get(domain, 0)
        for _ in range(min(room, len(parked))):
            qid = next(iter(parked))
            del parked[qid]
            heapq.heappush(self._heap, (0.0, next(self._seq), qid))
        if not parked:
            del self._parked[domain]
        self._wake.set()

    # --- one attempt ------------------------------------------------------------------
    async def _attempt(self, env: Envelope, domains: set[str]) -> None:
        try:
            await self._attempt_inner(env)
        except Exception as e:
            log.error("qmgr", f"{env.id}: delivery attempt failed: {type(e).__name__}: {e}")
            now = time.time()
            for r in env.open_recipients:
                r.next_attempt = now + self.svc.cfg.time("minimal_backoff_time")
            if env.id in self.msgs:
                self._schedule(env, self._due(env, now))
        finally:
            self.active.discard(env.id)
            for d in domains:
                self._started[d] -= 1
                if self._started[d] <= 0:
                    del self._started[d]
                self._unpark(d)
            self._done_waiting(env.id)
            self._wake.set()

    def _done_waiting(self, qid: str) -> None:
        keep = []
        for ids, fut in self._flush_waiters:
            ids.discard(qid)
            if ids:
                keep.append((ids, fut))
            elif not fut.done():
                fut.set_result(None)
        self._flush_waiters = keep

    async def _attempt_inner(self, env: Envelope) -> None:
        cache: list[bytes] = []

        def content() -> bytes:
            # Read only when a connection is ready: attempts waiting for their
            # destination's concurrency slot hold no message content in memory.
            if not cache:
                cache.append(self.server.spool.content(env.id))
            return cache[0]

        groups: dict[str, list[Recipient]] = defaultdict(list)
        for r in env.open_recipients:
            groups[r.domain].append(r)
        results: list[tuple[Recipient, RcptResult]] = []

        async def one(domain: str, rcpts: list[Recipient]) -> None:
            async with self.slots.slot(domain):
                res = await self._deliver_group(env, domain, rcpts, content)
            by_addr = {x.address: x for x in res}
            for r in rcpts:
                results.append((r, by_addr[r.address]))

        try:
            await asyncio.gather(*(one(d, rs) for d, rs in groups.items()))
            await self._apply(env, results, content)
        except KeyError:  # the content is gone (deleted, or moved aside as damaged)
            self._forget(env.id)

    def _nexthop_for(self, svc: Services, rcpt: Recipient) -> tuple[str, NextHop | str | None]:
        cfg = svc.cfg
        tables = [svc.maps.get(spec) for spec in cfg.list("transport_maps")]
        return route(rcpt.address, tables, cfg.list("relayhost"))

    async def _deliver_group(
        self, env: Envelope, domain: str, rcpts: list[Recipient], content: Callable[[], bytes]
    ) -> list[RcptResult]:
        svc = self.svc
        cfg = svc.cfg
        now = time.time()

        def all_(kind: str, status: str, text: str) -> list[RcptResult]:
            return [RcptResult(r.address, kind, text, status, "none", None) for r in rcpts]

        dead = self._dead_now(domain, now)
        if dead:
            return all_(DEFERRED, "4.4.1", f"{SUSPENDED}{dead.reason}")
        try:
            transport, hop = self._nexthop_for(svc, rcpts[0])
        except Exception as e:
            return all_(DEFERRED, "4.3.0", f"transport_maps lookup failure: {e}")
        if transport == "error":
            return all_(BOUNCED, "5.0.0", str(hop or "mail for this destination is refused"))
        if transport == "retry":
            return all_(DEFERRED, "4.0.0", str(hop or "delivery deferred by transport_maps"))
        if transport == "discard":
            return all_(DELIVERED, "2.0.0", "discarded by transport_maps")
        assert not isinstance(hop, str)
        try:
            servers = await servers_for(
                domain,
                hop,
                resolver=svc.resolver,
                port=self.server.smtp_port(),
                is_myself=lambda ip, port: svc.is_own_ip(ip),
                mx_address_limit=cfg.int("smtp_mx_address_limit"),
            )
        except RouteError as e:
            return all_(BOUNCED if e.permanent else DEFERRED, e.status, e.text)
        res = await deliver(
            servers, env.sender, rcpts, content(), env=env, settings=self.client_settings(),
            pool=self.pool,
        )
        if res and all(x.kind == DEFERRED and x.reply.startswith(_UNREACHABLE) for x in res):
            self._dead[domain] = Dead(now + cfg.time("minimal_backoff_time"), res[0].reply)
            self._watch(domain, servers)
        else:
            self._dead.pop(domain, None)
        return res

    def _watch(self, domain: str, servers: list[Hop]) -> None:
        """While a destination is dead, knock every second; flush it the moment it answers.

        This is what makes recovery fast: the backlog moves as soon as the primary
        greets again instead of when each message's backoff timer runs out.
        """
        if domain in self._watchers or not servers:
            return

        async def knock() -> None:
            try:
                while domain in self._dead and not self._stopping:
                    timeout = self.svc.cfg.time("smtp_connect_timeout")
                    for srv in servers[:2]:
                        if await _greets(srv.ip, srv.port, timeout):
                            log.info("qmgr", f"{domain}: {srv.name} answers again; flushing")
                            self.flush(domain)
                            return
                    await asyncio.sleep(WATCH_INTERVAL)
            finally:
                self._watchers.pop(domain, None)

        self._watchers[domain] = asyncio.create_task(knock())

    def client_settings(self) -> ClientSettings:
        """The delivery settings of the running configuration (built once per reload)."""
        if self._settings is not None and self._settings[0] is self.svc:
            return self._settings[1]
        settings = ClientSettings.from_config(self.svc.cfg)
        self._settings = (self.svc, settings)
        return settings

    def _defer_suspended(self, env: Envelope, now: float) -> bool:
        """Defer at once, without an attempt, mail whose every destination is known dead.

        While the primary is down this is the fate of each new message; doing it here
        rather than in an attempt task of its own keeps the master's cost per accepted
        message small.  False (nothing done) unless every destination is dead and the
        message is not about to expire (expiry sends a DSN: that needs the attempt).
        """
        rcpts = env.open_recipients
        reasons = []
        for r in rcpts:
            dead = self._dead_now(r.domain, now)
            if dead is None:
                return False
            reasons.append(dead.reason)
        if not rcpts or now >= env.arrival + self._lifetime(env):
            return False
        results = [(r, RcptResult(r.address, DEFERRED, f"{SUSPENDED}{why}", "4.4.1", "none",
                                  None)) for r, why in zip(rcpts, reasons, strict=True)]
        self._record(env, results, now)
        if not env.hold:
            self._schedule(env, self._due(env, now))
        self._done_waiting(env.id)
        return True

    def _lifetime(self, env: Envelope) -> float:
        cfg = self.svc.cfg
        return cfg.time("bounce_queue_lifetime" if env.sender == "" else "maximal_queue_lifetime")

    def _record(self, env: Envelope, results: list[tuple[Recipient, RcptResult]],
                now: float) -> list[bounce.Failure]:
        """Note each recipient's result and its next try; the failures to report."""
        cfg = self.svc.cfg
        failures: list[bounce.Failure] = []
        for r, res in results:
            r.attempts += 1
            r.last_reply = res.reply
            r.state = res.kind
            r.next_attempt = None
            self.stats[res.kind] += 1
            env.history.append(
                {"time": now, "recipient": r.address, "result": res.kind, "relay": res.relay,
                 "reply": res.reply}
            )
            if res.kind == BOUNCED:
                failures.append(
                    bounce.Failure(r, res.status, res.diagnostic or f"X-Backupmx; {res.reply}",
                                   _remote(res.relay), res.reply)
                )
        deferred = [r for r, res in results if r.state == DEFERRED]
        if deferred:
            if now >= env.arrival + self._lifetime(env):
                log.info(
                    "qmgr", f"{env.id}: from=<{env.sender}>, status=expired, returned to sender"
                )
                by_addr = {r.address: res for r, res in results}
                for r in deferred:
                    r.state = BOUNCED
                    res = by_addr[r.address]
                    failures.append(
                        bounce.Failure(r, _dsn_status(res.reply, "4.4.7"),
                                       res.diagnostic or f"X-Backupmx; {res.reply}",
                                       _remote(res.relay), res.reply)
                    )
            else:
                when = now + backoff(
                    now, env.arrival, cfg.time("minimal_backoff_time"),
                    cfg.time("maximal_backoff_time"),
                )
                for r in deferred:
                    r.next_attempt = when
        return failures

    async def _apply(
        self, env: Envelope, results: list[tuple[Recipient, RcptResult]],
        content: Callable[[], bytes],
    ) -> None:
        now = time.time()
        failures = self._record(env, results, now)
        if failures:
            await self._notify_sender(env, failures, content(), now)
        if env.done:
            self._forget(env.id)
            await self.server.spool.remove(env.id)
            log.info("qmgr", f"{env.id}: removed")
        else:
            if not all(res.reply.startswith(SUSPENDED) for _, res in results):
                # A deferral without any attempt (destination known dead) is kept in
                # memory only: after a crash the message is simply tried again.
                await self.server.spool.update(env)
            if env.id in self.msgs and not env.hold:
                self._schedule(env, self._due(env, now))

    async def _notify_sender(
        self, env: Envelope, failures: list[bounce.Failure], content: bytes, now: float
    ) -> None:
        """A DSN to the sender; never to the null sender (no bounce of a bounce)."""
        cfg = self.svc.cfg
        wanted = [f for f in failures if bounce.should_notify(env, f.recipient, "failed")]
        if not wanted:
            if env.sender == "":
                log.info("qmgr", f"{env.id}: undeliverable bounce discarded (null sender)")
            return
        dsn = bounce.make_dsn(
            env, wanted, content, myhostname=cfg.str("myhostname"), kind="failed", now=now,
            bounce_size_limit=cfg.int("bounce_size_limit"),
        )
        notice = Envelope(
            id=new_id(), sender="", recipients=[Recipient(env.sender)], arrival=now,
            size=len(dsn),
        )
        await self.server.spool.commit(notice, dsn)
        log.info("bounce", f"{env.id}: sender non-delivery notification: {notice.id}")
        self.submit(notice)


def _remote(relay: str) -> str | None:
    if relay in ("", "none"):
        return None
    return relay.split("[", 1)[0]
