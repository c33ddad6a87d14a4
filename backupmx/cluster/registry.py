"""The nodes' published records: what each node writes, and what ``status --cluster`` reads.

A node writes its record every ``cluster_publish_interval`` (backupmx/cluster/node.py)
and refreshes its live key with it (keys.py).  A reader tells the nodes apart by that
key: a node is ``up`` while it exists, ``stopped`` when it said so at shutdown, and
``silent`` when it stopped publishing without a word (killed, its host down, cut off
from Redis), with the time of its last record.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from backupmx.cluster import keys
from backupmx.queue.listing import iso_utc
from backupmx.redisstore import Link
from backupmx.status import queue_line

#: a node whose record is older than this many publish intervals is silent
SILENT_AFTER = 3
#: a record is forgotten this long after its node's last word
KEEP = 7 * 86400


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The queue totals and the per-destination states of a ``GET /status`` report."""
    total = {"messages": 0, "recipients": 0, "held": 0, "oldest": None}
    dests = []
    for d in report["destinations"]:
        q = d["queue"]
        for k in ("messages", "recipients", "held"):
            total[k] += q[k]
        if q["oldest"] and (total["oldest"] is None or q["oldest"] < total["oldest"]):
            total["oldest"] = q["oldest"]
        dests.append({"destination": d["destination"], "state": d["state"],
                      "since": d["since"], "messages": q["messages"]})
    return {"queue": total, "destinations": dests}


def write(link: Link, record: dict[str, Any], interval: float, live: bool) -> None:
    """Store ``record`` and, while ``live``, the run's live key for three intervals."""
    live_key = keys.LIVE + record["run"]
    ttl_ms = max(1000, int(interval * SILENT_AFTER * 1000))
    text = json.dumps(record, sort_keys=True)

    def put(r: redis.Redis) -> None:
        pipe = r.pipeline(transaction=True)
        pipe.set(keys.NODE + record["node"], text, ex=KEEP)
        if live:
            pipe.set(live_key, "1", px=ttl_ms)
        else:
            pipe.delete(live_key)
        pipe.execute()

    link.run(put)


def read(link: Link, name: str) -> dict[str, Any] | None:
    """The record published under ``name``, with its ``status`` (as :func:`nodes`)."""
    text = link.run(lambda r: r.get(keys.NODE + name))
    return _with_status(link, json.loads(text)) if text else None


def nodes(link: Link) -> list[dict[str, Any]]:
    """Every node's record, by name, each with ``status`` up, stopped or silent."""
    names = sorted(k[len(keys.NODE):] for k in link.keys(keys.NODE))
    out = []
    for name in names:
        record = read(link, name)
        if record is not None:
            out.append(record)
    return out


def _with_status(link: Link, record: dict[str, Any]) -> dict[str, Any]:
    if record.get("state") == "stopped":
        status = "stopped"
    elif link.run(lambda r: r.exists(keys.LIVE + record["run"])):
        status = "up"
    else:
        status = "silent"
    return {**record, "status": status}


def text(url: str, records: list[dict[str, Any]]) -> str:
    """``status --cluster`` for a terminal: a block per node."""
    if not records:
        return f"no node has published to {url}\n"
    lines = [f"{len(records)} nodes in {url}, "
             f"{sum(r['status'] == 'up' for r in records)} up"]
    for r in records:
        when = "since " + r["started"] if r["status"] == "up" else \
            "last heard " + iso_utc(r["published"])
        lines.append(f"{r['node']}: {r['status']} {when} (backupmx {r['version']}, "
                     f"host {r['host']}, pid {r['pid']}, listening on "
                     f"{', '.join(r['listen']) or '-'})")
        lines.append(queue_line(r["queue"]) + f"; {r['sessions']} sessions open")
        for d in r["destinations"]:
            lines.append(f"    {d['destination']}: {d['state'] or 'unknown'}"
                         + (f" since {d['since']}" if d["since"] else "")
                         + f", {d['messages']} queued")
    return "\n".join(lines) + "\n"
