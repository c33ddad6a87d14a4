"""primary_reject_action: the primary's 5xx at delivery quarantines the message on hold
(no DSN to a sender who may be forged); release, bounce and delete decide afterwards;
discard drops the refused recipients without a DSN."""

from __future__ import annotations

import email
import http.cookiejar
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.util import message, queue, send, strip_received, wait_queue
from tests.peers.backupmx import BackupMX
from tests.peers.primary import RecordingPrimary

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
NOBODY = ("550 5.1.1 <nobody@nausch.org>: Recipient address rejected: User unknown in virtual "
          "mailbox table")


def held(mx: BackupMX, qid: str) -> dict[str, Any]:
    """Wait until ``qid`` is on hold with a held recipient; its queue entry."""
    q = wait_queue(mx, lambda q: any(
        m["id"] == qid and m["state"] == "hold"
        and any(r["state"] == "held" for r in m["recipients"]) for m in q), timeout=30)
    [entry] = [m for m in q if m["id"] == qid]
    return entry


def no_notice(mx: BackupMX, sender_mx: RecordingPrimary, qid: str) -> None:
    """No DSN was made: the queue holds only ``qid`` and the sender's MX got nothing.

    A notice is stored before the refused message is updated in the spool, so once
    the queue shows the message held, a DSN would be in the queue or delivered.
    """
    assert [m["id"] for m in queue(mx)] == [qid]
    assert sender_mx.messages == []
    assert "non-delivery notification" not in mx.log_text()


@pytest.fixture
def mx(backupmx_factory, primary) -> BackupMX:
    """The default primary_reject_action (hold); the primary knows only alice@."""
    primary.users = {"alice@nausch.org"}
    return backupmx_factory(SEED)


def quarantine_one(mx: BackupMX, primary: RecordingPrimary, content: bytes) -> str:
    out = send(mx, "sender@sender.example", ["alice@nausch.org", "nobody@nausch.org"], content)
    assert out.data is not None and out.data[0] == 250
    got = primary.wait_for(1, timeout=30)
    assert [m.rcpts for m in got] == [["alice@nausch.org"]]
    return out.queue_id


def test_hold_quarantines_with_the_reason_listed_and_no_dsn(mx, primary, sender_mx):
    qid = quarantine_one(mx, primary, message("quarantined"))
    entry = held(mx, qid)
    states = {r["address"]: r["state"] for r in entry["recipients"]}
    assert states == {"alice@nausch.org": "delivered", "nobody@nausch.org": "held"}
    [nobody] = [r for r in entry["recipients"] if r["address"] == "nobody@nausch.org"]
    assert nobody["last_reply"] == (f"host mx1.nausch.org[127.0.0.2] said: {NOBODY} "
                                    "(in reply to RCPT TO command)")
    assert nobody["next_attempt"] is None
    no_notice(mx, sender_mx, qid)
    port = primary.port
    mx.wait_log(rf"{qid}: to=<nobody@nausch\.org>, relay=mx1\.nausch\.org\[127\.0\.0\.2\]:"
                rf"{port}, delay=[\d.]+, dsn=5\.1\.1, status=held \(host mx1\.nausch\.org"
                rf"\[127\.0\.0\.2\] said: {re.escape(NOBODY)} \(in reply to RCPT TO command\)\)")
    mx.wait_log(rf"warning: {qid}: quarantined, no DSN sent: nausch\.org refused "
                rf"<nobody@nausch\.org>: host mx1\.nausch\.org\[127\.0\.0\.2\] said: 550 5\.1\.1 ")
    # the mailq layout: "!" for held, the primary's reply above the recipient
    text = mx.cli("queue", "list").stdout
    assert re.search(rf"^{qid}\s*! ", text, re.M), text
    assert f"(host mx1.nausch.org[127.0.0.2] said: {NOBODY} (in reply to RCPT TO command))" \
        in text
    assert re.search(r"^\s+nobody@nausch\.org \(held, 1 attempt\)$", text, re.M), text
    assert "alice@nausch.org" not in text.split(qid, 1)[1]  # delivered: not listed


def test_release_tries_the_refused_recipient_again(mx, primary, sender_mx):
    content = message("released", body="Line one.\r\n.dotted\r\n")
    qid = quarantine_one(mx, primary, content)
    held(mx, qid)
    primary.users = None  # the primary's table is fixed: nobody@ exists now
    res = mx.cli("queue", "release", qid)
    assert res.returncode == 0, res.stderr
    got = primary.wait_for(2, timeout=30)
    assert got[1].rcpts == ["nobody@nausch.org"]
    assert got[1].mail_from == "sender@sender.example"
    assert strip_received(got[1].data)[1] == content
    wait_queue(mx, lambda q: q == [], timeout=30)
    assert sender_mx.messages == []


