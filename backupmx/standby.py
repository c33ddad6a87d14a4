"""Standby mode: while a domain's primary is known healthy, its recipients get 450 4.7.1.

Health lives in the master (backupmx/health.py, fed by the queue manager); recipients
are decided in the smtpd workers (backupmx/restrictions/rcpt.py).  So the master
(backupmx/healthwatch.py) keeps a small table -- per destination, until when its
primary counts as healthy: the last successful delivery or probe plus
``standby_health_expire_time`` -- and sends it whole to every worker when it changes.
Each process answers a RCPT from its own copy, :data:`VIEW`: no question to the master
per recipient, and a copy that the master stops renewing runs out by itself, so a
worker falls back to accepting mail.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backupmx.reply import Reply
from backupmx.restrictions.engine import REJECT, Context, Verdict

if TYPE_CHECKING:
    from backupmx.health import Health
    from backupmx.services import Services

PARAM = "standby_while_primary_up"


class View:
    """What one process knows when it decides a RCPT: per destination, until when (wall
    clock) its primary counts as healthy."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}
        #: False in a command that found no running server to ask
        self.known = True

    def refuses(self, domain: str, now: float) -> bool:
        until = self.until.get(domain)
        return until is not None and until > now


#: this process's view; the master fills it for its own sessions, a worker from the
#: master's notices, ``explain`` from the running server's status
VIEW = View()


def refusal(rcpt: str, domain: str) -> Verdict:
    return Verdict(REJECT, Reply(450, "4.7.1", (
        f"<{rcpt}>: Recipient address rejected: this backup MX is on standby while the "
        f"primary MX of {domain} is up; deliver to the primary")))


def check(ctx: Context, svc: Services, domain: str,
          trace: list[str] | None = None) -> Verdict | None:
    """The standby refusal for a recipient the restrictions accepted, or None.

    A client in mynetworks is still served: it is one of ours (a host that hands its
    mail here), not a sender who picked the backup MX from the DNS.
    """
    if not svc.cfg.bool(PARAM) or not domain:
        return None
    note = trace.append if trace is not None else None
    if not VIEW.known:
        if note:
            note(f"{PARAM}: no running server answers, the primary of {domain} is not known "
                 "to be up: accepted")
        return None
    if not VIEW.refuses(domain, time.time()):
        if note:
            note(f"{PARAM}: the primary of {domain} is not known to be up: accepted")
        return None
    try:
        ours = svc.mynetworks.match(ctx.client_ip, ctx.client_name)
    except Exception:
        ours = False
    if ours:
        if note:
            note(f"{PARAM}: the client is in mynetworks: accepted although the primary of "
                 f"{domain} is up")
        return None
    verdict = refusal(ctx.recipient or "", domain)
    if note:
        note(f"{PARAM}: the primary of {domain} is up => reject ({verdict.reply})")
    return verdict


def table(health: Health, lifetime: float, now: float) -> dict[str, float]:
    """Every destination whose primary counts as healthy now, and until when."""
    out = {}
    for name in health.names():
        until = health.healthy_until(name, lifetime)
        if until is not None and until > now:
            out[name] = until
    return out


def learn(status: dict[str, Any] | None) -> None:
    """Fill :data:`VIEW` from a running server's ``GET /status`` (for ``explain``)."""
    VIEW.known = status is not None
    VIEW.until = {}
    for d in (status or {}).get("destinations", []):
        if d.get("healthy_until"):
            stamp = datetime.strptime(d["healthy_until"], "%Y-%m-%dT%H:%M:%SZ")
            VIEW.until[d["destination"]] = stamp.replace(tzinfo=UTC).timestamp()
