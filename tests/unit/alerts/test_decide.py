"""When alerts fire, at times of a fake clock: one per transition, re-armed conditions."""

from __future__ import annotations

import email
import json

from backupmx.alerts.alert import DISK_LOW, DRAINED, HOLDING, QUARANTINED, QUEUE_AGE, Alert
from backupmx.alerts.decide import Backlog, Decisions, QueueView
from backupmx.alerts.watch import look
from backupmx.envelope import DELIVERED, Envelope, Recipient

T0 = 1_700_000_000.0
REFUSED = "connect to mx1.nausch.org[127.0.0.2]:25: Connection refused"
EMPTY = QueueView({}, 0, None)


def view(backlog: dict[str, tuple[int, int]], oldest: float | None = T0) -> QueueView:
    b = {d: Backlog(m, r) for d, (m, r) in backlog.items()}
    return QueueView(b, sum(x.messages for x in b.values()), oldest if b else None)


def kinds(alerts: list[Alert]) -> list[tuple[str, str | None]]:
    return [(a.kind, a.destination) for a in alerts]


def test_a_deferral_with_mail_still_queued_is_one_holding_alert():
    d = Decisions()
    d.deferred("nausch.org", REFUSED, T0)
    d.deferred("nausch.org", "again", T0 + 0.5)
    alerts = d.queue(view({"nausch.org": (3, 4)}), T0 + 1, 0)
    assert kinds(alerts) == [(HOLDING, "nausch.org")]
    a = alerts[0]
    assert a.counts == {"messages": 3, "recipients": 4}
    assert a.text == f"mail for nausch.org is being held: {REFUSED}"
    assert a.time == T0 + 1
    # more deferrals while it holds: no second alert
    d.deferred("nausch.org", REFUSED, T0 + 2)
    assert d.queue(view({"nausch.org": (5, 5)}), T0 + 3, 0) == []


def test_the_backlog_drained_is_one_alert_then_a_new_deferral_holds_again():
    d = Decisions()
    d.deferred("nausch.org", REFUSED, T0)
    d.queue(view({"nausch.org": (1, 1)}), T0 + 1, 0)
    alerts = d.queue(EMPTY, T0 + 61, 0, {"nausch.org": "up"})
    assert kinds(alerts) == [(DRAINED, "nausch.org")]
    assert alerts[0].counts == {"messages": 0, "recipients": 0, "seconds": 61}
    assert alerts[0].text == "the mail held for nausch.org has drained after 61s; its primary is up"
    assert d.queue(EMPTY, T0 + 62, 0) == []
    assert not d.busy()
    d.deferred("nausch.org", REFUSED, T0 + 100)
    assert kinds(d.queue(view({"nausch.org": (1, 1)}), T0 + 101, 0)) == [(HOLDING, "nausch.org")]


def test_mail_delivered_before_the_look_gives_no_alert():
    d = Decisions()
    d.deferred("nausch.org", "450 greylisted", T0)
    assert d.queue(view({"other.example": (1, 1)}), T0 + 1, 0) == []
    assert not d.busy()


def test_each_destination_has_its_own_transitions():
    d = Decisions()
    d.deferred("b.example", REFUSED, T0)
    d.deferred("a.example", REFUSED, T0)
    both = view({"a.example": (1, 1), "b.example": (2, 2)})
    assert kinds(d.queue(both, T0 + 1, 0)) == [(HOLDING, "a.example"), (HOLDING, "b.example")]
    assert kinds(d.queue(view({"b.example": (2, 2)}), T0 + 2, 0)) == [(DRAINED, "a.example")]


def test_the_age_alert_fires_once_and_is_rearmed_when_no_message_is_that_old():
    d = Decisions()
    hour = 3600.0
    q = view({"nausch.org": (2, 2)}, oldest=T0)
    assert d.queue(q, T0 + 4 * hour - 1, 4 * hour) == []
    alerts = d.queue(q, T0 + 4 * hour, 4 * hour)
    assert kinds(alerts) == [(QUEUE_AGE, None)]
    assert alerts[0].counts == {"messages": 2, "oldest_age": 14400, "threshold": 14400}
    assert d.queue(q, T0 + 5 * hour, 4 * hour) == []
    # the old message left; the oldest now is younger: re-armed, and fires when it is old
    younger = view({"nausch.org": (1, 1)}, oldest=T0 + 5 * hour)
    assert d.queue(younger, T0 + 5 * hour, 4 * hour) == []
    assert kinds(d.queue(younger, T0 + 9 * hour, 4 * hour)) == [(QUEUE_AGE, None)]


