"""Per-client limits: simultaneous connections and request rates (Postfix's anvil).

``smtpd_client_connection_count_limit`` bounds open sessions per client IP,
``smtpd_client_connection_rate_limit`` new sessions per client IP within
``anvil_rate_time_unit``, and ``smtpd_client_message_rate_limit`` and
``smtpd_client_recipient_rate_limit`` its MAIL and RCPT (and VRFY) requests within that
unit.  Every attempt counts towards a rate, also a refused one, as in Postfix: a
client hammering the port stays refused.  The counts live in the master, so that
they hold for all smtpd workers together; with ``cluster_store`` set they are also
counted in Redis (backupmx/cluster/counts.py), so that they hold for all nodes
together, and this node's own counts answer while that Redis does not.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from backupmx.log import log
from backupmx.redisstore import StoreUnavailable

if TYPE_CHECKING:
    from backupmx.cluster.counts import SharedCounts
    from backupmx.services import Services


class _Ctx(Protocol):
    client_ip: str
    client_name: str


class Session(Protocol):
    """Whatever stands for a client: a session here, or a worker's client in the master."""

    @property
    def ctx(self) -> _Ctx: ...

#: rate windows are pruned of idle clients once this many IPs are tracked
_PRUNE_AT = 10000


#: the request kinds counted by :meth:`Anvil.request`: MAIL, and RCPT or VRFY
REQUESTS = ("mail", "rcpt")

#: seconds between two warnings that the shared counts cannot be reached
WARN_EVERY = 60.0


class Anvil:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.rate: dict[str, deque[float]] = {}
        self.requests: dict[str, dict[str, deque[float]]] = {k: {} for k in REQUESTS}
        #: sessions counted here, and whether the shared counts hold them too
        self._counted: dict[int, bool] = {}
        self.shared: SharedCounts | None = None
        self._warned = 0.0

    @property
    def sessions(self) -> int:
        """Sessions counted and not yet released."""
        return len(self._counted)

    def admit(self, session: Session, svc: Services, now: float | None = None) -> str | None:
        """Count a new session; the refusal text when over a limit."""
        ip = session.ctx.client_ip
        n = self.count.get(ip, 0) + 1
        self.count[ip] = n
        cfg = svc.cfg
        count_limit = cfg.int("smtpd_client_connection_count_limit")
        rate_limit = cfg.int("smtpd_client_connection_rate_limit")
        unit = cfg.time("anvil_rate_time_unit")
        rate = _rate(self.rate, ip, unit, now) if rate_limit else 0
        shared = False
        if self.shared is not None and (count_limit or rate_limit):
            try:
                n, cluster_rate = self.shared.admit(ip, unit if rate_limit else None)
                rate = cluster_rate if rate_limit else 0
                shared = True
            except StoreUnavailable as e:
                self._unshared(e)
        self._counted[id(session)] = shared
        over = (count_limit and n > count_limit) or (rate_limit and rate > rate_limit)
        if over and not self._exempt(ip, session, svc):
            return f"too many connections from {ip}"
        return None

    def request(self, kind: str, ip: str, unit: float, now: float | None = None) -> int:
        """Count a request of ``kind`` (REQUESTS) from ``ip``; how many within ``unit``."""
        rate = _rate(self.requests[kind], ip, unit, now)
        if self.shared is not None:
            try:
                return self.shared.request(kind, ip, unit)
            except StoreUnavailable as e:
                self._unshared(e)
        return rate

    def _unshared(self, e: StoreUnavailable) -> None:
        """The cluster's counts do not answer: this node's decide, and the log says so."""
        t = time.monotonic()
        if t - self._warned >= WARN_EVERY:
            self._warned = t
            log.warning("anvil", f"cluster_store: {e}: counting this node's clients only")

    def _exempt(self, ip: str, session: Session, svc: Services) -> bool:
        return svc.event_limit_exceptions.match(ip, session.ctx.client_name)

    def release(self, session: Session) -> None:
        shared = self._counted.pop(id(session), None)
        if shared is None:
            return
        ip = session.ctx.client_ip
        n = self.count.get(ip, 1) - 1
        if n <= 0:
            self.count.pop(ip, None)
        else:
            self.count[ip] = n
        if shared and self.shared is not None:
            try:
                self.shared.release(ip)
            except StoreUnavailable as e:
                self._unshared(e)


def _rate(table: dict[str, deque[float]], ip: str, unit: float, now: float | None) -> int:
    """Record an event from ``ip`` in ``table``; how many it had within the last ``unit``."""
    t = time.monotonic() if now is None else now
    if len(table) >= _PRUNE_AT:
        for key in [k for k, q in table.items() if not q or q[-1] <= t - unit]:
            del table[key]
    q = table.setdefault(ip, deque())
    while q and q[0] <= t - unit:
        q.popleft()
    q.append(t)
    return len(q)
