"""Every recipient result is logged once in Postfix's format, whoever decided it, and
``soft_bounce = yes`` turns every permanent delivery failure into a deferral."""

from __future__ import annotations

import email
import re
import time

import pytest

from tests.e2e.util import message, queue, send, strip_received, wait_queue

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
INSIDE = "127.0.0.1"  # in mynetworks: may relay to any domain
NXDOMAIN_TEXT = ("Host or domain name not found. Name service error for name=nosuch.example "
                 "type=A: Host not found")
NULLMX_TEXT = "nullmx.example does not accept mail (nullMX)"


def result_line(qid: str, rcpt: str, dsn: str, status: str, text: str,
                relay: str = "none") -> str:
    return (rf"{qid}: to=<{re.escape(rcpt)}>, relay={re.escape(relay)}, delay=[\d.]+, "
            rf"dsn={re.escape(dsn)}, status={status} \({re.escape(text)}\)$")


def dsn_fields(data: bytes) -> dict[str, str]:
    _, rest = strip_received(data) if data.startswith(b"Received:") else (b"", data)
    parts = email.message_from_bytes(rest).get_payload()
    assert isinstance(parts, list)
    return {k: v for block in parts[1].get_payload() for k, v in block.items()}


@pytest.fixture
def nullmx(dns_records):
    dns_records("nullmx.example. 300 IN MX 0 .")


@pytest.mark.parametrize(("rcpt", "dsn", "text"), [
    ("x@nosuch.example", "5.4.4", NXDOMAIN_TEXT),
    ("x@nullmx.example", "5.1.0", NULLMX_TEXT),
])
def test_a_route_failure_bounce_is_logged_once(backupmx_factory, sender_mx, nullmx, rcpt, dsn,
                                               text):
    mx = backupmx_factory(SEED)
    out = send(mx, "sender@sender.example", [rcpt], message("no route"), source=INSIDE)
    assert out.data is not None and out.data[0] == 250
    qid = out.queue_id
    notice = sender_mx.wait_for(1)[0]
    assert dsn_fields(notice.data)["Status"] == dsn
    line = result_line(qid, rcpt, dsn, "bounced", text)
    mx.wait_log(rf"backupmx/smtp\[\d+\]: {line}")
    mx.wait_log(rf"{qid}: removed")
    assert len(re.findall(rf"{qid}: to=<", mx.log_text())) == 1


def test_a_transport_error_bounce_is_logged_once(backupmx_factory, primary, sender_mx,
                                                 tmp_path):
    table = tmp_path / "transport"
    table.write_text("nausch.org   error:mail for nausch.org is refused here\n")
    mx = backupmx_factory(SEED + f"transport_maps = hash:{table}\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("refused"))
    qid = out.queue_id
    sender_mx.wait_for(1)
    mx.wait_log(r"backupmx/error\[\d+\]: " + result_line(
        qid, "alice@nausch.org", "5.0.0", "bounced", "mail for nausch.org is refused here"))
    assert len(re.findall(rf"{qid}: to=<", mx.log_text())) == 1
    assert primary.messages == []


def test_expiry_logs_the_bounce_of_each_recipient(backupmx_factory, primary, sender_mx):
    mx = backupmx_factory(SEED + "maximal_queue_lifetime = 3s\n")
    primary.stop()
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("expires"))
    qid = out.queue_id
    sender_mx.wait_for(1, timeout=20)
    mx.wait_log(rf"{qid}: removed")
    log = mx.log_text()
    bounced = re.findall(rf"{qid}: to=<alice@nausch\.org>, relay=none, delay=[\d.]+, "
                         r"dsn=4\.4\.1, status=bounced \(connect to mx1\.nausch\.org", log)
    assert len(bounced) == 1
    assert f"{qid}: from=<sender@sender.example>, status=expired, returned to sender" in log


def test_a_suspended_deferral_is_logged(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\n")
    primary.stop()
    first = send(mx, "sender@sender.example", ["alice@nausch.org"], message("first"))
    mx.wait_log(rf"{first.queue_id}: to=<alice@nausch\.org>, relay=none, .*status=deferred "
                r"\(connect to mx1\.nausch\.org")
    second = send(mx, "sender@sender.example", ["alice@nausch.org"], message("second"))
    mx.wait_log(r"backupmx/retry\[\d+\]: " + result_line(
        second.queue_id, "alice@nausch.org", "4.4.1", "deferred",
        f"delivery temporarily suspended: connect to mx1.nausch.org[127.0.0.2]:{primary.port}: "
        "Connection refused"))


# --- soft_bounce -----------------------------------------------------------------------

SOFT = SEED + "soft_bounce = yes\n"


def assert_kept(mx, qid: str, sender_mx) -> None:
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["state"] == "deferred")
    assert [m["id"] for m in q] == [qid]
    time.sleep(0.5)  # a DSN would have been queued with the result
    assert sender_mx.messages == []
    assert len(queue(mx)) == 1


