"""The queue manager's shell: the timer heap, attempts as tasks, admin actions.

It keeps every open envelope in memory (content stays on disk) and a timer heap of
next attempts, so it wakes exactly when a message is due rather than scanning the
queue.  An attempt groups a message's open recipients by destination domain; each
group goes to the deliverer, and the outcomes go through ``core.settle``: logged
once each here, the DSN made durable, then the envelope persisted or removed.
Every decision is in ``core.py``; every I/O goes through a port (``ports.py``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from backupmx.concurrency import DestinationSlots
from backupmx.envelope import DELIVERED, Envelope, Recipient
from backupmx.health import Health
from backupmx.log import log
from backupmx.metrics import instruments
from backupmx.outcome import Outcome, Stage, log_text
from backupmx.qmgr import core, quarantine
from backupmx.qmgr.ports import (
    Bouncer,
    Clock,
    Deliverer,
    HealthProbe,
    Learner,
    QuarantineAlert,
    Spool,
)
from backupmx.smtp.client import ClientSettings, ConnectionPool
from backupmx.smtp.nexthop import Server as Hop

WATCH_INTERVAL = 1.0
_GONE_KEPT = 10_000  # finished IDs remembered (about 1 MB)
#: due messages handled in one go before the scheduler lets the sessions run
SCHEDULE_BATCH = 500
#: the program name of a result's log line, as Postfix's daemons would log it
_AGENT = {Stage.TRANSPORT: "error", Stage.SUSPENDED: "retry"}


def _agent(o: Outcome) -> str:
    if o.stage is Stage.TRANSPORT and o.kind == DELIVERED:
        return "discard"
    return _AGENT.get(o.stage, "smtp")


@dataclass
class Unsent:
    """A non-delivery notice that could not be stored yet."""

    failures: list[tuple[Recipient, Outcome]]
    retry: float


class Qmgr:
    def __init__(
        self,
        spool: Spool,
        deliverer: Deliverer,
        bouncer: Bouncer,
        probe: HealthProbe,
        policy: Callable[[], core.Policy],
        clock: Clock = time.time,
        pool: ConnectionPool | None = None,
        alert: QuarantineAlert | None = None,
        learn: Learner | None = None,
    ) -> None:
        self.spool = spool
        self.deliverer = deliverer
        self.bouncer = bouncer
        self.probe = probe
        self.policy = policy
        self.clock = clock
        #: told of each quarantine (primary_reject_action = hold)
        self.alert = alert if alert is not None else quarantine.LogAlert()
        self.learn = learn
        self.msgs: dict[str, Envelope] = {}
        #: IDs recently delivered or deleted, oldest first: a late announcement of one of
        #: them from a worker (backupmx/master.py) must not queue it again
        self._gone: dict[str, None] = {}
        self.active: set[str] = set()
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        #: per destination: deliveries under way, at most the current concurrency limit
        self.concurrency = DestinationSlots(lambda: self.policy().concurrency)
        self.dead = core.DeadDestinations()
        #: each destination's primary: up, down or recovering (backupmx/health.py)
        self.health = Health()
        #: hear every verdict once it is recorded (the alerts, backupmx/alerts/)
        self.listeners: list[Callable[[Envelope, core.Verdict], None]] = []
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: per destination: attempts started and not finished, and the due mail parked
        self.slots = core.Slots()
        #: per ID: bounced recipients whose notice is not durable yet (the spool failed),
        #: and when to try storing it again
        self._unsent: dict[str, Unsent] = {}
        self._flush_waiters: list[tuple[set[str], asyncio.Future[None]]] = []
        self.pool = pool if pool is not None else ConnectionPool()
        self._stopping = False

    # --- entry points --------------------------------------------------------
    def load(self, envs: list[Envelope]) -> None:
        now = self.clock()
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
        self._unsent.pop(qid, None)
        self._gone[qid] = None
        if len(self._gone) > _GONE_KEPT:
            del self._gone[next(iter(self._gone))]

    def flush(self, domain: str | None = None) -> asyncio.Future[None]:
        """Attempt delivery now of everything, or of one domain's mail.

        Returns a future that is done when that round of attempts has ended.
        """
        d = domain.lower() if domain else None
        self.dead.revive(d)
        ids: set[str] = set()
        for env in self.msgs.values():
            if env.hold:
                continue
            unsent = self._unsent.get(env.id)
            if d is None or any(r.domain == d for r in env.open_recipients):
                ids.add(env.id)
                for r in env.open_recipients:
                    r.next_attempt = None
                if unsent is not None:
                    unsent.retry = 0.0
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
        await self.spool.set_hold(qid, True)
        log.info("qmgr", f"{qid}: placed on hold")
        return True

    async def release(self, qid: str) -> bool:
        env = self.msgs.get(qid)
        if env is None or not env.hold:
            return False
        env.hold = False
        self._schedule(env, 0.0)
        await self.spool.set_hold(qid, False)
        log.info("qmgr", f"{qid}: released from hold")
        return True

    async def delete(self, qid: str) -> bool:
        if qid not in self.msgs:
            return False
        self._drop(qid)
        await self.spool.delete(qid)
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
        ids = await self.spool.delete_all()
        for qid in ids:
            self._drop(qid)
            log.info("qmgr", f"{qid}: removed (deleted by the administrator)")
        return len(ids)

    async def bounce(self, qid: str) -> bool:
        """Return a quarantined message's held recipients to the sender now, with the
        primary's reply; the message leaves the queue unless other recipients are open
        (they are then released).  False when no such message is quarantined; raises,
        changing nothing, when the notice cannot be stored."""
        env = self.msgs.get(qid)
        if env is None or qid in self.active or not core.quarantined(env):
            return False
        notice = await quarantine.return_to_sender(env, self.spool.content(qid), self.bouncer,
                                                   self.clock())
        if notice is not None:
            self.submit(notice)
        if env.done:
            self._forget(qid)
            await self.spool.remove(qid)
            log.info("qmgr", f"{qid}: removed")
        else:
            await self.spool.update(env)
            self._schedule(env, 0.0)
            log.info("qmgr", f"{qid}: released from hold")
        return True

    async def bounce_all(self) -> int:
        """``bounce`` for every quarantined message; how many were returned."""
        ids = [qid for qid, env in self.msgs.items() if core.quarantined(env)]
        return sum([await self.bounce(qid) for qid in ids])

    def _drop(self, qid: str) -> None:
        """Forget a deleted message; an attempt in flight finds it gone and ends."""
        self._forget(qid)
        self._done_waiting(qid)

    def client_settings(self) -> ClientSettings:
        """The delivery settings of the running configuration (built once per reload)."""
        return self.deliverer.client_settings()

    # --- the loop ----------------------------------------------------------------
    def _due(self, env: Envelope, now: float) -> float:
        unsent = self._unsent.get(env.id)
        return core.due(env, now, unsent.retry if unsent else None)

    def _schedule(self, env: Envelope, when: float) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), env.id))
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            now = self.clock()
            policy = self.policy()
            limit = policy.active_limit
            handled = 0
            while self._heap and self._heap[0][0] <= now and len(self.active) < limit:
                if handled >= SCHEDULE_BATCH:  # a large backlog: let the sessions in between
                    handled = 0
                    await asyncio.sleep(0)
                    now = self.clock()
                    continue
                handled += 1
                _, _, qid = heapq.heappop(self._heap)
                env = self.msgs.get(qid)
                if env is None or env.hold or qid in self.active:
                    continue
                if self._due(env, now) > now + 0.001:
                    continue  # a stale timer; the real one is still in the heap
                if self._defer_suspended(env, now, policy):
                    continue
                domains = {r.domain for r in env.open_recipients}
                if self.slots.park(qid, domains, policy.start_bound):
                    continue
                self.slots.start(domains)
                self.active.add(qid)
                task = asyncio.create_task(self._attempt(env, domains))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = self._heap[0][0] - now if self._heap else policy.run_delay
            if len(self.active) >= limit:
                timeout = policy.run_delay  # a finishing attempt wakes us
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
        await self.deliverer.close()

    async def reload(self) -> None:
        """The configuration changed: its concurrency limit and delivery settings apply
        from the next delivery on (attempts in flight finish as they began)."""
        self.concurrency.refresh()
        await self.pool.close_all()
        self._wake.set()

    def _unpark(self, domain: str) -> None:
        """Due mail parked for ``domain`` goes back to the scheduler as attempts end."""
        dead = self.dead.reason(domain, self.clock()) is not None
        for qid in self.slots.unpark(domain, self.policy().start_bound, dead):
            heapq.heappush(self._heap, (0.0, next(self._seq), qid))
        self._wake.set()

    # --- one attempt ------------------------------------------------------------------
    async def _attempt(self, env: Envelope, domains: set[str]) -> None:
        try:
            await self._attempt_inner(env)
        except Exception as e:
            log.error("qmgr", f"{env.id}: delivery attempt failed: {type(e).__name__}: {e}")
            now = self.clock()
            for r in env.open_recipients:
                r.next_attempt = now + self.policy().minimal_backoff
            if env.id in self.msgs:
                self._schedule(env, self._due(env, now))
        finally:
            self.active.discard(env.id)
            self.slots.finish(domains)
            for d in domains:
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
                cache.append(self.spool.content(env.id))
            return cache[0]

        groups: dict[str, list[Recipient]] = defaultdict(list)
        for r in env.open_recipients:
            groups[r.domain].append(r)
        results: list[tuple[Recipient, Outcome]] = []

        async def one(domain: str, rcpts: list[Recipient]) -> None:
            async with self.concurrency.slot(domain):
                outcomes = await self._deliver_group(env, domain, rcpts, content)
            results.extend(zip(rcpts, outcomes, strict=True))

        try:
            await asyncio.gather(*(one(d, rs) for d, rs in groups.items()))
            await self._apply(env, results, content)
        except KeyError:  # the content is gone (deleted, or moved aside as damaged)
            self._forget(env.id)

    async def _deliver_group(
        self, env: Envelope, domain: str, rcpts: list[Recipient], content: Callable[[], bytes]
    ) -> list[Outcome]:
        now = self.clock()
        why = self.dead.reason(domain, now)
        if why is not None:
            return [core.suspended(why)] * len(rcpts)
        started = time.monotonic()
        delivery = await self.deliverer.deliver(env, domain, rcpts, content)
        instruments.ATTEMPTS.labels(instruments.NOTICES if env.made_here else domain).observe(
            time.monotonic() - started)
        if self.learn is not None:
            self.learn(rcpts, delivery.outcomes)
        if env.sender:  # the notices backupmx itself sends say nothing of a backed-up primary
            self.health.delivered(domain, delivery.outcomes, self.clock())
        if self.dead.judge(domain, delivery.outcomes, now, self.policy()):
            self._watch(domain, delivery.servers)
        return delivery.outcomes

    def _watch(self, domain: str, servers: list[Hop]) -> None:
        """While a destination is dead, knock every second; flush it the moment it answers.

        This is what makes recovery fast: the backlog moves as soon as the primary
        greets again instead of when each message's backoff timer runs out.
        """
        if domain in self._watchers or not servers:
            return

        async def knock() -> None:
            try:
                while self.dead.listed(domain) and not self._stopping:
                    srv = await self.probe.answering(servers, self.policy().connect_timeout)
                    if srv is not None:
                        log.info("qmgr", f"{domain}: {srv.name} answers again; flushing")
                        if self.health.get(domain) is not None:
                            self.health.observe(domain, True, f"{srv.name} answers again",
                                                self.clock())
                        self.flush(domain)
                        return
                    await asyncio.sleep(WATCH_INTERVAL)
            finally:
                self._watchers.pop(domain, None)

        self._watchers[domain] = asyncio.create_task(knock())

    def _defer_suspended(self, env: Envelope, now: float, policy: core.Policy) -> bool:
        """Defer at once, without an attempt, mail whose every destination is known dead.

        While the primary is down this is the fate of each new message; doing it here
        rather than in an attempt task of its own keeps the master's cost per accepted
        message small.
        """
        results = self.dead.suspend(env, now, policy)
        if results is None:
            return False
        verdict = core.settle(env, results, now, policy)
        self._note(env, verdict, now, policy)
        if not env.hold:
            self._schedule(env, self._due(env, now))
        self._done_waiting(env.id)
        return True

    def _note(self, env: Envelope, verdict: core.Verdict, now: float,
              policy: core.Policy) -> None:
        """Record a verdict and log each recipient's result: the one place that logs them."""
        core.record(env, verdict, now, policy)
        for listener in self.listeners:
            listener(env, verdict)
        delay = now - env.arrival
        for r, o in verdict.results:
            instruments.DELIVERIES.labels(
                o.kind, instruments.NOTICES if env.made_here else r.domain).inc()
            if o.kind == DELIVERED:
                instruments.DELAYS.observe(delay)
            log.info(_agent(o), log_text(env.id, r.address, o, delay))
        if verdict.expired:
            log.info("qmgr", f"{env.id}: from=<{env.sender}>, status=expired, returned to sender")

    async def _apply(
        self, env: Envelope, results: list[tuple[Recipient, Outcome]],
        content: Callable[[], bytes],
    ) -> None:
        """Settle an attempt; the original leaves the queue only once its DSN is durable."""
        now = self.clock()
        policy = self.policy()
        verdict = core.settle(env, results, now, policy)
        self._note(env, verdict, now, policy)
        for domain, rcpts, reply in quarantine.by_reply(verdict.held):
            self.alert.quarantined(env.id, domain, rcpts, reply)
        unsent = self._unsent.pop(env.id, None)
        failures = (unsent.failures if unsent else []) + verdict.failures
        if failures:
            try:
                notice = await self.bouncer.notify(env, failures, content(), now)
            except Exception as e:
                # Nothing is written: on disk the recipients are still open (a restart
                # tries them again); here they stay bounced until the notice is stored.
                self._unsent[env.id] = Unsent(failures, now + policy.minimal_backoff)
                log.warning("qmgr", f"{env.id}: cannot queue the non-delivery notification "
                            f"({e}); trying again later")
                if not env.hold:
                    self._schedule(env, self._due(env, now))
                return
            if notice is not None:
                self.submit(notice)
        warned = await self._warn(env, verdict, content, now, policy)
        if core.leaves_queue(env, env.id in self._unsent):
            self._forget(env.id)
            await self.spool.remove(env.id)
            log.info("qmgr", f"{env.id}: removed")
        else:
            if verdict.attempted or warned:
                # A deferral without any attempt (destination known dead) is kept in
                # memory only: after a crash the message is simply tried again.
                await self.spool.update(env)
            if env.id in self.msgs and not env.hold:
                self._schedule(env, self._due(env, now))

    async def _warn(self, env: Envelope, verdict: core.Verdict, content: Callable[[], bytes],
                    now: float, policy: core.Policy) -> bool:
        """The delay_warning_time notice, once per message; True when it was sent."""
        if not policy.warning_due(env, now):
            return False
        delayed = core.delayed(env, verdict, now, policy)
        notice = None
        if delayed:
            try:
                notice = await self.bouncer.notify(env, delayed, content(), now,
                                                   delayed_until=env.arrival + policy.lifetime(env))
            except Exception as e:  # not stored: the next attempt tries again
                log.warning("qmgr", f"{env.id}: cannot queue the delay notification ({e})")
                return False
        env.warned = True
        if notice is not None:
            self.submit(notice)
        return True
