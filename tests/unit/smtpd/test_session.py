"""The session over the real Conn with a fake transport: limits, TLS replies, bare LF."""

from __future__ import annotations

import asyncio
import io

import pytest

from backupmx.log import log
from backupmx.queue.store import SpoolError
from backupmx.smtpd.conn import Conn, SessionExpired
from tests.unit.smtpd.fake import FakeServer, FakeTransport, converse, final_replies

HELLO = b"EHLO client.example.net\r\n"
TX = b"MAIL FROM:<s@sender.example>\r\nRCPT TO:<a@nausch.org>\r\nDATA\r\n"


async def test_banner_and_ehlo_without_tls():
    out = await converse(FakeServer(""), HELLO + b"STARTTLS\r\nQUIT\r\n")
    lines = out.decode().split("\r\n")
    assert lines[0] == "220 mx1.tachtler.net ESMTP backupmx"
    assert "250-STARTTLS" not in lines
    assert final_replies(out)[-2:] == ["502 5.5.1 Error: command not implemented", "221 2.0.0 Bye"]


async def test_encrypt_without_certificate():
    out = await converse(FakeServer("smtpd_tls_security_level = encrypt\n"),
                         HELLO + b"MAIL FROM:<a@b.example>\r\nSTARTTLS\r\nSTARTTLS x\r\n")
    assert final_replies(out)[2:] == [
        "530 5.7.0 Must issue a STARTTLS command first",
        "454 4.7.0 TLS not available due to local problem",
        "501 5.5.4 Syntax: STARTTLS",
    ]


async def test_message_is_committed_with_crlf_only():
    server = FakeServer("")
    out = await converse(server, HELLO + TX + b"Subject: x\r\n\r\na\nb\r\n.\r\nQUIT\r\n")
    assert final_replies(out)[-2].startswith("250 2.0.0 Ok: queued as ")
    (env, content), = server.spool.committed
    assert content.endswith(b"\r\nSubject: x\r\n\r\na\r\nb\r\n")
    assert b"with ESMTP id" in content


async def test_spool_failure_reply_follows_the_disk_full_field_not_the_text():
    server = FakeServer("")
    server.spool.error = SpoolError("queue write failed: some wording", disk_full=True)
    out = await converse(server, HELLO + TX + b"Subject: x\r\n\r\na\r\n.\r\nQUIT\r\n")
    assert final_replies(out)[-2] == "452 4.3.1 Insufficient system storage"
    server.spool.error = SpoolError("queue write failed: database or disk is full")
    out = await converse(server, HELLO + TX + b"Subject: x\r\n\r\na\r\n.\r\nQUIT\r\n")
    assert final_replies(out)[-2] == "451 4.3.0 Error: queue file write error"
    assert server.spool.committed == []


async def test_reject_mode_data_and_command_line():
    server = FakeServer("smtpd_forbid_bare_newline = reject\n")
    out = await converse(server, HELLO + TX + b"a\nb\r\n.\r\nNOOP\n")
    assert final_replies(out)[-2:] == [
        "550 5.5.2 mx1.tachtler.net Error: bare <LF> received",
        "550 5.5.2 mx1.tachtler.net Error: bare <LF> received",
    ]
    assert server.spool.committed == []


async def test_excluded_client_gets_mode_no():
    server = FakeServer("smtpd_forbid_bare_newline = reject\n")
    out = await converse(server, HELLO + TX + b"a\n.\nQUIT\r\n", peer="127.0.0.1")
    assert final_replies(out)[-2].startswith("250 2.0.0 Ok: queued as ")
    assert server.spool.committed[0][1].endswith(b"\r\na\r\n")


async def test_global_ceiling():
    server = FakeServer("smtpd_max_sessions = 1\n")
    server.sessions.add(object())  # type: ignore[arg-type]
    out = await converse(server, HELLO)
    assert out == b"421 4.3.2 mx1.tachtler.net Error: too many sessions, try again later\r\n"


async def test_connection_count_limit_replies_instead_of_banner():
    server = FakeServer("smtpd_client_connection_count_limit = 1\n")
    server.anvil.count["127.0.0.5"] = 1
    out = await converse(server, HELLO)
    assert out == b"421 4.7.0 mx1.tachtler.net Error: too many connections from 127.0.0.5\r\n"


