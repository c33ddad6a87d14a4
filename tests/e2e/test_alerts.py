"""Alerts: mail held for a destination, its backlog drained, old mail, a low disk.

Each alert is a log line, a JSON POST to a real HTTP receiver (tests/peers/webhook.py)
and, when asked for, a mail to the postmaster that the normal delivery path delivers to
the recording primary.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator

import pytest

from tests.e2e.util import message, send, wait_queue
from tests.peers.ports import free_port
from tests.peers.webhook import WebhookReceiver, kinds

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver("127.0.0.1", free_port(("127.0.0.1",)))
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def config(hook: WebhookReceiver, extra: str = "") -> str:
    return SEED + f"alert_webhook_url = {hook.url}\n" + extra


def test_holding_then_drained_reach_the_webhook_and_the_log(backupmx_factory, primary, hook):
    hook.statuses = [500]  # the first POST fails: the alert is posted again
    mx = backupmx_factory(config(hook))
    primary.stop()
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("held"))
    assert out.data is not None and out.data[0] == 250
    reqs = hook.wait(lambda rs: kinds(rs, "holding"))
    failed = kinds(reqs, "holding", 500)
    held = kinds(reqs, "holding")
    assert len(failed) == 1 and len(held) == 1
    assert failed[0] == held[0]  # the same alert, tried again
    body = held[0]
    assert body["destination"] == "nausch.org"
    assert body["host"] == "mx1.tachtler.net"
    assert body["counts"] == {"messages": 1, "recipients": 1}
    assert ISO.match(body["time"]), body["time"]
    assert body["text"].startswith("mail for nausch.org is being held: ")
    assert "127.0.0.2" in body["text"]
    assert [r.path for r in reqs] == ["/hook", "/hook"]
    assert all(r.content_type.startswith("application/json") for r in reqs)
    mx.wait_log(r"backupmx/alert\[\d+\]: warning: alert=holding destination=nausch\.org "
                r"messages=1 recipients=1: mail for nausch\.org is being held: ")
    mx.wait_log(r"alert=holding webhook failed: HTTP 500; trying again in 1s")
    mx.wait_log(r"alert=holding webhook: HTTP 200, attempt 2")
    assert kinds(hook.requests, "drained") == []

    primary.start()
    assert mx.cli("queue", "flush", "--wait").returncode == 0
    assert primary.wait_for(1)[0].rcpts == ["alice@nausch.org"]
    reqs = hook.wait(lambda rs: kinds(rs, "drained"))
    drained = kinds(reqs, "drained")
    assert len(drained) == 1
    assert drained[0]["destination"] == "nausch.org"
    assert drained[0]["counts"]["messages"] == 0 and drained[0]["counts"]["recipients"] == 0
    assert drained[0]["text"].startswith("the mail held for nausch.org has drained after ")
    mx.wait_log(r"warning: alert=drained destination=nausch\.org messages=0 recipients=0 "
                r"seconds=\d+: the mail held for nausch\.org has drained")
    assert len(kinds(hook.requests, "holding")) == 1  # one alert per transition


def test_alert_mail_to_the_postmaster_is_delivered_by_the_queue(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "alert_notify_postmaster = yes\n"
                          "postmaster_address = postmaster@nausch.org\n")
    primary.stop()
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("held"))
    qid = out.queue_id
    notice = mx.wait_log(r"alert=holding postmaster notification: ([0-9A-F]+)").group(1)
    wait_queue(mx, lambda q: {m["id"] for m in q} == {qid, notice})

    primary.start()
    assert mx.cli("queue", "flush", "--wait").returncode == 0
    got = primary.wait_for(3, timeout=20)  # the message, then the holding and drained notices
    notices = [m for m in got if m.rcpts == ["postmaster@nausch.org"]]
    assert [m.rcpts for m in got if m not in notices] == [["alice@nausch.org"]]
    assert [m.mail_from for m in notices] == ["", ""]
    subjects = [email.message_from_bytes(m.data)["Subject"] for m in notices]
    assert subjects == ["backupmx alert on mx1.tachtler.net: holding mail for nausch.org",
                        "backupmx alert on mx1.tachtler.net: mail for nausch.org drained"]
    first = email.message_from_bytes(notices[0].data)
    assert first["X-Backupmx-Alert"] == "holding"
    assert first["Auto-Submitted"] == "auto-generated"
    assert "destination: nausch.org" in str(first.get_payload())
    mx.wait_log(rf"{notice}: to=<postmaster@nausch\.org>, relay=mx1\.nausch\.org\[127\.0\.0\.2\]"
                rf":\d+, delay=[\d.]+, dsn=2\.0\.0, status=sent")
    wait_queue(mx, lambda q: q == [])


def test_old_mail_in_the_queue_is_one_alert(backupmx_factory, primary, hook):
    mx = backupmx_factory(config(hook, "alert_queue_age_threshold = 2s\n"))
    primary.stop()
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("old one"))
    body = kinds(hook.wait(lambda rs: kinds(rs, "queue_age")), "queue_age")[0]
    assert body["destination"] is None
    assert body["counts"]["messages"] == 1 and body["counts"]["threshold"] == 2
    assert body["counts"]["oldest_age"] >= 2
    mx.wait_log(r"warning: alert=queue_age messages=1 oldest_age=\d+ threshold=2: the oldest "
                r"message in the queue has waited \d+s, more than 2s")
    send(mx, "sender@sender.example", ["bob@nausch.org"], message("old two"))
    wait_queue(mx, lambda q: len(q) == 2 and all(
        m["recipients"][0]["state"] == "deferred" for m in q))
    primary.start()
    assert mx.cli("queue", "flush", "--wait").returncode == 0
    hook.wait(lambda rs: kinds(rs, "drained"))
    assert len(kinds(hook.requests, "queue_age")) == 1  # the condition lasted: one alert


def test_low_disk_is_one_alert(backupmx_factory, hook):
    mx = backupmx_factory(config(hook, f"alert_disk_free_threshold = {10**18}\n"))
    body = kinds(hook.wait(lambda rs: kinds(rs, "disk_low")), "disk_low")[0]
    assert body["destination"] is None
    assert body["counts"]["threshold_bytes"] == 10**18
    assert 0 < body["counts"]["free_bytes"] < 10**18
    mx.wait_log(rf"warning: alert=disk_low free_bytes=\d+ threshold_bytes={10**18}: the queue's "
                rf"file system has \d+ bytes free, less than {10**18}")
    mx.wait_log(r"alert=disk_low webhook: HTTP 200")
    assert len(kinds(hook.requests, "disk_low")) == 1


def test_a_hanging_webhook_delays_no_mail(backupmx_factory, primary, hook):
    hook.hang = True
    mx = backupmx_factory(config(hook, "alert_webhook_timeout = 60s\n"))
    primary.stop()
    first = send(mx, "sender@sender.example", ["alice@nausch.org"], message("first"))
    assert first.rcpts == [(250, b"2.1.5 Ok")]
    assert first.data is not None and first.data[0] == 250
    hook.wait_hanging(1)  # the holding alert's POST is under way and gets no answer
    second = send(mx, "sender@sender.example", ["bob@nausch.org"], message("second"))
    assert second.data is not None and second.data[0] == 250
    primary.start()
    assert mx.cli("queue", "flush", "--wait").returncode == 0
    got = primary.wait_for(2)
    assert sorted(m.rcpts[0] for m in got) == ["alice@nausch.org", "bob@nausch.org"]
    wait_queue(mx, lambda q: q == [])
    mx.wait_log(r"warning: alert=drained destination=nausch\.org")
    assert hook.requests == [] and hook.hanging == 1  # still not answered, and mail moved on
    assert mx.stop() == 0


def test_a_quarantined_message_is_an_alert(backupmx_factory, primary, hook):
    primary.users = {"alice@nausch.org"}
    mx = backupmx_factory(config(hook))
    out = send(mx, "sender@sender.example", ["nobody@nausch.org"], message("refused"))
    assert out.data is not None and out.data[0] == 250
    body = kinds(hook.wait(lambda rs: kinds(rs, "quarantined")), "quarantined")[0]
    assert body["destination"] == "nausch.org"
    assert body["queue_id"] == out.queue_id
    assert body["counts"] == {"messages": 1}
    assert body["text"].startswith(f"{out.queue_id}: mail for nausch.org was put on hold: "
                                   "the primary refused it: host mx1.nausch.org[127.0.0.2] "
                                   "said: 550 5.1.1 <nobody@nausch.org>")
    mx.wait_log(rf"{out.queue_id}: quarantined, no DSN sent: nausch\.org refused "
                r"<nobody@nausch\.org>: host mx1\.nausch\.org")
    mx.wait_log(r"warning: alert=quarantined destination=nausch\.org")
    assert primary.messages == []