def test_bounce_sends_the_dsn_with_the_primarys_reply(mx, primary, sender_mx):
    qid = quarantine_one(mx, primary, message("bounced later"))
    held(mx, qid)
    res = mx.cli("queue", "bounce", qid)
    assert res.returncode == 0, res.stderr
    dsn = sender_mx.wait_for(1, timeout=30)[0]
    assert (dsn.mail_from, dsn.rcpts) == ("", ["sender@sender.example"])
    parts = email.message_from_bytes(dsn.data).get_payload()
    assert isinstance(parts, list) and len(parts) == 3
    fields = {k: v for block in parts[1].get_payload() for k, v in block.items()}
    assert fields["Final-Recipient"] == "rfc822; nobody@nausch.org"
    assert fields["Action"] == "failed"
    assert fields["Status"] == "5.1.1"
    assert " ".join(fields["Diagnostic-Code"].split()) == f"smtp; {NOBODY}"  # unfolded
    assert fields["Remote-MTA"] == "dns; mx1.nausch.org"
    wait_queue(mx, lambda q: q == [], timeout=30)
    assert len(primary.messages) == 1  # nobody@ was not tried again
    mx.wait_log(rf"{qid}: to=<nobody@nausch\.org>, .*dsn=5\.1\.1, status=bounced \(host ")
    again = mx.cli("queue", "bounce", qid)
    assert again.returncode == 1
    assert again.stderr == f"backupmx: {qid}: no such quarantined message\n"


def test_delete_removes_the_quarantined_message(mx, primary, sender_mx):
    qid = quarantine_one(mx, primary, message("deleted"))
    held(mx, qid)
    res = mx.cli("queue", "delete", qid)
    assert res.returncode == 0, res.stderr
    assert queue(mx) == []
    mx.wait_log(rf"{qid}: removed \(deleted by the administrator\)")
    assert sender_mx.messages == [] and len(primary.messages) == 1


@pytest.mark.parametrize(("knob", "reply", "stage"), [
    ("mail_reply", "553 5.7.1 <sender@sender.example>: Sender address rejected", "MAIL FROM"),
    ("data_reply", "554 5.7.1 message content rejected", "end of DATA"),
])
def test_a_refused_mail_from_or_end_of_data_is_quarantined(backupmx_factory, primary,
                                                           sender_mx, knob, reply, stage):
    setattr(primary, knob, reply)
    mx = backupmx_factory(SEED)
    qid = send(mx, "sender@sender.example", ["alice@nausch.org"], message("refused")).queue_id
    [rcpt] = held(mx, qid)["recipients"]
    assert rcpt["last_reply"] == (f"host mx1.nausch.org[127.0.0.2] said: {reply} "
                                  f"(in reply to {stage} command)")
    no_notice(mx, sender_mx, qid)
    setattr(primary, knob, None)
    assert mx.cli("queue", "release", qid).returncode == 0
    assert primary.wait_for(1, timeout=30)[0].rcpts == ["alice@nausch.org"]
    wait_queue(mx, lambda q: q == [], timeout=30)


def test_mail_from_the_null_sender_is_quarantined_too(mx, primary, sender_mx):
    """Mail accepted with MAIL FROM:<> is kept like any other; bouncing it sends nothing
    (no bounce of a bounce) and removes it."""
    qid = send(mx, "", ["nobody@nausch.org"], message("a bounce")).queue_id
    held(mx, qid)
    no_notice(mx, sender_mx, qid)
    assert mx.cli("queue", "bounce", qid).returncode == 0
    mx.wait_log(rf"{qid}: undeliverable bounce discarded \(null sender\)")
    mx.wait_log(rf"{qid}: removed")
    assert queue(mx) == [] and sender_mx.messages == []


def test_bounce_all_without_a_running_server(mx, primary, sender_mx):
    """On the spool itself: the notice is queued and goes out when the server starts."""
    qid = quarantine_one(mx, primary, message("offline"))
    held(mx, qid)
    mx.stop()
    res = mx.cli("queue", "bounce", "ALL")
    assert res.returncode == 0, res.stderr
    mx.wait_log(rf"{qid}: to=<nobody@nausch\.org>, .*dsn=5\.1\.1, status=bounced \(host ")
    mx.wait_log(rf"{qid}: sender non-delivery notification: [0-9A-F]+")
    mx.start()
    dsn = sender_mx.wait_for(1, timeout=30)[0]
    assert b"Final-Recipient: rfc822; nobody@nausch.org" in dsn.data
    assert b"Status: 5.1.1" in dsn.data
    wait_queue(mx, lambda q: q == [], timeout=30)


