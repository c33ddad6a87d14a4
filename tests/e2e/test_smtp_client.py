"""The delivery client against a recording primary on loopback, over real TCP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backupmx.envelope import Envelope, Recipient
from backupmx.log import log
from backupmx.outcome import Outcome, Stage, log_text
from backupmx.smtp.client import ClientSettings, ConnectionPool, deliver
from backupmx.smtp.nexthop import Server
from backupmx.smtp.wire import encode_content
from tests.peers.ports import free_port
from tests.peers.primary import RecordingPrimary, Session

CONTENT = (
    b"Received: from client.example\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b".foo\r\n"
    b".\r\n"
    b"..two\r\n"
    b"tab\there and a bare\rcr\r\n"
    b"last line\r\n"
)


@pytest.fixture
def primary() -> Iterator[RecordingPrimary]:
    server = RecordingPrimary("127.0.0.2", free_port(("127.0.0.2",)))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(log, "stderr", buf)
    monkeypatch.setattr(log, "file", None)
    monkeypatch.setattr(log, "facility", None)
    return buf


def mx(p: RecordingPrimary, host: str = "mx1.nausch.org") -> Server:
    return Server(host, p.host, p.port, 10)


def settings(**kw: object) -> ClientSettings:
    return ClientSettings(helo_name="mx1.tachtler.net", **kw)  # type: ignore[arg-type]


def envelope(*addrs: str, **kw: object) -> Envelope:
    return Envelope(
        id="3C1F51A2B3", sender="alice@sender.example",
        recipients=[Recipient(a) for a in addrs], arrival=time.time(), **kw,  # type: ignore[arg-type]
    )


async def send(
    servers: list[Server], env: Envelope, content: bytes = CONTENT, **kw: object
) -> list[Outcome]:
    return await deliver(
        servers, env.sender, env.recipients, content, env=env,
        settings=kw.pop("cfg", None) or settings(), **kw,  # type: ignore[arg-type]
    )


def ended_sessions(p: RecordingPrimary, count: int) -> list[Session]:
    return list(p.wait_for_sessions(count, timeout=5))


async def test_delivered_byte_for_byte(primary: RecordingPrimary, logged: io.StringIO) -> None:
    env = envelope("bob@nausch.org")
    [res] = await send([mx(primary)], env)
    name = f"mx1.nausch.org[127.0.0.2]:{primary.port}"
    assert res == Outcome(
        "delivered", "2.0.0", "250 2.0.0 Ok: queued as 00000001", Stage.RECIPIENT, name,
        "smtp; 250 2.0.0 Ok: queued as 00000001", replied=True, rcpt=250,
    )
    [msg] = primary.messages
    assert msg.data == CONTENT
    assert (msg.mail_from, msg.rcpts) == ("alice@sender.example", ["bob@nausch.org"])
    assert msg.mail_params == [f"SIZE={len(CONTENT)}"]
    assert msg.rcpt_params == [["ORCPT=rfc822;bob@nausch.org"]]
    [session] = await asyncio.to_thread(ended_sessions, primary, 1)
    raw = [d for kind, d in session.transcript if kind == "D"]
    assert raw == [encode_content(CONTENT)]
    assert b"\r\n..foo\r\n..\r\n...two\r\n" in raw[0]
    assert session.commands == [
        b"EHLO mx1.tachtler.net",
        b"MAIL FROM:<alice@sender.example> SIZE=%d" % len(CONTENT),
        b"RCPT TO:<bob@nausch.org> ORCPT=rfc822;bob@nausch.org",
        b"DATA",
        b"QUIT",
    ]
    assert logged.getvalue() == ""  # the queue manager logs results, once each
    assert log_text(env.id, "bob@nausch.org", res, 0.123) == (
        f"3C1F51A2B3: to=<bob@nausch.org>, relay={name}, delay=0.12, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 00000001)")


async def test_esmtp_parameters_passed_on(primary: RecordingPrimary) -> None:
    env = envelope("bob@nausch.org", body="8BITMIME", ret="HDRS", envid="q+2B1")
    env.recipients[0].notify = "SUCCESS,FAILURE"
    env.recipients[0].orcpt = "rfc822;Bob@Nausch.org"
    [res] = await send([mx(primary)], env, b"Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n")
    assert res.kind == "delivered"
    [msg] = primary.messages
    assert msg.mail_params == ["SIZE=22", "BODY=8BITMIME", "RET=HDRS", "ENVID=q+2B1"]
    assert msg.rcpt_params == [["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@Nausch.org"]]
    assert msg.data == b"Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n"


async def test_per_recipient_550_bounced_450_deferred(
    primary: RecordingPrimary, logged: io.StringIO
) -> None:
    primary.rcpt_reply["gone@nausch.org"] = (
        "550 5.1.1 <gone@nausch.org>: Recipient address rejected: User unknown")
    primary.rcpt_reply["later@nausch.org"] = "450 4.2.0 <later@nausch.org>: try again later"
    env = envelope("gone@nausch.org", "bob@nausch.org", "later@nausch.org")
    gone, bob, later = await send([mx(primary)], env)
    name = f"mx1.nausch.org[127.0.0.2]:{primary.port}"
    assert gone == Outcome(
        "bounced", "5.1.1",
        "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <gone@nausch.org>: Recipient address "
        "rejected: User unknown (in reply to RCPT TO command)",
        Stage.RECIPIENT, name,
        "smtp; 550 5.1.1 <gone@nausch.org>: Recipient address rejected: User unknown",
        replied=True, rcpt=550,
    )
    assert gone.refused  # the primary's own 5xx: primary_reject_action decides
    assert (bob.kind, bob.status) == ("delivered", "2.0.0")
    assert later == Outcome(
        "deferred", "4.2.0",
        "host mx1.nausch.org[127.0.0.2] said: 450 4.2.0 <later@nausch.org>: try again later "
        "(in reply to RCPT TO command)",
        Stage.RECIPIENT, name, "smtp; 450 4.2.0 <later@nausch.org>: try again later",
        replied=True, rcpt=450,
    )
    [msg] = primary.messages
    assert msg.rcpts == ["bob@nausch.org"]
    assert "dsn=5.1.1, status=bounced (host " in log_text(env.id, "gone@nausch.org", gone, 1)
    assert "dsn=4.2.0, status=deferred (host mx1.nausch.org[127.0.0.2] said: 450" in log_text(
        env.id, "later@nausch.org", later, 1)


async def test_all_recipients_rejected_sends_no_message(primary: RecordingPrimary) -> None:
    primary.users = {"someone@nausch.org"}
    [res] = await send([mx(primary)], envelope("x@nausch.org"))
    assert (res.kind, res.status) == ("bounced", "5.1.1")
    [session] = await asyncio.to_thread(ended_sessions, primary, 1)
    # The primary offers PIPELINING: DATA closes the command group (RFC 2920), is refused
    # for want of recipients, and no content follows.
    assert [c.split(b" ")[0] for c in session.commands] == [
        b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT"]
    assert primary.messages == []


async def test_connection_refused_deferred() -> None:
    port = free_port(("127.0.0.2",))
    [res] = await send(at(port),
                       envelope("bob@nausch.org"))
    assert res == Outcome(
        "deferred", "4.4.1",
        f"connect to mx1.nausch.org[127.0.0.2]:{port}: Connection refused", Stage.CONNECT,
    )
    assert res.unreachable and not res.reached


async def test_soft_failure_tries_next_server(primary: RecordingPrimary) -> None:
    dead = Server("mx0.nausch.org", "127.0.0.3", free_port(("127.0.0.3",)), 5)
    [res] = await send([dead, mx(primary)], envelope("bob@nausch.org"))
    assert (res.kind, res.relay) == ("delivered", f"mx1.nausch.org[127.0.0.2]:{primary.port}")
    assert len(primary.messages) == 1


async def test_rcpt_450_kept_for_next_server(primary: RecordingPrimary) -> None:
    other = RecordingPrimary("127.0.0.3", free_port(("127.0.0.3",)), hostname="mx2.nausch.org")
    other.rcpt_reply["later@nausch.org"] = "450 4.2.0 try later"
    other.start()
    try:
        env = envelope("bob@nausch.org", "later@nausch.org")
        bob, later = await send([mx(other, "mx2.nausch.org"), mx(primary)], env)
    finally:
        other.stop()
    assert bob.relay == f"mx2.nausch.org[127.0.0.3]:{other.port}"
    assert later.relay == f"mx1.nausch.org[127.0.0.2]:{primary.port}"
    assert (bob.kind, later.kind) == ("delivered", "delivered")
    assert [m.rcpts for m in other.messages] == [["bob@nausch.org"]]
    assert [m.rcpts for m in primary.messages] == [["later@nausch.org"]]


async def test_greeting_554_is_soft(primary: RecordingPrimary) -> None:
    primary.greeting = "554 5.3.2 mx1.nausch.org busy"
    [res] = await send([mx(primary)], envelope("bob@nausch.org"))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.3.2",
        "host mx1.nausch.org[127.0.0.2] refused to talk to me: 554 5.3.2 mx1.nausch.org busy")


async def test_garbage_greeting_is_transient(primary: RecordingPrimary) -> None:
    primary.greeting = "hello there"
    [res] = await send([mx(primary)], envelope("bob@nausch.org"))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.5.0",
        "host mx1.nausch.org[127.0.0.2] sent a malformed reply while receiving the initial "
        "server greeting")


async def test_mail_from_5xx_bounces_all(primary: RecordingPrimary) -> None:
    primary.mail_reply = "553 5.7.1 <alice@sender.example>: Sender address rejected"
    results = await send([mx(primary)], envelope("a@nausch.org", "b@nausch.org"))
    assert [(r.kind, r.status) for r in results] == [("bounced", "5.7.1")] * 2
    assert results[0].text == (
        "host mx1.nausch.org[127.0.0.2] said: 553 5.7.1 <alice@sender.example>: Sender address "
        "rejected (in reply to MAIL FROM command)")
    assert all(r.refused for r in results)  # the primary's own reply


async def test_mail_from_4xx_defers_all(primary: RecordingPrimary) -> None:
    primary.mail_reply = "451 4.3.0 temporary trouble"
    results = await send([mx(primary)], envelope("a@nausch.org", "b@nausch.org"))
    assert [(r.kind, r.status) for r in results] == [("deferred", "4.3.0")] * 2


async def test_lost_connection_in_data_deferred(primary: RecordingPrimary) -> None:
    primary.drop_in_data = True
    [res] = await send([mx(primary)], envelope("bob@nausch.org"))
    assert (res.kind, res.status) == ("deferred", "4.4.2")
    assert res.text == (
        "lost connection with mx1.nausch.org[127.0.0.2] while sending end of data -- "
        "message may be sent more than once")


async def test_lost_connection_in_big_body_deferred(primary: RecordingPrimary) -> None:
    primary.drop_in_data = True
    big = b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 9000
    [res] = await send([mx(primary)], envelope("bob@nausch.org"), big)
    assert (res.kind, res.status) == ("deferred", "4.4.2")
    assert res.text == (
        "lost connection with mx1.nausch.org[127.0.0.2] while sending message body")


async def test_size_over_server_limit_bounces(primary: RecordingPrimary) -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 10240000
    [res] = await send([mx(primary)], envelope("bob@nausch.org"), big)
    assert (res.kind, res.status, res.text) == (
        "bounced", "5.3.4",
        "message size 10240016 exceeds size limit 10240000 of server mx1.nausch.org[127.0.0.2]")
    assert not res.refused  # decided here from the offered SIZE: a DSN, never a quarantine
    [session] = await asyncio.to_thread(ended_sessions, primary, 1)
    assert [c.split(b" ")[0] for c in session.commands] == [b"EHLO"]


async def test_timeout_after_final_dot_is_deferred_not_delivered(
    primary: RecordingPrimary,
) -> None:
    primary.stall_seconds = 2.0
    [res] = await send([mx(primary)], envelope("bob@nausch.org"),
                       cfg=settings(data_done_timeout=0.5))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.4.2",
        "conversation with mx1.nausch.org[127.0.0.2] timed out while sending end of data -- "
        "message may be sent more than once")
    assert len(primary.messages) == 1  # the server has it: hence "more than once"


async def test_end_of_data_554_bounced(primary: RecordingPrimary) -> None:
    primary.data_reply = "554 5.7.1 message content rejected"
    results = await send([mx(primary)], envelope("a@nausch.org", "b@nausch.org"))
    assert [(r.kind, r.status, r.text) for r in results] == [(
        "bounced", "5.7.1",
        "host mx1.nausch.org[127.0.0.2] said: 554 5.7.1 message content rejected "
        "(in reply to end of DATA command)",
    )] * 2


async def test_end_of_data_451_deferred(primary: RecordingPrimary) -> None:
    primary.data_reply = "451 4.3.0 queue file write error"
    [res] = await send([mx(primary)], envelope("a@nausch.org"))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.3.0",
        "host mx1.nausch.org[127.0.0.2] said: 451 4.3.0 queue file write error "
        "(in reply to end of DATA command)")


async def test_two_messages_share_one_pooled_connection(primary: RecordingPrimary) -> None:
    pool = ConnectionPool(idle_time=5.0)
    first = await send([mx(primary)], envelope("a@nausch.org"), pool=pool)
    second = await send([mx(primary)], envelope("b@nausch.org"), b"Subject: 2\r\n\r\n2\r\n",
                        pool=pool)
    await pool.close_all()
    assert [r.kind for r in first + second] == ["delivered", "delivered"]
    [session] = await asyncio.to_thread(ended_sessions, primary, 1)
    assert len(primary.sessions) == 1
    # reused at once: no RSET round trip (ConnectionPool.FRESH)
    assert [c.split(b" ")[0] for c in session.commands] == [
        b"EHLO", b"MAIL", b"RCPT", b"DATA", b"MAIL", b"RCPT", b"DATA", b"QUIT"]
    assert [m.data for m in primary.messages] == [CONTENT, b"Subject: 2\r\n\r\n2\r\n"]


async def test_a_pooled_connection_idle_for_a_while_is_checked_with_rset(
    primary: RecordingPrimary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backupmx.smtp.session.FRESH", 0.0)
    pool = ConnectionPool(idle_time=5.0)
    await send([mx(primary)], envelope("a@nausch.org"), pool=pool)
    await send([mx(primary)], envelope("b@nausch.org"), b"Subject: 2\r\n\r\n2\r\n", pool=pool)
    await pool.close_all()
    [session] = await asyncio.to_thread(ended_sessions, primary, 1)
    assert [c.split(b" ")[0] for c in session.commands] == [
        b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"MAIL", b"RCPT", b"DATA", b"QUIT"]


async def test_pooled_connection_expires(primary: RecordingPrimary) -> None:
    pool = ConnectionPool(idle_time=0.2)
    await send([mx(primary)], envelope("a@nausch.org"), pool=pool)
    await asyncio.to_thread(ended_sessions, primary, 1)
    await send([mx(primary)], envelope("b@nausch.org"), pool=pool)
    await pool.close_all()
    assert len(await asyncio.to_thread(ended_sessions, primary, 2)) == 2


async def test_more_than_recipient_limit_uses_several_transactions(
    primary: RecordingPrimary,
) -> None:
    addrs = [f"u{i}@nausch.org" for i in range(5)]
    results = await send([mx(primary)], envelope(*addrs), cfg=settings(recipient_limit=2))
    assert [r.kind for r in results] == ["delivered"] * 5
    assert [m.rcpts for m in primary.messages] == [addrs[0:2], addrs[2:4], addrs[4:5]]


async def test_tls_required_but_not_offered(primary: RecordingPrimary) -> None:
    [res] = await send([mx(primary)], envelope("a@nausch.org"), cfg=settings(tls_level="encrypt"))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.7.4", "TLS is required, but was not offered by host "
        "mx1.nausch.org[127.0.0.2]")
    assert primary.messages == []


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    crt, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=mx1.nausch.org", "-addext", "subjectAltName=DNS:mx1.nausch.org",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    return crt, ctx


@pytest.mark.parametrize("level", ["may", "encrypt", "verify"])
async def test_starttls_delivery(
    cert: tuple[Path, ssl.SSLContext], level: str, logged: io.StringIO
) -> None:
    crt, ctx = cert
    server = RecordingPrimary("127.0.0.2", free_port(("127.0.0.2",)), ssl_context=ctx)
    server.start()
    try:
        [res] = await send([mx(server)], envelope("a@nausch.org"),
                           cfg=settings(tls_level=level, tls_cafile=str(crt)))
        [session] = await asyncio.to_thread(ended_sessions, server, 1)
    finally:
        server.stop()
    assert res.kind == "delivered"
    assert [m.data for m in server.messages] == [CONTENT]
    assert [c.split(b" ")[0] for c in session.commands] == [
        b"EHLO", b"STARTTLS", b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]
    trust = "Verified" if level == "verify" else "Untrusted"
    assert f": {trust} TLS connection established to mx1.nausch.org[127.0.0.2]:{server.port}: " \
        "TLSv1.3 with cipher " in logged.getvalue()


async def test_verify_fails_on_wrong_name(cert: tuple[Path, ssl.SSLContext]) -> None:
    crt, ctx = cert
    server = RecordingPrimary("127.0.0.2", free_port(("127.0.0.2",)), ssl_context=ctx)
    server.start()
    try:
        [res] = await send([mx(server, "other.nausch.org")], envelope("a@nausch.org"),
                           cfg=settings(tls_level="verify", tls_cafile=str(crt)))
    finally:
        server.stop()
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.7.5",
        "Server certificate not verified: other.nausch.org[127.0.0.2]: certificate names "
        "mx1.nausch.org do not match other.nausch.org")
    assert server.messages == []


async def test_may_falls_back_to_plaintext_after_failed_handshake(
    cert: tuple[Path, ssl.SSLContext], tmp_path: Path
) -> None:
    crt, _ = cert
    # Demands a client certificate during a TLS 1.2 handshake: ours has none.
    broken = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(crt))
    broken.load_cert_chain(crt, tmp_path / "key.pem")
    broken.maximum_version = ssl.TLSVersion.TLSv1_2
    broken.verify_mode = ssl.CERT_REQUIRED
    server = RecordingPrimary("127.0.0.2", free_port(("127.0.0.2",)), ssl_context=broken)
    server.start()
    try:
        [res] = await send([mx(server)], envelope("a@nausch.org"), cfg=settings(tls_level="may"))
    finally:
        server.stop()
    assert res.kind == "delivered"
    assert [m.data for m in server.messages] == [CONTENT]
    assert len(server.sessions) == 2


@contextlib.asynccontextmanager
async def mute_server(script: list[bytes], heard: list[bytes] | None = None) -> AsyncIterator[int]:
    """A peer that sends ``script`` lines, one per line read, then stops reading.

    Yields its port on 127.0.0.2; lines it read go to ``heard``.
    """
    stop = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        for i, line in enumerate(script):
            if i:
                got = await reader.readline()
                if heard is not None:
                    heard.append(got.rstrip(b"\r\n"))
            writer.write(line + b"\r\n")
        await stop.wait()

    port = free_port(("127.0.0.2",))
    server = await asyncio.start_server(session, "127.0.0.2", port)
    try:
        yield port
    finally:
        stop.set()
        server.close()
        for w in writers:
            w.transport.abort()
        await server.wait_closed()


def at(port: int) -> list[Server]:
    return [Server("mx1.nausch.org", "127.0.0.2", port, 10)]


BIG = b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 20000
UP_TO_DATA = [b"220 mx ESMTP", b"250 mx", b"250 2.1.0 Ok", b"250 2.1.5 Ok", b"354 go"]


async def test_ehlo_rejected_falls_back_to_helo() -> None:
    heard: list[bytes] = []
    script = [b"220 mx ESMTP", b"502 5.5.2 Error: command not recognized", b"250 mx",
              b"250 2.1.0 Ok", b"250 2.1.5 Ok", b"354 go", b"250 2.0.0 Ok: queued as 1"]
    async with mute_server(script, heard) as port:
        [res] = await send(at(port), envelope("a@nausch.org"), b"x\r\n")
    assert (res.kind, res.text) == ("delivered", "250 2.0.0 Ok: queued as 1")
    assert heard[:5] == [b"EHLO mx1.tachtler.net", b"HELO mx1.tachtler.net",
                         b"MAIL FROM:<alice@sender.example>", b"RCPT TO:<a@nausch.org>", b"DATA"]


async def test_helo_5xx_bounces_all() -> None:
    script = [b"220 mx ESMTP", b"550 5.7.1 not you", b"550 5.7.1 go away"]
    async with mute_server(script) as port:
        results = await send(at(port), envelope("a@nausch.org", "b@nausch.org"))
    assert [(r.kind, r.status, r.text) for r in results] == [(
        "bounced", "5.7.1",
        "host mx1.nausch.org[127.0.0.2] refused to talk to me: 550 5.7.1 go away",
    )] * 2


async def test_ehlo_421_defers() -> None:
    async with mute_server([b"220 mx ESMTP", b"421 4.7.0 mx closing"]) as port:
        [res] = await send(at(port), envelope("a@nausch.org"))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.7.0",
        "host mx1.nausch.org[127.0.0.2] refused to talk to me: 421 4.7.0 mx closing")


async def test_2xx_before_the_final_dot_is_not_delivered() -> None:
    async with mute_server([*UP_TO_DATA, b"250 2.0.0 too early"]) as port:
        [res] = await send(at(port), envelope("a@nausch.org"), BIG)
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.5.0",
        "host mx1.nausch.org[127.0.0.2] said 250 2.0.0 too early before the end of data "
        "was sent")


async def test_greeting_timeout_deferred() -> None:
    async with mute_server([]) as port:
        [res] = await send(at(port), envelope("a@nausch.org"), cfg=settings(helo_timeout=0.3))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.4.2",
        "conversation with mx1.nausch.org[127.0.0.2] timed out while receiving the initial "
        "server greeting")


async def test_peer_that_stops_reading_times_out_in_body() -> None:
    async with mute_server(UP_TO_DATA) as port:
        [res] = await send(at(port), envelope("a@nausch.org"), BIG,
                           cfg=settings(data_xfer_timeout=0.3))
    assert (res.kind, res.status, res.text) == (
        "deferred", "4.4.2",
        "conversation with mx1.nausch.org[127.0.0.2] timed out while sending message body")


async def test_unexpected_error_defers(
    primary: RecordingPrimary, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backupmx.smtp.session import Connection

    def broken(*args: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(Connection, "rcpt_command", broken)
    results = await send([mx(primary)], envelope("a@nausch.org", "b@nausch.org"))
    assert [(r.kind, r.status, r.text) for r in results] == [(
        "deferred", "4.3.0",
        "delivery via mx1.nausch.org[127.0.0.2] failed: RuntimeError('surprise')",
    )] * 2
    assert primary.messages == []
