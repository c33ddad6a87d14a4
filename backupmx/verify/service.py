"""The verify service: answers queries from the cache, probes when needed.

One :class:`Verifier` per ``address_verify_map`` lives for the whole process, in
:data:`REGISTRY`, because :class:`~backupmx.services.Services` is rebuilt on every
reload while the cache, the running probes and the probe sessions must survive
it.  Concurrent queries for one address share one probe (``_inflight``).

With a ``redis://`` map several nodes share the records, but each keeps its own
in-memory mirror (backupmx/verify/cache.py): a node answers from its mirrored
record, so it sees another node's newer result only once its own record is due
for a refresh probe (``address_verify_*_refresh_time``); probes in flight are not
shared between nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backupmx.log import log
from backupmx.metrics import instruments
from backupmx.verify import decide
from backupmx.verify.cache import Store, map_path
from backupmx.verify.catchall import CatchAllWatch
from backupmx.verify.decide import BOUNCE, OK, TODO, Entry, Timing
from backupmx.verify.probe import Prober, ProbeResult, elapsed

if TYPE_CHECKING:
    from backupmx.services import Services

IN_PROGRESS = "Address verification in progress"
_LOG_STATUS = {OK: "deliverable", BOUNCE: "undeliverable", decide.DEFER: "deferred"}


@dataclass(frozen=True)
class Answer:
    """The outcome of a query: OK, DEFER, BOUNCE or TODO (still in progress), and why."""

    status: int
    text: str


class Verifier:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.store = Store(map_path(spec))
        self.prober = Prober()
        self.probes = 0  # probes sent, for metrics and tests
        self.catchall = CatchAllWatch(lambda address, svc: self.prober.probe(address, svc))
        self._inflight: dict[str, asyncio.Future[ProbeResult]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cleanup: asyncio.Task[None] | None = None

    def open(self, current: Callable[[], Services] | None = None) -> None:
        """Open the cache file; with ``current`` (the services in force), start cleanups."""
        self.store.open()
        if current is not None and self._cleanup is None:
            self._cleanup = asyncio.create_task(self._cleanup_loop(current))

    async def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.catchall.close()
        await self.prober.close()
        self.store.close()

    def entry(self, address: str) -> Entry | None:
        return self.store.get(address)

    def known_ok(self, address: str, svc: Services) -> bool:
        """A cached OK that needs no probe: the cheapest possible answer at RCPT time.

        A store that cannot be read knows nothing: the query then gives its 450.
        """
        try:
            entry = self.store.get(address)
        except Exception:
            return False
        d = decide.query(entry, time.time(), Timing.from_cfg(svc.cfg))
        known = d.answer is not None and d.answer.status == OK and not d.probe
        if known:
            instruments.VERIFY_LOOKUPS.labels("hit").inc()
        return known

    async def query(self, address: str, target: str, svc: Services, wait: float,
                    recipient: bool = False) -> Answer:
        """The verification status of ``address``, probing ``target`` when needed.

        Waits up to ``wait`` seconds for a probe that this query needs; after that
        the answer is TODO ("in progress") and the probe goes on in the background.
        A ``recipient`` query also has its domain checked for a catch-all primary.
        """
        if recipient:
            self.catchall.consider(target.rpartition("@")[2].lower(), svc)
        t = Timing.from_cfg(svc.cfg)
        now = time.time()
        entry = self.store.get(address)
        d = decide.query(entry, now, t)
        if d.drop:
            self.store.delete(address)
        fut = self._inflight.get(address)
        if d.probe and fut is None:
            fut = self._start(address, target, svc, None if d.drop else entry)
        if d.answer is not None:
            instruments.VERIFY_LOOKUPS.labels("hit").inc()
            return Answer(d.answer.status, d.answer.text)
        instruments.VERIFY_LOOKUPS.labels("miss").inc()
        result: ProbeResult | None = None
        if fut is not None:
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), max(0.0, wait))
            except TimeoutError:
                result = None
        if d.stale is not None and (result is None or result.status == decide.DEFER):
            if result is not None:
                why = result.text
            else:
                why = "the probe is still running" if fut else "its last probe got no answer"
            log.info("verify", f"<{address}>: using the expired deliverable result of "
                     f"{_age(now - d.stale.updated)} ago: the primary gave no answer ({why})")
            return Answer(OK, d.stale.text)
        if result is None:
            return Answer(TODO, IN_PROGRESS)
        return Answer(result.status, result.text)

    async def probe_now(self, address: str, target: str, svc: Services) -> Entry | None:
        """Probe at once (``backupmx verify --probe``) and return the stored record."""
        fut = self._inflight.get(address) or self._start(
            address, target, svc, self.store.get(address)
        )
        result = await asyncio.shield(fut)
        return self.store.get(address) or Entry(result.status, 0.0, time.time(), result.text)

    def learn(self, address: str, status: int, text: str, t: Timing) -> None:
        """Store what a delivery's RCPT reply said, as a probe's answer would be stored.

        A deliverable record answered within the last probe interval is left as it
        is (no write per delivered message); a store that fails is counted, not
        logged, so that an outage of a shared store does not log every recipient.
        """
        now = time.time()
        try:
            old = self.store.get(address)
            if not decide.worth_learning(old, status, now):
                return
            new = decide.update(old, status, text, now, t)
            if new is None:
                self.store.delete(address)
            else:
                self.store.put(address, new)
        except Exception:
            instruments.VERIFY_LEARNED.labels("failed").inc()
            return
        instruments.VERIFY_LEARNED.labels(_LOG_STATUS[status]).inc()

    def _start(
        self, address: str, target: str, svc: Services, entry: Entry | None
    ) -> asyncio.Future[ProbeResult]:
        marked = decide.probing(entry, time.time())
        if marked is not None:
            self.store.put(address, marked)
        fut: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
        self._inflight[address] = fut
        task = asyncio.create_task(self._run(address, target, svc, fut))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fut

    async def _run(
        self, address: str, target: str, svc: Services, fut: asyncio.Future[ProbeResult]
    ) -> None:
        start = time.monotonic()
        self.probes += 1
        try:
            result = await self.prober.probe(target, svc)
        except Exception as e:  # never leave a waiting RCPT without an answer
            result = ProbeResult(decide.DEFER, f"address verification failed: {e}", "4.3.0")
        instruments.VERIFY_PROBES.labels(_LOG_STATUS[result.status]).inc()
        try:
            t = Timing.from_cfg(svc.cfg)
            new = decide.update(self.store.get(address), result.status, result.text,
                                time.time(), t)
            if new is None:
                self.store.delete(address)
            else:
                self.store.put(address, new)
            status = _LOG_STATUS[result.status]
            if new is None and result.status != OK:
                status += "-but-not-cached"
            log.info("verify", f"to=<{address}>, relay={result.relay}, delay={elapsed(start)}, "
                     f"dsn={result.dsn}, status={status} ({result.text})")
        except Exception as e:
            log.warning("verify", f"<{address}>: cannot store the verification result: {e}")
        finally:
            self._inflight.pop(address, None)
            if not fut.done():
                fut.set_result(result)

    async def _cleanup_loop(self, current: Callable[[], Services]) -> None:
        while True:
            interval = current().cfg.time("address_verify_cache_cleanup_interval")
            if interval <= 0:
                return
            await asyncio.sleep(interval)
            t, now = Timing.from_cfg(current().cfg), time.time()
            try:
                gone = [a for a, e in self.store.items() if decide.purgeable(e, now, t)]
                for a in gone:
                    self.store.delete(a)
            except OSError as e:  # a shared store that is down now: next time
                log.warning("verify", f"cache {self.spec}: cleanup failed: {e}")
                continue
            log.info("verify", f"cache {self.spec}: cleanup removed {len(gone)} expired entries")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


REGISTRY: dict[str, Verifier] = {}


def verifier_for(spec: str) -> Verifier:
    """The process's verifier for this map (created on first use; ValueError if bad)."""
    key = spec.strip()
    v = REGISTRY.get(key)
    if v is None:
        v = REGISTRY[key] = Verifier(key)
    return v


async def close_all() -> None:
    for v in list(REGISTRY.values()):
        await v.close()
    REGISTRY.clear()