async def test_trickled_line_hits_the_record_deadline():
    async def nothing(_: Conn) -> None:
        return None

    conn = Conn(nothing)
    conn.transport = FakeTransport()
    loop = asyncio.get_running_loop()

    async def trickle() -> None:
        for _ in range(40):
            await asyncio.sleep(0.05)
            conn.data_received(b"N")

    feeder = asyncio.create_task(trickle())
    t0 = loop.time()
    try:
        await conn.readline(2048, 0.5)
    except TimeoutError:
        elapsed = loop.time() - t0
    else:
        raise AssertionError("no timeout")
    feeder.cancel()
    assert 0.4 < elapsed < 1.5


async def test_per_read_timeout_when_record_deadline_is_off():
    async def nothing(_: Conn) -> None:
        return None

    conn = Conn(nothing)
    conn.transport = FakeTransport()
    conn.per_record_deadline = False

    async def trickle() -> None:
        for _ in range(10):
            await asyncio.sleep(0.1)
            conn.data_received(b"N")
        conn.data_received(b"\r\n")

    feeder = asyncio.create_task(trickle())
    assert await conn.readline(2048, 0.5) == (b"N" * 10, False)
    await feeder


async def test_session_deadline_raises_session_expired():
    async def nothing(_: Conn) -> None:
        return None

    conn = Conn(nothing)
    conn.transport = FakeTransport()
    conn.session_deadline = asyncio.get_running_loop().time() + 0.2
    try:
        await conn.readline(2048, 10)
    except SessionExpired:
        pass
    else:
        raise AssertionError("no SessionExpired")


async def test_cr_is_not_split_from_its_lf_at_the_piece_limit():
    async def nothing(_: Conn) -> None:
        return None

    conn = Conn(nothing)
    conn.transport = FakeTransport()
    conn.data_received(b"abc\r")
    first = await conn.read_records(4, 1)
    conn.data_received(b"\n")
    second = await conn.read_records(4, 1)
    assert first == [(b"abc", False, False)]
    assert second == [(b"", False, True)]


async def test_soft_bounce_sends_every_5xx_as_4xx(monkeypatch: pytest.MonkeyPatch):
    # A restriction's reject, the local unknown user and protocol errors alike (Postfix's
    # smtpd changes the code where it writes any reply); the reject log says what was sent.
    server = FakeServer("soft_bounce = yes\n")
    buf = io.StringIO()
    monkeypatch.setattr(log, "stderr", buf)
    out = await converse(server, HELLO + b"MAIL FROM:<s@sender.example>\r\n"
                         b"RCPT TO:<x@foreign.example>\r\nRCPT TO:<a@mx1.tachtler.net>\r\n"
                         b"RCPT TO:<bad address>\r\nBDAT 10\r\nQUIT\r\n")
    assert final_replies(out)[3:7] == [
        "454 4.7.1 <x@foreign.example>: Relay access denied",
        "450 4.1.1 <a@mx1.tachtler.net>: Recipient address rejected: User unknown in local "
        "recipient table",
        "401 4.1.3 Bad recipient address syntax",
        "400 4.5.2 Error: command not recognized",
    ]
    assert "NOQUEUE: reject: RCPT from unknown[127.0.0.5]: 454 4.7.1 <x@foreign.example>: " \
        "Relay access denied; from=<s@sender.example> to=<x@foreign.example>" in buf.getvalue()


async def test_without_soft_bounce_the_5xx_stay():
    out = await converse(FakeServer(""), HELLO + b"MAIL FROM:<s@sender.example>\r\n"
                         b"RCPT TO:<x@foreign.example>\r\nBDAT 10\r\n")
    assert final_replies(out)[3:5] == [
        "554 5.7.1 <x@foreign.example>: Relay access denied",
        "500 5.5.2 Error: command not recognized",
    ]


async def test_addresses_are_stored_canonical_and_each_recipient_once():
    server = FakeServer("")
    out = await converse(server, HELLO + b"MAIL FROM:<s@sender.example.>\r\n"
                         b"RCPT TO:<a@nausch.org.>\r\nRCPT TO:<@x.example:a@nausch.org>\r\n"
                         b"RCPT TO:<b@nausch.org>\r\nDATA\r\nSubject: x\r\n\r\n.\r\nQUIT\r\n")
    assert final_replies(out)[2:6] == ["250 2.1.0 Ok"] + ["250 2.1.5 Ok"] * 3
    (env, _), = server.spool.committed
    assert env.sender == "s@sender.example"
    assert [(r.address, r.orcpt) for r in env.recipients] == [
        ("a@nausch.org", "rfc822;a@nausch.org."), ("b@nausch.org", None)]