@pytest.mark.parametrize(("rcpt", "dsn", "text"), [
    ("x@nosuch.example", "4.4.4", NXDOMAIN_TEXT),
    ("x@nullmx.example", "4.1.0", NULLMX_TEXT),
])
def test_soft_bounce_defers_a_route_failure(backupmx_factory, sender_mx, nullmx, rcpt, dsn,
                                            text):
    mx = backupmx_factory(SOFT)
    out = send(mx, "sender@sender.example", [rcpt], message("soft"), source=INSIDE)
    mx.wait_log(result_line(out.queue_id, rcpt, dsn, "deferred", text))
    assert_kept(mx, out.queue_id, sender_mx)


def test_soft_bounce_defers_a_transport_error(backupmx_factory, primary, sender_mx, tmp_path):
    table = tmp_path / "transport"
    table.write_text("nausch.org   error:mail for nausch.org is refused here\n")
    mx = backupmx_factory(SOFT + f"transport_maps = hash:{table}\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("soft"))
    mx.wait_log(result_line(out.queue_id, "alice@nausch.org", "4.0.0", "deferred",
                            "mail for nausch.org is refused here"))
    assert_kept(mx, out.queue_id, sender_mx)


@pytest.mark.parametrize(("stage", "reply", "dsn", "command"), [
    ("mail", "553 5.7.1 sender refused", "4.7.1", "MAIL FROM"),
    ("rcpt", "550 5.1.1 <alice@nausch.org>: Recipient address rejected: User unknown",
     "4.1.1", "RCPT TO"),
    ("data", "554 5.6.0 content refused", "4.6.0", "end of DATA"),
])
def test_soft_bounce_defers_a_5xx_at_delivery(backupmx_factory, primary, sender_mx, stage,
                                              reply, dsn, command):
    if stage == "mail":
        primary.mail_reply = reply
    elif stage == "rcpt":
        primary.rcpt_reply["alice@nausch.org"] = reply
    else:
        primary.data_reply = reply
    mx = backupmx_factory(SOFT)
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("soft"))
    text = f"host mx1.nausch.org[127.0.0.2] said: {reply} (in reply to {command} command)"
    mx.wait_log(result_line(out.queue_id, "alice@nausch.org", dsn, "deferred", text,
                            relay=f"mx1.nausch.org[127.0.0.2]:{primary.port}"))
    assert_kept(mx, out.queue_id, sender_mx)
    assert primary.messages == []


# --- delay_warning_time ------------------------------------------------------------------


def test_delay_warning_time_tells_the_sender_once(backupmx_factory, primary, sender_mx):
    mx = backupmx_factory(SEED + "delay_warning_time = 3s\n")
    primary.stop()
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("slow"))
    qid = out.queue_id
    notice = sender_mx.wait_for(1, timeout=20)[0]
    assert (notice.mail_from, notice.rcpts) == ("", ["sender@sender.example"])
    msg = email.message_from_bytes(notice.data)  # made here: no Received: header
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert parts[2].get_content_type() == "text/rfc822-headers"  # headers only
    fields = dsn_fields(notice.data)
    assert fields["Final-Recipient"] == "rfc822; alice@nausch.org"
    assert (fields["Action"], fields["Status"]) == ("delayed", "4.4.1")
    assert "Will-Retry-Until" in fields
    mx.wait_log(rf"{qid}: sender delay notification: [0-9A-F]+")
    # Later attempts (every 2 s here) do not tell the sender again.
    wait_queue(mx, lambda q: any(m["id"] == qid and m["recipients"][0]["attempts"] >= 4
                                 for m in q), timeout=30)
    assert len(sender_mx.messages) == 1
    primary.start()
    mx.cli("queue", "flush", "--wait")
    assert strip_received(primary.wait_for(1)[0].data)[1] == message("slow")
    wait_queue(mx, lambda q: q == [])
    assert len(sender_mx.messages) == 1
