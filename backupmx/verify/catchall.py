"""Catch-all detection: does a verified domain's primary accept any recipient at all?

A primary that says 250 to every RCPT makes recipient verification useless: every
unknown user passes.  For each domain whose recipients are verified, a probe of a
local part that surely does not exist (``backupmx-catchall-check-<random>``) asks
the primary -- when the domain is first verified, then at most once per
``address_verify_catchall_check_interval``.  The probe is an ordinary verification
probe (backupmx/verify/probe.py: it ends before DATA); its result is never stored
in the verify cache.  A 2xx means catch-all, a 5xx means not; a 4xx or no answer
leaves the state unknown (tried again after :data:`RETRY`), since a temporary
failure never makes a permanent conclusion.  The states live in the master's
memory and are reported by ``backupmx status`` and warned about by ``backupmx check``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backupmx.log import log
from backupmx.queue.listing import iso_utc
from backupmx.verify.decide import BOUNCE, DEFER, OK
from backupmx.verify.probe import ProbeResult

if TYPE_CHECKING:
    from backupmx.services import Services

PARAM = "address_verify_catchall_check_interval"
YES, NO, UNKNOWN = "yes", "no", "unknown"
PREFIX = "backupmx-catchall-check-"
#: the longest wait before an undecided check is tried again
RETRY = 1000.0


@dataclass(frozen=True)
class State:
    """One domain's finding: catch-all yes, no or unknown, when, and the primary's answer."""

    catchall: str
    checked: float
    text: str


def conclusion(result: ProbeResult) -> str:
    """Accepted: catch-all; refused for good: not; anything temporary: unknown."""
    if result.status == OK:
        return YES
    if result.status == BOUNCE:
        return NO
    return UNKNOWN


def due(state: State | None, now: float, interval: float) -> bool:
    """A check is due for a domain never checked, or whose finding is old enough."""
    if interval <= 0:
        return False
    if state is None:
        return True
    wait = interval if state.catchall != UNKNOWN else min(interval, RETRY)
    return now - state.checked >= wait


def probe_address(domain: str) -> str:
    return f"{PREFIX}{secrets.token_hex(8)}@{domain}"


def warning_text(domain: str) -> str:
    return (f"primary for {domain} accepts any recipient (catch-all): "
            "recipient verification cannot reject unknown users")


class CatchAllWatch:
    """The per-domain states and the checks running; ``probes`` counts checks sent."""

    def __init__(self, probe: Callable[[str, Services], Awaitable[ProbeResult]]) -> None:
        self.probe = probe
        self.states: dict[str, State] = {}
        self.probes = 0
        self._running: dict[str, asyncio.Task[None]] = {}

    def consider(self, domain: str, svc: Services) -> None:
        """Start a check of ``domain`` in the background when one is due."""
        if not domain or domain.startswith("[") or domain in self._running:
            return
        if not due(self.states.get(domain), time.time(), svc.cfg.time(PARAM)):
            return
        task = asyncio.create_task(self._check(domain, svc))
        self._running[domain] = task
        task.add_done_callback(lambda _t: self._running.pop(domain, None))

    async def _check(self, domain: str, svc: Services) -> None:
        self.probes += 1
        try:
            result = await self.probe(probe_address(domain), svc)
        except Exception as e:  # a check that breaks knows nothing
            result = ProbeResult(DEFER, f"catch-all check failed: {e}", "4.3.0")
        found = conclusion(result)
        before = self.states.get(domain)
        self.states[domain] = State(found, time.time(), result.text)
        if found == YES:
            log.warning("verify", warning_text(domain))
        elif found == NO and before is not None and before.catchall == YES:
            log.info("verify", f"primary for {domain} no longer accepts any recipient")

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    def report(self) -> list[dict[str, Any]]:
        """The states as ``backupmx status`` shows them, by domain."""
        return [{"domain": d, "catchall": s.catchall, "checked": iso_utc(s.checked),
                 "reason": s.text} for d, s in sorted(self.states.items())]


def check_warnings(status: dict[str, Any] | None) -> list[str]:
    """``backupmx check``: a warning per domain the running server found catch-all."""
    if not status:
        return []
    return [f"warning: {warning_text(d['domain'])}"
            for d in status.get("catchall", []) if d.get("catchall") == YES]
