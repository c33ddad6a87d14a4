"""Standby mode and ``backupmx status``, against the recording primary.

While the primary of nausch.org is known healthy, its recipients get 450 4.7.1 and
nothing is queued here; the moment it stops answering, mail is accepted and queued
again, and once it is back the queue drains and standby resumes.  ``status --json``
shows the transitions that made it so.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.e2e.util import connect, message, queue, send, strip_received, wait_queue

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
standby_while_primary_up = yes
standby_probe_interval = 1s
minimal_backoff_time = 1h
maximal_backoff_time = 2h
"""
REFUSAL = ("4.7.1 <alice@nausch.org>: Recipient address rejected: this backup MX is on "
           "standby while the primary MX of nausch.org is up; deliver to the primary")


def status(mx) -> dict[str, Any]:
    res = mx.cli("status", "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def destination(data: dict[str, Any], name: str = "nausch.org") -> dict[str, Any] | None:
    return next((d for d in data["destinations"] if d["destination"] == name), None)


def wait_state(mx, state: str, timeout: float = 15.0) -> dict[str, Any]:
    """nausch.org's entry once it is in ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        d = destination(status(mx))
        if d is not None and d["state"] == state:
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"nausch.org never became {state}: {d}")
        time.sleep(0.1)


def rcpt(mx, address: str = "alice@nausch.org", source: str = "127.0.0.5") -> tuple[int, str]:
    s = connect(mx, source)
    try:
        assert s.mail("sender@sender.example")[0] == 250
        code, text = s.rcpt(address)
        s.quit()
    finally:
        s.close()
    return code, text.decode()


def test_standby_follows_the_primary(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "relay_domains = nausch.org\n")
    # no mail yet: the probe of relay_domains finds the primary up
    up = wait_state(mx, "up")
    assert up["history"][0]["from"] is None
    assert re.fullmatch(r"mx1\.nausch\.org\[127\.0\.0\.2\]:\d+ answers EHLO", up["reason"])
    assert rcpt(mx) == (450, REFUSAL)
    mx.wait_log(re.escape(
        f"NOQUEUE: reject: RCPT from client.example.net[127.0.0.5]: 450 {REFUSAL}; "
        "from=<sender@sender.example> to=<alice@nausch.org> proto=ESMTP "
        "helo=<client.example.net>"))
    assert queue(mx) == []

    # the primary goes away: the probe notices, mail is accepted and kept
    primary.stop()
    down = wait_state(mx, "down")
    assert re.fullmatch(r"connect to mx1\.nausch\.org\[127\.0\.0\.2\]:\d+: Connection refused",
                        down["reason"])
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("outage"))
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    qid = out.queue_id
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    assert [m["id"] for m in q] == [qid]
    held = destination(status(mx))
    assert held is not None and held["queue"]["messages"] == 1

    # it comes back: the backlog is delivered, then standby again
    primary.start()
    got = primary.wait_for(1, timeout=15)
    assert strip_received(got[0].data)[1] == message("outage")
    wait_queue(mx, lambda q: q == [])
    final = wait_state(mx, "up")
    steps = [(t["from"], t["to"]) for t in final["history"]]
    assert steps == [(None, "up"), ("up", "down"), ("down", "recovering"), ("recovering", "up")]
    assert final["history"][-1]["reason"] == "the mail queued during the outage has drained"
    times = [t["time"] for t in final["history"]]
    assert times == sorted(times) and final["since"] == times[-1]
    assert final["queue"]["messages"] == 0
    assert rcpt(mx) == (450, REFUSAL)
    mx.wait_log(r"nausch\.org: primary up -> down \(connect to mx1\.nausch\.org")
    mx.wait_log(r"nausch\.org: primary recovering -> up \(the mail queued during the outage "
                r"has drained\)")


def explained(mx, client: str) -> str:
    res = mx.cli("explain", "--client", client, "--helo", "client.example.net",
                 "--sender", "sender@sender.example", "--recipient", "alice@nausch.org")
    assert res.returncode == 0, res.stderr
    last = res.stdout.splitlines()[-1]
    assert last.startswith("final reply: "), res.stdout
    return last.removeprefix("final reply: ")


@pytest.mark.parametrize("workers", ["", "smtpd_worker_processes = 0\n"])
def test_learnt_from_traffic_mynetworks_served_explain_agrees(backupmx_factory, primary,
                                                              workers):
    """Without relay_domains, the first delivery teaches the master that the primary is
    up; mynetworks clients are still served; ``explain`` gives the server's reply.  The
    same whether the workers decide RCPTs from the master's notices or the master itself."""
    mx = backupmx_factory(SEED + workers)
    assert destination(status(mx)) is None
    assert explained(mx, "127.0.0.5") == "250 2.1.5 Ok"  # nothing known yet
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("first"))
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    assert strip_received(primary.wait_for(1)[0].data)[1] == message("first")
    up = wait_state(mx, "up")
    assert re.fullmatch(r"mx1\.nausch\.org\[127\.0\.0\.2\]:\d+ answered: 250 .*", up["reason"])
    deadline = time.monotonic() + 10
    while rcpt(mx)[0] != 450:  # the workers hear of it from the master
        assert time.monotonic() < deadline, "standby never began"
        time.sleep(0.1)
    assert rcpt(mx) == (450, REFUSAL)
    assert explained(mx, "127.0.0.5") == f"450 {REFUSAL}"
    # a client of mynetworks is served
    assert rcpt(mx, source="127.0.0.1") == (250, "2.1.5 Ok")
    assert explained(mx, "127.0.0.1") == "250 2.1.5 Ok"
    # a relay attempt is refused as one, not told to go elsewhere
    assert rcpt(mx, "bob@foreign.example") == (
        554, "5.7.1 <bob@foreign.example>: Relay access denied")


def test_status_without_a_server(backupmx_factory, primary):
    """The queue per destination from the spool, the states unknown, exit status 1."""
    mx = backupmx_factory(SEED)
    primary.stop()
    out = send(mx, "sender@sender.example", ["alice@nausch.org", "bob@nausch.org"],
               message("kept"))
    assert out.rcpts == [(250, b"2.1.5 Ok"), (250, b"2.1.5 Ok")]
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    assert destination(status(mx))["state"] == "down"  # type: ignore[index]
    assert mx.stop() == 0
    res = mx.cli("status", "--json")
    assert res.returncode == 1, res.stderr
    data = json.loads(res.stdout)
    assert data["states_known"] is False
    (d,) = data["destinations"]
    assert (d["destination"], d["state"], d["history"]) == ("nausch.org", None, [])
    assert (d["queue"]["messages"], d["queue"]["recipients"]) == (1, 2)
    res = mx.cli("status")
    assert res.returncode == 1
    assert res.stdout.splitlines()[:3] == [
        "no running server answers: destination states are unknown",
        "standby_while_primary_up = yes",
        "nausch.org: unknown",
    ]
    assert res.stdout.splitlines()[3].startswith("    queue: 1 messages, 2 recipients, oldest ")
