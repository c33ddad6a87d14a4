"""queue list / show output: mailq layout, the JSON contract, the detail view; queue IDs."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest

from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, HELD, Envelope, Recipient
from backupmx.queue import ids
from backupmx.queue.listing import as_json, from_json, mailq_text, show_text

T0 = 1710237600.0  # Tue Mar 12 10:00:00 2024 UTC
REFUSED = "connect to mx1.nausch.org[88.217.171.167]:25: Connection refused"


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def first() -> Envelope:
    return Envelope("3C1F51A2B3", "alice@sender.example", [Recipient("bob@nausch.org")], T0,
                    size=1234)


def second() -> Envelope:
    return Envelope(
        "4D5E6F7A8B",
        "carol@sender.example",
        [
            Recipient("dave@nausch.org", state=DEFERRED, attempts=2, last_reply=REFUSED,
                      next_attempt=T0 + 250),
            Recipient("done@nausch.org", state=DELIVERED, attempts=1),
            Recipient("erin@nausch.org", state=DEFERRED, attempts=1, last_reply=REFUSED,
                      next_attempt=T0 - 5),
            Recipient("gone@nausch.org", state=BOUNCED, attempts=1, last_reply="550 no"),
            Recipient("fay@nausch.org", state=DEFERRED, attempts=1,
                      last_reply="451 4.3.0\ntry later", next_attempt=T0 + 7200),
        ],
        T0 - 3600,
        size=2345,
        hold=True,
    )


def test_mailq_layout() -> None:
    text = mailq_text([first(), second()], now=T0, active={"3C1F51A2B3"})
    pad = " " * (76 - len(REFUSED))
    assert text == (
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
        "3C1F51A2B3*     1234 Tue Mar 12 10:00:00  alice@sender.example\n"
        "                                         bob@nausch.org\n"
        "\n"
        "4D5E6F7A8B!     2345 Tue Mar 12 09:00:00  carol@sender.example\n"
        f"{pad}({REFUSED})\n"
        "                                         dave@nausch.org"
        " (deferred, 2 attempts, next attempt in 4m 10s)\n"
        "                                         erin@nausch.org"
        " (deferred, 1 attempt, next attempt due)\n"
        f"{' ' * (76 - 19)}(451 4.3.0 try later)\n"
        "                                         fay@nausch.org"
        " (deferred, 1 attempt, next attempt in 2h)\n"
        "\n"
        "-- 3 Kbytes in 2 Requests.\n"
    )


def test_mailq_long_reason_starts_at_column_zero_and_singular_summary() -> None:
    reason = "x" * 90
    env = Envelope("ABCDEF0123", "", [Recipient("a@b.example", state=DEFERRED, attempts=1,
                                                last_reply=reason)], T0, size=500)
    lines = mailq_text([env], now=T0).splitlines()
    assert lines[1] == "ABCDEF0123       500 Tue Mar 12 10:00:00  MAILER-DAEMON"
    assert lines[2] == f"({reason})"
    assert lines[-1] == "-- 0 Kbytes in 1 Request."


def test_mailq_empty() -> None:
    assert mailq_text([], now=T0) == "Mail queue is empty\n"


def test_json_contract() -> None:
    data = as_json([first(), second()], active={"3C1F51A2B3"})
    assert data[0] == {
        "id": "3C1F51A2B3",
        "arrival": "2024-03-12T10:00:00Z",
        "size": 1234,
        "sender": "alice@sender.example",
        "state": "active",
        "recipients": [
            {"address": "bob@nausch.org", "state": "pending", "attempts": 0,
             "last_reply": None, "next_attempt": None},
        ],
    }
    assert data[1]["state"] == "hold"
    assert [r["address"] for r in data[1]["recipients"]] == [  # finished ones included
        "dave@nausch.org", "done@nausch.org", "erin@nausch.org", "gone@nausch.org",
        "fay@nausch.org",
    ]
    assert data[1]["recipients"][0] == {
        "address": "dave@nausch.org", "state": "deferred", "attempts": 2,
        "last_reply": REFUSED, "next_attempt": "2024-03-12T10:04:10Z",
    }
    plain = first()
    assert as_json([plain])[0]["state"] == "deferred"


def test_from_json_round_trip_for_listing() -> None:
    envs = [first(), second()]
    back = [from_json(d) for d in as_json(envs)]
    assert mailq_text(back, now=T0) == mailq_text(envs, now=T0)
    assert back[1].hold is True
    assert back[1].recipients[0].next_attempt == T0 + 250


def test_show_text() -> None:
    env = second()
    env.client = "client.example[192.0.2.1]"
    env.recipients[0].orcpt = "rfc822;dave@nausch.org"
    env.history = [{"time": T0 - 3500, "recipient": "dave@nausch.org", "status": "deferred"}]
    content = b"From: carol@sender.example\r\nSubject: hi\r\n folded\r\n\r\nbody\r\n"
    assert show_text(env, content, now=T0) == (
        "id: 4D5E6F7A8B\n"
        "state: hold\n"
        "arrival: 2024-03-12T09:00:00Z\n"
        "size: 2345\n"
        "sender: <carol@sender.example>\n"
        "client: client.example[192.0.2.1]\n"
        "recipients:\n"
        "  dave@nausch.org: deferred, 2 attempts, next attempt 2024-03-12T10:04:10Z (in 4m 10s)\n"
        f"    last reply: {REFUSED}\n"
        "    orcpt: rfc822;dave@nausch.org\n"
        "  done@nausch.org: delivered, 1 attempt\n"
        "  erin@nausch.org: deferred, 1 attempt, next attempt 2024-03-12T09:59:55Z\n"
        f"    last reply: {REFUSED}\n"
        "  gone@nausch.org: bounced, 1 attempt\n"
        "    last reply: 550 no\n"
        "  fay@nausch.org: deferred, 1 attempt, next attempt 2024-03-12T12:00:00Z (in 2h)\n"
        "    last reply: 451 4.3.0 try later\n"
        "headers:\n"
        "  From: carol@sender.example\n"
        "  Subject: hi\n"
        "   folded\n"
        "history:\n"
        "  2024-03-12T09:01:40Z recipient=dave@nausch.org status=deferred\n"
    )


def test_queue_ids_unique_ordered_and_shaped() -> None:
    made = [ids.new_id() for _ in range(50_000)]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9A-F]{10}", i) for i in made)
    now_us = time.time_ns() // 1000
    assert abs(int(made[-1], 16) - now_us % 16**10) < 10_000_000  # tracks the clock


def test_a_quarantined_recipient_is_listed_under_the_primarys_reply() -> None:
    said = ("host mx1.nausch.org[88.217.171.167] said: 550 5.1.1 <nobody@nausch.org>: User "
            "unknown (in reply to RCPT TO command)")
    env = Envelope("5A6B7C8D9E", "s@sender.example",
                   [Recipient("nobody@nausch.org", state=HELD, attempts=1, last_reply=said)],
                   T0, size=100, hold=True)
    lines = mailq_text([env], now=T0).splitlines()
    assert lines[1].startswith("5A6B7C8D9E!")
    assert lines[2:4] == [f"({said})", " " * 41 + "nobody@nausch.org (held, 1 attempt)"]
    [item] = as_json([env])
    assert item["state"] == "hold"
    assert item["recipients"][0] == {"address": "nobody@nausch.org", "state": "held",
                                     "attempts": 1, "last_reply": said, "next_attempt": None}
    assert "  nobody@nausch.org: held, 1 attempt\n    last reply: " in show_text(env, b"")
