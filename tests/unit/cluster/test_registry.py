"""The published node record: its summary of a status report, and the text of
``backupmx status --cluster``."""

from __future__ import annotations

from backupmx.cluster import registry


def report():
    return {"destinations": [
        {"destination": "nausch.org", "state": "down", "since": "2026-12-06T10:00:00Z",
         "queue": {"messages": 3, "recipients": 4, "held": 1,
                   "oldest": "2026-12-06T10:01:00Z"}},
        {"destination": "example.org", "state": "up", "since": "2026-12-06T09:00:00Z",
         "queue": {"messages": 0, "recipients": 0, "held": 0, "oldest": None}},
        {"destination": "other.example", "state": None, "since": None,
         "queue": {"messages": 1, "recipients": 1, "held": 0,
                   "oldest": "2026-12-06T09:30:00Z"}},
    ]}


def test_summary_adds_the_queue_up_and_keeps_each_destination_state():
    got = registry.summary(report())
    assert got["queue"] == {"messages": 4, "recipients": 5, "held": 1,
                            "oldest": "2026-12-06T09:30:00Z"}
    assert got["destinations"] == [
        {"destination": "nausch.org", "state": "down", "since": "2026-12-06T10:00:00Z",
         "messages": 3},
        {"destination": "example.org", "state": "up", "since": "2026-12-06T09:00:00Z",
         "messages": 0},
        {"destination": "other.example", "state": None, "since": None, "messages": 1},
    ]


def record(node, status, **kw):
    base = {"node": node, "run": f"{node}/ab12", "version": "1.0", "host": "h1", "pid": 42,
            "queue_directory": "/q", "listen": ["192.0.2.1:25"],
            "started": "2026-12-06T08:00:00Z", "published": 1796551200.0,
            "state": "running", "sessions": 2, "status": status,
            **registry.summary(report())}
    return {**base, **kw}


def test_text_lists_every_node():
    out = registry.text("redis://r:6379/0", [
        record("mx1.example", "up"),
        record("mx2.example", "silent", listen=["[2001:db8::1]:25"], sessions=0)])
    assert out == (
        "2 nodes in redis://r:6379/0, 1 up\n"
        "mx1.example: up since 2026-12-06T08:00:00Z (backupmx 1.0, host h1, pid 42, "
        "listening on 192.0.2.1:25)\n"
        "    queue: 4 messages, 5 recipients, 1 on hold, oldest 2026-12-06T09:30:00Z; "
        "2 sessions open\n"
        "    nausch.org: down since 2026-12-06T10:00:00Z, 3 queued\n"
        "    example.org: up since 2026-12-06T09:00:00Z, 0 queued\n"
        "    other.example: unknown, 1 queued\n"
        "mx2.example: silent last heard 2026-12-06T10:00:00Z (backupmx 1.0, host h1, "
        "pid 42, listening on [2001:db8::1]:25)\n"
        "    queue: 4 messages, 5 recipients, 1 on hold, oldest 2026-12-06T09:30:00Z; "
        "0 sessions open\n"
        "    nausch.org: down since 2026-12-06T10:00:00Z, 3 queued\n"
        "    example.org: up since 2026-12-06T09:00:00Z, 0 queued\n"
        "    other.example: unknown, 1 queued\n")


def test_text_without_nodes():
    assert registry.text("redis://r:6379/0", []) == "no node has published to redis://r:6379/0\n"
