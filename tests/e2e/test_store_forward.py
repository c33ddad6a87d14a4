"""Store and forward: primary down, queued durably, delivered once when it is back."""

from __future__ import annotations

import email
import re
import threading
import time

import pytest

from tests.e2e.util import message, queue, send, strip_received, wait_queue

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""

RECEIVED = re.compile(
    rb"^Received: from client\.example\.net \(client\.example\.net \[127\.0\.0\.5\]\)\r\n"
    rb"\tby mx1\.tachtler\.net \(backupmx\) with ESMTP id (?P<id>[0-9A-F]+)\r\n"
    rb"\tfor <alice@nausch\.org>; [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} "
    rb"\d{2}:\d{2}:\d{2} [+-]\d{4}\r\n$"
)


@pytest.fixture
def mx(backupmx_factory):
    return backupmx_factory(SEED)


def test_primary_down_then_up_delivers_exactly_once_byte_for_byte(mx, primary):
    primary.stop()
    body = message("outage", body="Line one.\r\n.dotted line\r\n..two dots\r\n\r\nEnd.\r\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], body)
    qid = out.queue_id
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["state"] == "deferred")
    assert [m["id"] for m in q] == [qid]
    assert q[0]["sender"] == "sender@sender.example"
    r = q[0]["recipients"][0]
    assert r["address"] == "alice@nausch.org"
    assert r["attempts"] >= 1
    assert "Connection refused" in r["last_reply"]
    assert r["next_attempt"].endswith("Z")

    primary.start()
    assert mx.cli("queue", "flush", "--wait").returncode == 0
    got = primary.wait_for(1)
    time.sleep(1.0)
    assert len(primary.messages) == 1
    msg = got[0]
    assert msg.mail_from == "sender@sender.example"
    assert msg.rcpts == ["alice@nausch.org"]
    received, rest = strip_received(msg.data)
    m = RECEIVED.match(received)
    assert m, received
    assert m.group("id").decode() == qid
    assert rest == body
    wait_queue(mx, lambda q: q == [])
    assert mx.wait_log(rf"{qid}: to=<alice@nausch\.org>, relay=mx1\.nausch\.org\[127\.0\.0\.2\]:"
                       rf"\d+, delay=[\d.]+, dsn=2\.0\.0, status=sent \(250 ")
    assert mx.wait_log(rf"{qid}: removed")


def test_delivered_at_once_when_the_primary_is_up(mx, primary):
    out = send(mx, "sender@sender.example", ["alice@nausch.org", "bob@nausch.org"], message())
    got = primary.wait_for(1)
    assert got[0].rcpts == ["alice@nausch.org", "bob@nausch.org"]
    assert out.queue_id
    _, rest = strip_received(got[0].data)
    assert rest == message()


def test_dsn_and_size_parameters_are_passed_on(mx, primary):
    send(
        mx,
        "sender@sender.example",
        ["alice@nausch.org"],
        message(),
        mail_options=["SIZE=300", "RET=HDRS", "ENVID=abc123", "BODY=8BITMIME"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Alice@nausch.org"],
    )
    got = primary.wait_for(1)[0]
    params = {p.split("=")[0]: p for p in got.mail_params}
    assert params["RET"] == "RET=HDRS"
    assert params["ENVID"] == "ENVID=abc123"
    assert params["BODY"] == "BODY=8BITMIME"
    assert params["SIZE"].startswith("SIZE=")
    assert "NOTIFY=SUCCESS,FAILURE" in got.rcpt_params[0]
    assert "ORCPT=rfc822;Alice@nausch.org" in got.rcpt_params[0]


def test_4xx_is_retried_later(mx, primary):
    primary.rcpt_reply["alice@nausch.org"] = "450 4.2.0 mailbox busy"
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["state"] == "deferred")
    assert "450 4.2.0 mailbox busy" in q[0]["recipients"][0]["last_reply"]
    assert primary.messages == []
    del primary.rcpt_reply["alice@nausch.org"]
    # minimal_backoff_time is 2 s in the tests: the retry comes by itself
    got = primary.wait_for(1, timeout=20)
    assert len(got) == 1
    wait_queue(mx, lambda q: q == [])
    assert out.queue_id


def test_5xx_returns_a_dsn_to_the_sender(backupmx_factory, primary, sender_mx):
    """primary_reject_action = bounce: Postfix's behaviour, a DSN with the primary's reply."""
    mx = backupmx_factory(SEED + "primary_reject_action = bounce\n")
    primary.users = {"alice@nausch.org"}
    out = send(mx, "sender@sender.example", ["nobody@nausch.org"], message("to nobody"))
    dsn = sender_mx.wait_for(1)[0]
    assert dsn.mail_from == ""
    assert dsn.rcpts == ["sender@sender.example"]
    _, rest = strip_received(dsn.data) if dsn.data.startswith(b"Received:") else (b"", dsn.data)
    msg = email.message_from_bytes(rest)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 3
    status = parts[1].get_payload()
    fields = {k: v for block in status for k, v in block.items()}
    assert fields["Final-Recipient"] == "rfc822; nobody@nausch.org"
    assert fields["Action"] == "failed"
    assert fields["Status"] == "5.1.1"
    assert fields["Diagnostic-Code"].startswith("smtp; 550 5.1.1 <nobody@nausch.org>")
    assert fields["Remote-MTA"] == "dns; mx1.nausch.org"
    wait_queue(mx, lambda q: q == [])
    assert out.queue_id
    assert primary.messages == []


