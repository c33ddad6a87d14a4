"""Recovery after an outage: the backlog moves as soon as the primary greets again."""

from __future__ import annotations

import time

from tests.e2e.util import message, send, strip_received, wait_queue

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
minimal_backoff_time = 1h
maximal_backoff_time = 2h
"""


def test_primary_back_is_noticed_without_flush_or_backoff(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.stop()
    ids = [send(mx, "sender@sender.example", ["alice@nausch.org"], message(f"m{i}")).queue_id
           for i in range(5)]
    q = wait_queue(mx, lambda q: len(q) == 5 and all(m["recipients"][0]["attempts"] >= 1
                                                     for m in q))
    assert all(m["recipients"][0]["state"] == "deferred" for m in q)
    # the next attempt per backoff is an hour away: only the health probe can explain delivery
    t0 = time.monotonic()
    primary.start()
    got = primary.wait_for(5, timeout=15)
    elapsed = time.monotonic() - t0
    assert sorted(strip_received(m.data)[1] for m in got) == sorted(
        message(f"m{i}") for i in range(5))
    mx.wait_log(r"nausch\.org: mx1\.nausch\.org\[127\.0\.0\.2\] answers again; flushing")
    wait_queue(mx, lambda q: q == [])
    print(f"recovery to delivery of 5 messages: {elapsed:.2f} s")
    assert len(ids) == 5


def test_mail_for_a_dead_destination_is_suspended_without_connecting(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.stop()
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("first"))
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("second"))
    q = wait_queue(mx, lambda q: len(q) == 2 and all(m["recipients"][0]["attempts"] >= 1
                                                     for m in q))
    replies = sorted(m["recipients"][0]["last_reply"] for m in q)
    assert replies[0].startswith("connect to mx1.nausch.org[127.0.0.2]:")
    assert replies[1].startswith("delivery temporarily suspended: connect to mx1.nausch.org")


NARROW = SEED + "default_destination_concurrency_limit = 1\n"


def _backlog(mx, primary, n: int) -> list[str]:
    """``n`` messages queued while the primary is down, each tried once or suspended."""
    primary.stop()
    ids = [send(mx, "sender@sender.example", ["alice@nausch.org"], message(f"b{i}")).queue_id
           for i in range(n)]
    wait_queue(mx, lambda q: len(q) == n and all(m["recipients"][0]["attempts"] >= 1
                                                 for m in q))
    return ids


def test_a_backlog_larger_than_the_destination_slots_is_all_delivered(backupmx_factory,
                                                                     primary):
    """A flush makes all of it due at once: two attempts start, the rest wait parked and
    are started as those finish; every message arrives once, byte for byte."""
    mx = backupmx_factory(NARROW)
    _backlog(mx, primary, 12)
    primary.start()
    res = mx.cli("queue", "flush", "--wait", timeout=60)
    assert res.returncode == 0, res.stderr
    got = primary.wait_for(12, timeout=30)
    assert sorted(strip_received(m.data)[1] for m in got) == sorted(
        message(f"b{i}") for i in range(12))
    wait_queue(mx, lambda q: q == [])
    time.sleep(0.5)
    assert len(primary.messages) == 12


def test_parked_mail_of_a_destination_found_dead_is_deferred(backupmx_factory, primary):
    """The attempts that find the primary still down free the parked rest at once: each
    is deferred as suspended, and the flush that started it all comes to an end."""
    mx = backupmx_factory(NARROW)
    _backlog(mx, primary, 12)
    before = {m["id"]: m["recipients"][0]["attempts"] for m in wait_queue(mx, lambda q: q)}
    res = mx.cli("queue", "flush", "--wait", timeout=60)
    assert res.returncode == 0, res.stderr
    q = wait_queue(mx, lambda q: all(m["recipients"][0]["attempts"] == before[m["id"]] + 1
                                     for m in q))
    replies = [m["recipients"][0]["last_reply"] for m in q]
    assert sum(r.startswith("delivery temporarily suspended: connect to mx1.nausch.org")
               for r in replies) >= 10, replies
    assert primary.messages == []
