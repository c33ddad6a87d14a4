"""The DSN builder: structure and fields of the produced message, and who gets notified."""

from __future__ import annotations

import email
import os
import time
from collections.abc import Iterator
from email.message import Message

import pytest

from backupmx.bounce import Failure, make_dsn, rfc822_date, should_notify, xtext_decode
from backupmx.envelope import Envelope, Recipient

ARRIVAL = 1710234000.0  # Tue, 12 Mar 2024 09:00:00 UTC
NOW = 1710237600.25
ORIGINAL = (
    b"From: Alice <alice@sender.example>\r\n"
    b"To: bob@nausch.org\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <m1@sender.example>\r\n"
    b"\r\n"
    b"Hi Bob.\r\n"
)


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


def envelope(**kw: object) -> Envelope:
    rcpt = Recipient("bob@nausch.org", orcpt="rfc822;Bob+2Bfilter@nausch.org")
    base: dict[str, object] = dict(
        id="3C1F51A2B3", sender="alice@sender.example", recipients=[rcpt], arrival=ARRIVAL
    )
    base.update(kw)
    return Envelope(**base)


def rcpt_failure(rcpt: Recipient, status: str = "5.1.1") -> Failure:
    return Failure(
        recipient=rcpt,
        status=status,
        diagnostic="smtp; 550 5.1.1 <bob@nausch.org>: Recipient address rejected",
        remote_mta="mx1.nausch.org",
        reason="host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <bob@nausch.org>: "
        "Recipient address rejected (in reply to RCPT TO command)",
    )


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def test_failed_notice_layout() -> None:
    env = envelope()
    raw = make_dsn(env, [rcpt_failure(env.recipients[0])], ORIGINAL, myhostname="mx2.example",
                   now=NOW)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF throughout
    msg = parse(raw)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx2.example>"
    assert msg["To"] == "alice@sender.example"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Date"] == "Tue, 12 Mar 2024 10:00:00 +0000 (UTC)"
    assert msg["Message-Id"] == "<20240312100000.250000.3C1F51A2B3@mx2.example>"
    assert msg["References"] == "<m1@sender.example>"
    assert msg["In-Reply-To"] == "<m1@sender.example>"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg.get_boundary() == "3C1F51A2B3.1710237600/mx2.example"
    assert msg.preamble == "This is a MIME-encapsulated message.\r\n"
    assert msg["Content-Transfer-Encoding"] is None

    text, report, returned = msg.get_payload()
    assert text["Content-Description"] == "Notification"
    assert text["Content-Type"] == "text/plain; charset=us-ascii"
    body = text.get_payload()
    assert body.startswith("This is the mail system at host mx2.example.\r\n\r\n")
    assert body.endswith(
        "<bob@nausch.org>: host mx1.nausch.org[127.0.0.2] said: 550 5.1.1\r\n"
        "    <bob@nausch.org>: Recipient address rejected (in reply to RCPT TO command)\r\n"
    )

    assert report["Content-Description"] == "Delivery report"
    assert report.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = report.get_payload()
    assert per_message.items() == [
        ("Reporting-MTA", "dns; mx2.example"),
        ("X-Backupmx-Queue-ID", "3C1F51A2B3"),
        ("X-Backupmx-Sender", "rfc822; alice@sender.example"),
        ("Arrival-Date", "Tue, 12 Mar 2024 09:00:00 +0000 (UTC)"),
    ]
    assert per_rcpt.items() == [
        ("Final-Recipient", "rfc822; bob@nausch.org"),
        ("Original-Recipient", "rfc822; Bob+filter@nausch.org"),
        ("Action", "failed"),
        ("Status", "5.1.1"),
        ("Remote-MTA", "dns; mx1.nausch.org"),
        ("Diagnostic-Code", "smtp; 550 5.1.1 <bob@nausch.org>: Recipient address rejected"),
    ]

    assert returned["Content-Description"] == "Undelivered Message"
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "hello"
    assert inner.get_payload() == "Hi Bob.\r\n"
    assert raw.endswith(b"Hi Bob.\r\n\r\n--3C1F51A2B3.1710237600/mx2.example--\r\n")


def test_several_recipients_and_envid() -> None:
    a = Recipient("a@nausch.org")
    b = Recipient("b@nausch.org", orcpt="rfc822;b@old.example")
    env = envelope(recipients=[a, b], envid="ID+2B1")
    raw = make_dsn(env, [rcpt_failure(a), rcpt_failure(b, "5.2.2")], ORIGINAL,
                   myhostname="mx2.example", now=NOW)
    report = parse(raw).get_payload()[1]
    per_message, first, second = report.get_payload()
    assert per_message["Original-Envelope-Id"] == "ID+1"
    assert (first["Final-Recipient"], first["Original-Recipient"], first["Status"]) == (
        "rfc822; a@nausch.org", "rfc822; a@nausch.org", "5.1.1")
    assert (second["Final-Recipient"], second["Original-Recipient"], second["Status"]) == (
        "rfc822; b@nausch.org", "rfc822; b@old.example", "5.2.2")