def test_no_dsn_for_the_null_sender(backupmx_factory, primary, sender_mx):
    mx = backupmx_factory(SEED + "primary_reject_action = bounce\n")
    primary.users = {"alice@nausch.org"}
    out = send(mx, "", ["nobody@nausch.org"], message("bounce of a bounce"))
    assert out.data is not None and out.data[0] == 250
    mx.wait_log(rf"{out.queue_id}: undeliverable bounce discarded")
    wait_queue(mx, lambda q: q == [])
    time.sleep(1)
    assert sender_mx.messages == []


def test_lifetime_expiry_returns_a_dsn(backupmx_factory, primary, sender_mx):
    mx = backupmx_factory(SEED + "maximal_queue_lifetime = 3s\n")
    primary.stop()
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("expires"))
    mx.wait_log(rf"{out.queue_id}: from=<sender@sender\.example>, status=expired, "
                r"returned to sender", timeout=20)
    dsn = sender_mx.wait_for(1)[0]
    assert dsn.mail_from == ""
    assert b"Action: failed" in dsn.data
    assert b"Final-Recipient: rfc822; alice@nausch.org" in dsn.data
    assert b"Connection refused" in dsn.data
    wait_queue(mx, lambda q: q == [])


def test_restart_keeps_the_queue(mx, primary):
    primary.stop()
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("survives"))
    wait_queue(mx, lambda q: len(q) == 1)
    mx.stop()
    mx.start()
    q = queue(mx)
    assert [m["id"] for m in q] == [out.queue_id]
    primary.start()
    mx.cli("queue", "flush", "--wait")
    got = primary.wait_for(1)
    assert strip_received(got[0].data)[1] == message("survives")


def test_sigkill_during_a_burst_loses_no_acknowledged_message(mx, primary):
    primary.stop()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n: int) -> None:
        for i in range(200):
            if stop.is_set():
                return
            subject = f"burst {n}-{i}"
            try:
                out = send(mx, "sender@sender.example", ["alice@nausch.org"], message(subject))
            except Exception:
                return
            if out.data is not None and out.data[0] == 250:
                with lock:
                    acked.append(subject)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    mx.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) > 10
    mx.start()
    primary.start()
    mx.cli("queue", "flush", "--wait")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(primary.messages) < len(acked):
        time.sleep(0.2)
    subjects = []
    for m in primary.messages:
        hdr = email.message_from_bytes(strip_received(m.data)[1])
        subjects.append(hdr["Subject"])
    missing = set(acked) - set(subjects)
    assert not missing, f"{len(missing)} acknowledged messages lost"
    duplicates = len(subjects) - len(set(subjects))
    print(f"acknowledged={len(acked)} delivered={len(subjects)} duplicates={duplicates}")


def test_this_host_as_best_mx_is_never_delivered_to_itself(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "relay_domains = self.example\n")
    out = send(mx, "sender@sender.example", ["u@self.example"], message())
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    rcpt = q[0]["recipients"][0]
    assert rcpt["state"] == "deferred"
    assert rcpt["last_reply"] == "mail for self.example loops back to myself"
    assert out.queue_id
    assert primary.messages == []


def test_queue_hold_release_delete(mx, primary):
    primary.stop()
    a = send(mx, "sender@sender.example", ["alice@nausch.org"], message("a")).queue_id
    b = send(mx, "sender@sender.example", ["alice@nausch.org"], message("b")).queue_id
    assert mx.cli("queue", "hold", a).returncode == 0
    q = {m["id"]: m for m in queue(mx)}
    assert q[a]["state"] == "hold"
    assert mx.cli("queue", "delete", b).returncode == 0
    assert [m["id"] for m in queue(mx)] == [a]
    bad = mx.cli("queue", "delete", "NOSUCHID")
    assert bad.returncode == 1
    assert "NOSUCHID: no such message" in bad.stderr
    primary.start()
    mx.cli("queue", "flush", "--wait")
    time.sleep(0.5)
    assert primary.messages == []  # held mail is not delivered
    assert mx.cli("queue", "release", a).returncode == 0
    primary.wait_for(1)
    listing = mx.cli("queue", "list")
    assert listing.returncode == 0


def test_queue_list_text_like_mailq(mx, primary):
    primary.stop()
    qid = send(mx, "", ["alice@nausch.org"], message()).queue_id
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    text = mx.cli("queue", "list").stdout
    assert text.startswith("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n")
    assert re.search(rf"^{qid}\s+\d+ \w{{3}} \w{{3}} [ \d]\d \d\d:\d\d:\d\d  MAILER-DAEMON$",
                     text, re.M), text
    assert re.search(r"^ {41}alice@nausch\.org \(deferred, 1 attempt", text, re.M), text
    assert text.rstrip().endswith("in 1 Request.")
    show = mx.cli("queue", "show", qid)
    assert show.returncode == 0
    assert "alice@nausch.org" in show.stdout