def test_discard_drops_the_refused_recipient_without_a_dsn(backupmx_factory, primary,
                                                           sender_mx):
    primary.users = {"alice@nausch.org"}
    mx = backupmx_factory(SEED + "primary_reject_action = discard\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org", "nobody@nausch.org"],
               message("discarded"))
    qid = out.queue_id
    mx.wait_log(rf"{qid}: to=<nobody@nausch\.org>, relay=mx1\.nausch\.org\[127\.0\.0\.2\]:"
                rf"{primary.port}, delay=[\d.]+, dsn=5\.1\.1, status=discarded \(host ",
                timeout=30)
    mx.wait_log(rf"{qid}: removed")
    # The DSN, had there been one, is stored before the original is removed.
    assert queue(mx) == [] and sender_mx.messages == []
    assert "non-delivery notification" not in mx.log_text()
    assert [m.rcpts for m in primary.messages] == [["alice@nausch.org"]]


def test_soft_bounce_defers_instead_of_quarantining(backupmx_factory, primary, sender_mx):
    primary.users = {"alice@nausch.org"}
    mx = backupmx_factory(SEED + "soft_bounce = yes\n")
    qid = send(mx, "sender@sender.example", ["nobody@nausch.org"], message("soft")).queue_id
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["state"] == "deferred", timeout=30)
    assert q[0]["state"] != "hold"
    mx.wait_log(rf"{qid}: to=<nobody@nausch\.org>, .*dsn=4\.1\.1, status=deferred \(host ")
    assert "quarantined" not in mx.log_text()


def token_file(tmp_path: Path) -> tuple[str, Path]:
    token = secrets.token_hex(32)
    path = tmp_path / "admin.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token, path


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post(opener: urllib.request.OpenerDirector, url: str,
         form: dict[str, str]) -> tuple[int, str]:
    """The status and body of a form POST (a redirect is returned, not followed)."""
    data = urllib.parse.urlencode(form).encode()
    try:
        with opener.open(url, data=data, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_page_bounces_a_quarantined_message_with_its_form_token(
        backupmx_factory, primary, sender_mx, tmp_path):
    token, path = token_file(tmp_path)
    primary.users = {"alice@nausch.org"}
    mx = backupmx_factory(SEED + f"admin_token_file = {path}\n")
    qid = quarantine_one(mx, primary, message("page bounce"))
    held(mx, qid)
    base = f"http://127.0.0.3:{mx.admin_port}"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    assert post(opener, base + "/login", {"token": token})[0] == 303
    with opener.open(base + "/", timeout=30) as resp:
        html = resp.read().decode()
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert m, html
    csrf = m.group(1)
    row = html[html.index(f'data-id="{qid}"'):].split("</tr>", 1)[0]
    assert "quarantined: refused by the primary" in row
    assert 'name="op" value="bounce"' in row
    assert "User unknown in virtual mailbox table" in row  # the primary's reply, shown
    # without the form token: refused, nothing changes
    status, _ = post(opener, base + "/action", {"op": "bounce", "id": qid, "confirm": "yes"})
    assert status == 403
    status, _ = post(opener, base + "/action",
                     {"op": "bounce", "id": qid, "confirm": "yes", "csrf": "0" * 64})
    assert status == 403
    assert [m["id"] for m in queue(mx)] == [qid] and sender_mx.messages == []
    # with it: first the confirmation, then the bounce
    status, page = post(opener, base + "/action", {"op": "bounce", "id": qid, "csrf": csrf})
    assert status == 200 and f"Bounce message <b>{qid}</b>?" in page
    status, _ = post(opener, base + "/action",
                     {"op": "bounce", "id": qid, "csrf": csrf, "confirm": "yes"})
    assert status == 303
    dsn = sender_mx.wait_for(1, timeout=30)[0]
    assert dsn.rcpts == ["sender@sender.example"]
    assert b"Final-Recipient: rfc822; nobody@nausch.org" in dsn.data
    assert b"Status: 5.1.1" in dsn.data
    wait_queue(mx, lambda q: q == [], timeout=30)
    mx.wait_log(rf"admin page: bounce {qid} from \[127\.0\.0\.\d+\]:\d+: 200")
    # a message that is not quarantined cannot be bounced
    status, page = post(opener, base + "/action",
                        {"op": "bounce", "id": qid, "csrf": csrf, "confirm": "yes"})
    assert status == 404 and "no such quarantined message" in page
