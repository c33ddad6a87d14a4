"""The status page's data: one plain model assembled from the server's state.

Everything the template shows comes from :func:`build`, so another figure reaches
the page by adding a key here and a block in the template.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from backupmx.qmgr import core
from backupmx.queue import listing

if TYPE_CHECKING:
    from backupmx.server import Server

#: age buckets of the queue table, in seconds, and their labels
AGES = ((3600, "< 1 h"), (6 * 3600, "1–6 h"), (86400, "6–24 h"), (float("inf"), "> 1 d"))
#: the most messages the page lists one by one
LISTED = 200
#: the most verify cache records counted for the page
COUNTED = 100_000


def age_label(age: float) -> str:
    return next(label for bound, label in AGES if age < bound)


def build(server: Server, now: float | None = None) -> dict[str, Any]:
    """The page's model: destinations with their health, the queue, verify figures."""
    now = time.time() if now is None else now
    qm = server.qmgr
    envs = sorted(qm.msgs.values(), key=lambda e: e.arrival)
    by_age: dict[str, dict[str, int]] = {}
    for env in envs:
        label = age_label(now - env.arrival)
        for domain in sorted({r.domain for r in env.open_recipients}):
            counts = by_age.setdefault(domain, dict.fromkeys((lb for _, lb in AGES), 0))
            counts[label] += 1
    messages = listing.as_json(envs[:LISTED], active=qm.active)
    for item, env in zip(messages, envs, strict=False):
        item["age"] = int(now - env.arrival)
        item["quarantined"] = bool(core.quarantined(env))
    status = server.watch.status()
    for dest in status["destinations"]:
        dest["dead"] = qm.dead.reason(dest["destination"], now)
    return {
        "destinations": status["destinations"],
        "standby": status["standby"],
        "ages": [label for _, label in AGES],
        "queue_by_age": by_age,
        "messages": messages,
        "total": len(envs),
        "listed": len(messages),
        "verify": _verify(server),
        "rejects": [{**g, "last": listing.iso_utc(g["last"])} for g in server.rejects.grouped()],
        "rejects_kept": len(server.rejects.items),
    }


def _verify(server: Server) -> dict[str, int]:
    verifier = server.svc.verifier
    counts = {"probes": verifier.probes, "connections": verifier.prober.connections,
              "ok": 0, "refused": 0, "other": 0}
    for n, (_, entry) in enumerate(verifier.store.items()):
        if n >= COUNTED:
            break
        key = "ok" if 200 <= entry.status < 300 else "refused" if entry.status >= 500 else "other"
        counts[key] += 1
    return counts