def test_no_age_alert_with_a_zero_threshold():
    d = Decisions()
    assert d.queue(view({"nausch.org": (1, 1)}, oldest=T0), T0 + 10 * 86400, 0) == []


def test_the_disk_alert_fires_once_and_is_rearmed_a_tenth_above_the_threshold():
    d = Decisions()
    assert d.disk(2000, 1000, T0) == []
    alerts = d.disk(999, 1000, T0 + 1)
    assert kinds(alerts) == [(DISK_LOW, None)]
    assert alerts[0].counts == {"free_bytes": 999, "threshold_bytes": 1000}
    assert d.disk(500, 1000, T0 + 2) == []
    assert d.disk(1050, 1000, T0 + 3) == []  # above, but not by a tenth: still fired
    assert d.disk(999, 1000, T0 + 4) == []
    assert d.disk(1100, 1000, T0 + 5) == []  # re-armed
    assert kinds(d.disk(10, 1000, T0 + 6)) == [(DISK_LOW, None)]
    assert d.disk(0, 0, T0 + 7) == []  # off


def test_a_quarantined_message_is_an_alert_of_its_own():
    a = Decisions.quarantined("3C1F51A2B3", "nausch.org", "550 5.1.1 unknown user", T0)
    assert a.kind == QUARANTINED and a.queue_id == "3C1F51A2B3"
    assert a.log_line() == ("alert=quarantined destination=nausch.org queue_id=3C1F51A2B3 "
                            "messages=1: 3C1F51A2B3: mail for nausch.org was put on hold: the "
                            "primary refused it: 550 5.1.1 unknown user")


def test_the_log_line_payload_and_mail_say_the_same():
    a = Alert(HOLDING, T0, "mail for nausch.org is being held: refused", "nausch.org",
              {"messages": 1, "recipients": 2})
    assert a.log_line() == ("alert=holding destination=nausch.org messages=1 recipients=2: "
                            "mail for nausch.org is being held: refused")
    data = json.loads(json.dumps(a.payload("mx1.tachtler.net")))
    assert data == {"kind": "holding", "destination": "nausch.org",
                    "text": "mail for nausch.org is being held: refused",
                    "time": "2023-11-14T22:13:20Z", "host": "mx1.tachtler.net",
                    "counts": {"messages": 1, "recipients": 2}}
    raw = a.mail("mx1.tachtler.net", "MAILER-DAEMON@mx1.tachtler.net", "postmaster@nausch.org",
                 "X.alert@mx1.tachtler.net")
    assert b"\r\n\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw)
    assert msg["Subject"] == "backupmx alert on mx1.tachtler.net: holding mail for nausch.org"
    assert msg["To"] == "<postmaster@nausch.org>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Backupmx-Alert"] == "holding"
    body = msg.get_payload()
    assert isinstance(body, str)
    assert "mail for nausch.org is being held: refused" in body
    assert "recipients: 2" in body


def test_the_look_counts_open_recipients_per_destination_and_leaves_held_mail_out():
    a = Envelope("A", "s@sender.example", [Recipient("x@nausch.org"), Recipient("y@nausch.org"),
                                            Recipient("z@b.example")], T0 + 5)
    done = Recipient("w@b.example", state=DELIVERED)
    b = Envelope("B", "s@sender.example", [done, Recipient("v@nausch.org")], T0 + 10)
    held = Envelope("C", "s@sender.example", [Recipient("u@c.example")], T0, hold=True)
    v = look([a, b, held])
    assert v.backlog == {"nausch.org": Backlog(2, 3), "b.example": Backlog(1, 1)}
    assert v.messages == 2
    assert v.oldest == T0 + 5
    assert look([]) == EMPTY