def test_ret_hdrs_returns_headers_only() -> None:
    env = envelope(ret="HDRS")
    raw = make_dsn(env, [rcpt_failure(env.recipients[0])], ORIGINAL, myhostname="mx2.example",
                   now=NOW)
    returned = parse(raw).get_payload()[2]
    assert returned["Content-Description"] == "Undelivered Message Headers"
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned.get_payload() == (
        "From: Alice <alice@sender.example>\r\nTo: bob@nausch.org\r\n"
        "Subject: hello\r\nMessage-ID: <m1@sender.example>\r\n"
    )
    assert b"Hi Bob." not in raw


def test_large_message_returns_headers_only() -> None:
    env = envelope()
    big = ORIGINAL + b"x" * 100 + b"\r\n"
    small_limit = make_dsn(env, [rcpt_failure(env.recipients[0])], big,
                           myhostname="mx2.example", now=NOW, bounce_size_limit=len(big) - 1)
    at_limit = make_dsn(env, [rcpt_failure(env.recipients[0])], big,
                        myhostname="mx2.example", now=NOW, bounce_size_limit=len(big))
    assert parse(small_limit).get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert parse(at_limit).get_payload()[2].get_content_type() == "message/rfc822"


def test_bare_lf_content_becomes_crlf_and_8bit_is_declared() -> None:
    env = envelope()
    content = "Subject: caf\u00e9\n\nGr\u00fc\u00dfe\n".encode()
    raw = make_dsn(env, [rcpt_failure(env.recipients[0])], content, myhostname="mx2.example",
                   now=NOW)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert msg.get_payload()[2]["Content-Transfer-Encoding"] == "8bit"
    assert "Gr\u00fc\u00dfe\r\n".encode() + b"\r\n--3C1F51A2B3" in raw


def test_delayed_notice() -> None:
    env = envelope()
    failure = Failure(env.recipients[0], "4.4.1", None, None,
                      "connect to mx1.nausch.org[127.0.0.2]:25: Connection refused")
    until = ARRIVAL + 5 * 86400
    raw = make_dsn(env, [failure], ORIGINAL, myhostname="mx2.example", kind="delayed", now=NOW,
                   will_retry_until=until)
    msg = parse(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    text, report, _ = msg.get_payload()
    assert "This is a warning only" in text.get_payload()
    assert "keep trying until Sun, 17 Mar 2024 09:00:00 +0000 (UTC)." in text.get_payload()
    assert report.get_payload()[1].items() == [
        ("Final-Recipient", "rfc822; bob@nausch.org"),
        ("Original-Recipient", "rfc822; Bob+filter@nausch.org"),
        ("Action", "delayed"),
        ("Status", "4.4.1"),
        ("Will-Retry-Until", "Sun, 17 Mar 2024 09:00:00 +0000 (UTC)"),
    ]


def test_long_diagnostic_is_folded() -> None:
    env = envelope()
    reply = "smtp; 550 5.7.1 " + " ".join(["word"] * 40)
    failure = Failure(env.recipients[0], "5.7.1", reply, "mx1.nausch.org", "rejected")
    raw = make_dsn(env, [failure], ORIGINAL, myhostname="mx2.example", now=NOW)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    per_rcpt = parse(raw).get_payload()[1].get_payload()[1]
    assert " ".join(per_rcpt["Diagnostic-Code"].split()) == reply


def test_no_failures_or_unknown_kind_is_an_error() -> None:
    env = envelope()
    with pytest.raises(ValueError):
        make_dsn(env, [], ORIGINAL, myhostname="h", now=NOW)
    with pytest.raises(ValueError):
        make_dsn(env, [rcpt_failure(env.recipients[0])], ORIGINAL, myhostname="h", now=NOW,
                 kind="relayed")


@pytest.mark.parametrize(
    ("sender", "notify", "kind", "expected"),
    [
        ("alice@sender.example", None, "failed", True),
        ("alice@sender.example", None, "delayed", True),
        ("", None, "failed", False),  # a bounce is never bounced
        ("", "FAILURE", "failed", False),
        ("alice@sender.example", "NEVER", "failed", False),
        ("alice@sender.example", "never", "delayed", False),
        ("alice@sender.example", "SUCCESS", "failed", False),
        ("alice@sender.example", "SUCCESS,DELAY", "failed", False),
        ("alice@sender.example", "SUCCESS,DELAY", "delayed", True),
        ("alice@sender.example", "success, failure", "failed", True),
        ("alice@sender.example", "FAILURE", "delayed", False),
    ],
)
def test_should_notify(sender: str, notify: str | None, kind: str, expected: bool) -> None:
    rcpt = Recipient("bob@nausch.org", notify=notify)
    env = envelope(sender=sender, recipients=[rcpt])
    assert should_notify(env, rcpt, kind) is expected


def test_helpers() -> None:
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
    assert rfc822_date(ARRIVAL) == "Tue, 12 Mar 2024 09:00:00 +0000 (UTC)"
