"""``backupmx status``: each destination's state and its queue, as data and as text.

The master answers ``GET /status`` on its admin socket with :func:`report` of its
health state machines (backupmx/health.py) and its queue; without a running server the
command builds the same report from the spool alone, with every state unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backupmx.envelope import Envelope
from backupmx.health import Destination, Health, Transition
from backupmx.queue.listing import iso_utc


def queued(envs: Iterable[Envelope]) -> dict[str, dict[str, Any]]:
    """Per destination: messages and recipients waiting there, and the oldest arrival."""
    out: dict[str, dict[str, Any]] = {}
    for env in envs:
        seen: set[str] = set()
        for r in env.open_recipients:
            q = out.setdefault(r.domain, {"messages": 0, "recipients": 0, "held": 0,
                                          "oldest": env.arrival})
            q["recipients"] += 1
            if r.domain not in seen:
                seen.add(r.domain)
                q["messages"] += 1
                q["held"] += env.hold
                q["oldest"] = min(q["oldest"], env.arrival)
    return out


def _transition(t: Transition) -> dict[str, Any]:
    return {"time": iso_utc(t.time), "from": t.old.value if t.old else None,
            "to": t.new.value, "reason": t.reason}


def _destination(name: str, dest: Destination | None, queue: dict[str, Any] | None,
                 until: float | None) -> dict[str, Any]:
    q: dict[str, Any] = dict(queue) if queue else {"messages": 0, "recipients": 0, "held": 0,
                                                    "oldest": None}
    if q["oldest"] is not None:
        q["oldest"] = iso_utc(q["oldest"])
    if dest is None:
        return {"destination": name, "state": None, "since": None, "reason": None,
                "last_ok": None, "healthy_until": None, "queue": q, "history": []}
    return {
        "destination": name, "state": dest.state.value, "since": iso_utc(dest.since),
        "reason": dest.reason, "last_ok": iso_utc(dest.last_ok) if dest.last_ok else None,
        "healthy_until": iso_utc(until) if until else None, "queue": q,
        "history": [_transition(t) for t in dest.history],
    }


def report(health: Health | None, envs: Iterable[Envelope], lifetime: float,
           standby: bool, catchall: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status as JSON-able data; ``health`` None: no server answered, states unknown.

    ``lifetime`` is standby_health_expire_time, ``standby`` standby_while_primary_up,
    ``catchall`` the catch-all findings per verified domain (backupmx/verify/catchall.py).
    """
    queue = queued(envs)
    names = set(queue) | (set(health.names()) if health else set())
    dests = []
    for name in sorted(names):
        dest = health.get(name) if health else None
        until = health.healthy_until(name, lifetime) if health else None
        dests.append(_destination(name, dest, queue.get(name), until))
    return {"states_known": health is not None, "standby": standby, "destinations": dests,
            "catchall": catchall or []}


def queue_line(q: dict[str, Any]) -> str:
    """A queue summary (messages, recipients, held, oldest) as one indented line."""
    line = f"    queue: {q['messages']} messages, {q['recipients']} recipients"
    if q["held"]:
        line += f", {q['held']} on hold"
    if q["oldest"]:
        line += f", oldest {q['oldest']}"
    return line


def text(data: dict[str, Any]) -> str:
    """The report for a terminal: a block per destination, its transitions oldest first."""
    lines = []
    if not data["states_known"]:
        lines.append("no running server answers: destination states are unknown")
    if data["standby"]:
        lines.append("standby_while_primary_up = yes")
    for d in data["destinations"]:
        state = d["state"] or "unknown"
        head = f"{d['destination']}: {state}"
        if d["since"]:
            head += f" since {d['since']}"
        if d["reason"]:
            head += f" ({d['reason']})"
        lines.append(head)
        lines.append(queue_line(d["queue"]))
        for t in d["history"]:
            lines.append(f"    {t['time']} {t['from'] or '-'} -> {t['to']}: {t['reason']}")
    if not data["destinations"]:
        lines.append("no destinations known, and the queue is empty")
    for c in data.get("catchall", []):
        lines.append(f"verified domain {c['domain']}: catch-all {c['catchall']} "
                     f"(checked {c['checked']}: {c['reason']})")
    return "\n".join(lines) + "\n"
