"""Verification that learns from deliveries and notices a catch-all primary, over TCP
(the real server, unbound and the recording primary)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.e2e.test_verify import SEED, probe_rcpts, verify
from tests.e2e.util import message, metric, send

INSIDE = "127.0.0.1"  # in mynetworks: permit_mynetworks, no verification
CHECK_RCPT = re.compile(rb"RCPT TO:<backupmx-catchall-check-[0-9a-f]{16}@nausch\.org>")
WARNING = ("warning: primary for nausch.org accepts any recipient (catch-all): "
           "recipient verification cannot reject unknown users")


def status(mx) -> dict[str, Any]:
    res = mx.cli("status", "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def wait_catchall(mx, domain: str, timeout: float = 15.0) -> dict[str, Any]:
    """The running server's catch-all finding for ``domain``, once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        found = [c for c in status(mx)["catchall"] if c["domain"] == domain]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no catch-all finding for {domain}"
        time.sleep(0.2)


def rcpts_for(primary, address: str) -> int:
    """RCPT commands for ``address`` (with or without options) in every session."""
    want = f"RCPT TO:<{address}>".encode()
    return sum(1 for s in primary.sessions for c in s.commands if c.startswith(want))


def check_rcpts(primary) -> int:
    return sum(1 for s in primary.sessions for c in s.commands if CHECK_RCPT.fullmatch(c))


@pytest.fixture
def known(primary):
    primary.users = {"alice@nausch.org", "carol@nausch.org"}
    return primary


def test_a_delivery_teaches_the_cache_and_the_next_rcpt_needs_no_probe(
        backupmx_factory, known, smtp_port):
    mx = backupmx_factory(SEED)
    out = send(mx, "s@sender.example", ["carol@nausch.org", "nobody@nausch.org"], message(),
               source=INSIDE)
    assert out.rcpts == [(250, b"2.1.5 Ok"), (250, b"2.1.5 Ok")]
    qid = out.queue_id
    assert [m.rcpts for m in known.wait_for(1, timeout=20)] == [["carol@nausch.org"]]
    mx.wait_log(rf"{qid}: to=<nobody@nausch\.org>, .*dsn=5\.1\.1, status=held")  # quarantined
    assert verify(mx, "carol@nausch.org")["status"] == "deliverable"
    assert verify(mx, "carol@nausch.org")["reply"] == (
        f"mx1.nausch.org[127.0.0.2]:{smtp_port} accepted the recipient in a delivery")
    nobody = verify(mx, "nobody@nausch.org")
    assert nobody["status"] == "undeliverable"
    assert nobody["reply"] == (
        "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <nobody@nausch.org>: Recipient address "
        "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)")
    # From outside, reject_unverified_recipient answers both from what the delivery taught.
    out = send(mx, "s@sender.example", ["carol@nausch.org", "nobody@nausch.org"])
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == (
        "577 5.1.1 <nobody@nausch.org>: Recipient address rejected: undeliverable address: "
        + nobody["reply"])
    assert rcpts_for(known, "carol@nausch.org") == 1  # the delivery's own RCPT
    assert rcpts_for(known, "nobody@nausch.org") == 1
    assert metric(mx, "backupmx_verify_probes_total") == 0
    assert metric(mx, "backupmx_verify_learned_total", result="deliverable") == 1
    assert metric(mx, "backupmx_verify_learned_total", result="undeliverable") == 1
    assert f"{qid}: to=<carol" in mx.log_text()
    assert "verify[" not in "".join(ln for ln in mx.log_text().splitlines(True)
                                    if "carol@nausch.org" in ln)  # nothing logged per lesson


def test_a_primary_that_accepts_anybody_is_found_catch_all(backupmx_factory, primary):
    primary.users = None  # accepts every recipient
    mx = backupmx_factory(SEED)
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    mx.wait_log(re.escape(WARNING))
    found = wait_catchall(mx, "nausch.org")
    assert (found["catchall"], found["reason"]) == ("yes", "250 2.1.5 Ok")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", found["checked"]), found
    assert check_rcpts(primary) == 1
    assert primary.messages == []  # the check never sends DATA
    for s in primary.sessions:
        assert not any(c.upper().startswith(b"DATA") for c in s.commands)
    text = mx.cli("status").stdout
    assert "verified domain nausch.org: catch-all yes (checked " in text
    res = mx.cli("check")
    assert res.returncode == 0, res.stderr
    assert WARNING in res.stderr
    # Once per interval: another new user of the domain does not check again.
    assert send(mx, "s@sender.example", ["dave@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    assert probe_rcpts(primary, "dave@nausch.org") == 1
    assert check_rcpts(primary) == 1
    assert metric(mx, "backupmx_verify_catchall_probes_total") == 1


def test_a_primary_that_refuses_unknown_users_is_not_catch_all(backupmx_factory, known):
    mx = backupmx_factory(SEED)
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    found = wait_catchall(mx, "nausch.org")
    assert found["catchall"] == "no"
    assert re.fullmatch(
        r"host mx1\.nausch\.org\[127\.0\.0\.2\] said: 550 5\.1\.1 <backupmx-catchall-check-"
        r"[0-9a-f]{16}@nausch\.org>: Recipient address rejected: User unknown in virtual "
        r"mailbox table \(in reply to RCPT TO command\)", found["reason"]), found
    assert check_rcpts(known) == 1
    assert "catch-all" not in mx.log_text()
    res = mx.cli("check")
    assert res.returncode == 0 and "catch-all" not in res.stderr
    assert verify(mx, "alice@nausch.org")["status"] == "deliverable"


def test_a_primary_that_is_down_leaves_it_unknown(backupmx_factory, known, smtp_port):
    known.stop()
    mx = backupmx_factory(SEED)
    out = send(mx, "s@sender.example", ["alice@nausch.org"])
    assert out.rcpt_line() == (
        "450 4.1.1 <alice@nausch.org>: Recipient address rejected: unverified address: "
        f"connect to mx1.nausch.org[127.0.0.2]:{smtp_port}: Connection refused")
    found = wait_catchall(mx, "nausch.org")
    assert found == {"domain": "nausch.org", "catchall": "unknown", "checked": found["checked"],
                     "reason": f"connect to mx1.nausch.org[127.0.0.2]:{smtp_port}: "
                               "Connection refused"}
    assert "catch-all" not in mx.log_text()


def test_zero_disables_the_check(backupmx_factory, primary):
    primary.users = None
    mx = backupmx_factory(SEED + "address_verify_catchall_check_interval = 0\n")
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    assert probe_rcpts(primary, "alice@nausch.org") == 1
    assert check_rcpts(primary) == 0
    assert status(mx)["catchall"] == []
