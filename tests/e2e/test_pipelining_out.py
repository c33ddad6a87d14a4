"""RFC 2920 PIPELINING in the delivery client, against a server that records each read.

The server answers every complete command of one read in one write, as a
pipelining server does, and keeps the bytes of every read apart: a group written
at once by the client shows up as one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from backupmx.envelope import Envelope, Recipient
from backupmx.outcome import Outcome, Stage
from backupmx.smtp.client import ClientSettings, ConnectionPool, deliver
from backupmx.smtp.nexthop import Server
from backupmx.smtp.wire import encode_content
from tests.peers.ports import free_port
from tests.peers.primary import unstuff

HOST = "127.0.0.6"
CONTENT = (
    b"Received: from client.example\r\n"
    b"Subject: pipelined\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b".\r\n"
    b"tab\there and a bare\rcr\r\n"
    b"last line\r\n"
)
OK, LATER, GONE = "ok@nausch.org", "later@nausch.org", "gone@nausch.org"
LATER_REPLY = f"450 4.2.0 <{LATER}>: Recipient address rejected: try again later"
GONE_REPLY = f"550 5.1.1 <{GONE}>: Recipient address rejected: User unknown"


@dataclass
class ReadRecorder:
    """The knobs and records of one server; ``reads`` holds a list of reads per session."""

    pipelining: bool = True
    rcpt_reply: dict[str, str] = field(default_factory=dict)
    mail_reply: str = "250 2.1.0 Ok"
    data_reply: str | None = None  # to DATA; None: 354, or 554 when nobody was accepted
    close_after_mail: bool = False  # hang up right after the reply to MAIL
    silent_after_mail: bool = False  # answer MAIL, then nothing more
    dribble: bool = False  # write replies a few bytes at a time
    port: int = 0
    reads: list[list[bytes]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)  # raw DATA, final dot included


def ehlo_reply(pipelining: bool) -> bytes:
    keywords = ["mx1.nausch.org", *(["PIPELINING"] if pipelining else []), "SIZE 10240000",
                "ENHANCEDSTATUSCODES", "8BITMIME"]
    return b"".join(
        f"250{'-' if i < len(keywords) - 1 else ' '}{k}\r\n".encode()
        for i, k in enumerate(keywords)
    )


def end_of_data(pending: bytes) -> int:
    """Where the DATA content in ``pending`` ends (after its final dot), or -1."""
    if pending.startswith(b".\r\n"):
        return 3
    at = pending.find(b"\r\n.\r\n")
    return -1 if at < 0 else at + 5


class Conversation:
    """One session's state; :meth:`answer` turns the complete input into replies."""

    def __init__(self, rec: ReadRecorder) -> None:
        self.rec = rec
        self.pending = b""
        self.in_data = self.has_mail = self.closing = self.silent = False
        self.accepted = 0

    def answer(self) -> bytes:
        out: list[bytes] = []
        while not (self.closing or self.silent):
            if self.in_data:
                end = end_of_data(self.pending)
                if end < 0:
                    break
                self.rec.messages.append(self.pending[:end])
                self.pending = self.pending[end:]
                out.append(b"250 2.0.0 Ok: queued as 4711\r\n")
                self.in_data = self.has_mail = False
                self.accepted = 0
                continue
            line, sep, rest = self.pending.partition(b"\r\n")
            if not sep:
                break
            self.pending = rest
            out.append(self.command(line).encode() + b"\r\n")
        return b"".join(out)

    def command(self, line: bytes) -> str:
        rec, verb = self.rec, line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            return ehlo_reply(rec.pipelining).decode().removesuffix("\r\n")
        if verb == b"MAIL":
            self.has_mail = rec.mail_reply.startswith("2")
            self.closing, self.silent = rec.close_after_mail, rec.silent_after_mail
            return rec.mail_reply
        if verb in (b"RCPT", b"DATA") and not self.has_mail:
            return "503 5.5.1 Error: need MAIL command"
        if verb == b"RCPT":
            addr = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
            reply = rec.rcpt_reply.get(addr, "250 2.1.5 Ok")
            self.accepted += reply.startswith("2")
            return reply
        if verb == b"DATA":
            reply = rec.data_reply or (
                "354 End data with <CR><LF>.<CR><LF>" if self.accepted
                else "554 5.5.1 Error: no valid recipients")
            self.in_data = reply.startswith("354")
            return reply
        if verb == b"RSET":
            self.has_mail, self.accepted = False, 0
            return "250 2.0.0 Ok"
        if verb == b"QUIT":
            self.closing = True
            return "221 2.0.0 Bye"
        return "502 5.5.2 Error: command not recognized"


async def converse(
    rec: ReadRecorder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    reads: list[bytes] = []
    rec.reads.append(reads)
    state = Conversation(rec)
    writer.write(b"220 mx1.nausch.org ESMTP\r\n")
    while not state.closing:
        chunk = await reader.read(65536)
        if not chunk:
            return
        reads.append(chunk)
        state.pending += chunk
        data = state.answer()
        step = 7 if rec.dribble else len(data) or 1
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
            await writer.drain()
            if rec.dribble:
                await asyncio.sleep(0.01)
        if state.silent:
            await asyncio.Event().wait()  # until the test ends


@contextlib.asynccontextmanager
async def recorder(rec: ReadRecorder) -> AsyncIterator[ReadRecorder]:
    """Serve ``rec`` on HOST:<free port> for the block; all sessions end with it."""
    tasks: set[asyncio.Task[None]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await converse(rec, reader, writer)
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, asyncio.CancelledError):
            writer.transport.abort()

    rec.port = free_port((HOST,))
    server = await asyncio.start_server(session, HOST, rec.port)
    try:
        yield rec
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def settings(**kw: object) -> ClientSettings:
    return ClientSettings(helo_name="mx1.tachtler.net", **kw)  # type: ignore[arg-type]


def envelope(*addrs: str) -> Envelope:
    return Envelope(
        id="3C1F51A2B3", sender="alice@sender.example",
        recipients=[Recipient(a) for a in addrs], arrival=time.time(),
    )


async def send(
    rec: ReadRecorder, *addrs: str, content: bytes = CONTENT, **kw: object
) -> list[Outcome]:
    env = envelope(*addrs)
    cfg = kw.pop("cfg", None) or settings()
    return await deliver(
        [Server("mx1.nausch.org", HOST, rec.port, 10)], env.sender, env.recipients, content,
        env=env, settings=cfg, **kw,  # type: ignore[arg-type]
    )


async def wait_reads(rec: ReadRecorder, count: int, last: bytes = b"QUIT\r\n") -> list[bytes]:
    """The first session's reads once it has ``count`` and the last one is ``last``."""
    for _ in range(100):
        if rec.reads and len(rec.reads[0]) >= count and rec.reads[0][-1] == last:
            return rec.reads[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"reads so far: {rec.reads}")


EHLO = b"EHLO mx1.tachtler.net\r\n"
MAIL = b"MAIL FROM:<alice@sender.example> SIZE=%d\r\n" % len(CONTENT)


def rcpt(addr: str) -> bytes:
    return f"RCPT TO:<{addr}>\r\n".encode()


def relay(rec: ReadRecorder) -> str:
    return f"mx1.nausch.org[{HOST}]:{rec.port}"


def mixed_results(rec: ReadRecorder) -> list[Outcome]:
    name = f"mx1.nausch.org[{HOST}]"
    return [
        Outcome("delivered", "2.0.0", "250 2.0.0 Ok: queued as 4711", Stage.RECIPIENT,
                relay(rec), "smtp; 250 2.0.0 Ok: queued as 4711", replied=True,
                rcpt=250),
        Outcome("deferred", "4.2.0", f"host {name} said: {LATER_REPLY} (in reply to RCPT TO "
                "command)", Stage.RECIPIENT, relay(rec), f"smtp; {LATER_REPLY}", replied=True,
                rcpt=450),
        Outcome("bounced", "5.1.1", f"host {name} said: {GONE_REPLY} (in reply to RCPT TO "
                "command)", Stage.RECIPIENT, relay(rec), f"smtp; {GONE_REPLY}", replied=True,
                rcpt=550),
    ]


MIXED = {LATER: LATER_REPLY, GONE: GONE_REPLY}


async def test_mail_rcpts_and_data_arrive_in_one_read() -> None:
    async with recorder(ReadRecorder(rcpt_reply=dict(MIXED))) as rec:
        results = await send(rec, OK, LATER, GONE)
        reads = await wait_reads(rec, 4)
    assert results == mixed_results(rec)
    assert reads == [
        EHLO,
        MAIL + rcpt(OK) + rcpt(LATER) + rcpt(GONE) + b"DATA\r\n",
        encode_content(CONTENT),
        b"QUIT\r\n",
    ]
    assert rec.messages == [encode_content(CONTENT)]
    assert unstuff(rec.messages[0]) == CONTENT


async def test_without_pipelining_one_command_per_read() -> None:
    async with recorder(ReadRecorder(pipelining=False, rcpt_reply=dict(MIXED))) as rec:
        results = await send(rec, OK, LATER, GONE)
        reads = await wait_reads(rec, 8)
    assert results == mixed_results(rec)
    assert reads == [
        EHLO, MAIL, rcpt(OK), rcpt(LATER), rcpt(GONE), b"DATA\r\n", encode_content(CONTENT),
        b"QUIT\r\n",
    ]
    assert [unstuff(m) for m in rec.messages] == [CONTENT]


async def test_replies_that_trickle_in_are_matched_in_order() -> None:
    multi = "550-5.1.1 <gone@nausch.org>: no such user\r\n550 5.1.1 ask the postmaster"
    async with recorder(ReadRecorder(rcpt_reply={LATER: LATER_REPLY, GONE: multi},
                                     dribble=True)) as rec:
        ok, later, gone = await send(rec, OK, LATER, GONE)
        reads = await wait_reads(rec, 4)
    assert reads[1] == MAIL + rcpt(OK) + rcpt(LATER) + rcpt(GONE) + b"DATA\r\n"
    assert (ok.kind, ok.text) == ("delivered", "250 2.0.0 Ok: queued as 4711")
    assert later == mixed_results(rec)[1]
    assert (gone.kind, gone.status, gone.text) == (
        "bounced", "5.1.1",
        f"host mx1.nausch.org[{HOST}] said: 550 5.1.1 <gone@nausch.org>: no such user 5.1.1 "
        "ask the postmaster (in reply to RCPT TO command)")
    assert [unstuff(m) for m in rec.messages] == [CONTENT]


async def test_nobody_accepted_sends_no_body_and_resets() -> None:
    async with recorder(ReadRecorder(rcpt_reply=dict(MIXED))) as rec:
        results = await send(rec, LATER, GONE)
        reads = await wait_reads(rec, 4)
    assert results == mixed_results(rec)[1:]
    assert reads == [
        EHLO, MAIL + rcpt(LATER) + rcpt(GONE) + b"DATA\r\n", b"RSET\r\n", b"QUIT\r\n"]
    assert rec.messages == []


async def test_354_although_nobody_was_accepted_gets_a_lone_dot() -> None:
    rec = ReadRecorder(rcpt_reply={GONE: GONE_REPLY}, data_reply="354 go ahead anyway")
    async with recorder(rec):
        [gone] = await send(rec, GONE)
        reads = await wait_reads(rec, 5)
    assert gone == mixed_results(rec)[2]
    assert reads == [EHLO, MAIL + rcpt(GONE) + b"DATA\r\n", b".\r\n", b"RSET\r\n", b"QUIT\r\n"]
    assert rec.messages == [b".\r\n"]  # an empty message, and for nobody


async def test_mail_rejected_fails_the_whole_batch() -> None:
    reply = "553 5.7.1 <alice@sender.example>: Sender address rejected"
    async with recorder(ReadRecorder(mail_reply=reply)) as rec:
        results = await send(rec, OK, GONE)
        reads = await wait_reads(rec, 2, MAIL + rcpt(OK) + rcpt(GONE) + b"DATA\r\n")
    assert [(r.kind, r.status, r.text, r.diagnostic) for r in results] == [(
        "bounced", "5.7.1",
        f"host mx1.nausch.org[{HOST}] said: {reply} (in reply to MAIL FROM command)",
        f"smtp; {reply}",
    )] * 2
    assert len(reads) == 2 and rec.messages == []


async def test_reply_before_the_server_hangs_up_is_still_read() -> None:
    reply = "421 4.3.2 mx1.nausch.org shutting down"
    async with recorder(ReadRecorder(mail_reply=reply, close_after_mail=True)) as rec:
        results = await send(rec, OK, GONE)
    assert rec.reads == [[EHLO, MAIL + rcpt(OK) + rcpt(GONE) + b"DATA\r\n"]]
    assert [(r.kind, r.status, r.text) for r in results] == [(
        "deferred", "4.3.2",
        f"host mx1.nausch.org[{HOST}] said: {reply} (in reply to MAIL FROM command)",
    )] * 2


async def test_rcpt_421_defers_the_rest() -> None:
    reply = "421 4.7.0 mx1.nausch.org closing connection"
    async with recorder(ReadRecorder(rcpt_reply={LATER: reply, GONE: GONE_REPLY})) as rec:
        ok, later, gone = await send(rec, OK, LATER, GONE)
        reads = await wait_reads(rec, 2, MAIL + rcpt(OK) + rcpt(LATER) + rcpt(GONE) + b"DATA\r\n")
    assert len(reads) == 2
    want = f"host mx1.nausch.org[{HOST}] said: {reply} (in reply to RCPT TO command)"
    assert [(r.kind, r.status, r.text) for r in (ok, later, gone)] == [
        ("deferred", "4.7.0", want)] * 3
    assert rec.messages == []


async def test_data_554_bounces_the_accepted_and_resets() -> None:
    reply = "554 5.7.1 no mail from you today"
    async with recorder(ReadRecorder(rcpt_reply={GONE: GONE_REPLY}, data_reply=reply)) as rec:
        ok, gone = await send(rec, OK, GONE)
        reads = await wait_reads(rec, 4)
    assert (ok.kind, ok.status, ok.text) == (
        "bounced", "5.7.1",
        f"host mx1.nausch.org[{HOST}] said: {reply} (in reply to DATA command)")
    assert gone == mixed_results(rec)[2]
    assert reads == [EHLO, MAIL + rcpt(OK) + rcpt(GONE) + b"DATA\r\n", b"RSET\r\n", b"QUIT\r\n"]


async def test_a_silent_server_times_out_per_reply() -> None:
    async with recorder(ReadRecorder(silent_after_mail=True)) as rec:
        results = await send(rec, OK, GONE, cfg=settings(rcpt_timeout=0.3))
        assert rec.reads == [[EHLO, MAIL + rcpt(OK) + rcpt(GONE) + b"DATA\r\n"]]
    assert [(r.kind, r.status, r.text) for r in results] == [(
        "deferred", "4.4.2",
        f"conversation with mx1.nausch.org[{HOST}] timed out while sending RCPT TO",
    )] * 2


async def test_pooled_session_is_reused_pipelined_without_rset() -> None:
    second = b"Subject: 2\r\n\r\n2\r\n"
    pool = ConnectionPool(idle_time=5.0)
    async with recorder(ReadRecorder()) as rec:
        first = await send(rec, OK, pool=pool)
        again = await send(rec, GONE, content=second, pool=pool)
        await pool.close_all()
        reads = await wait_reads(rec, 6)
    assert [r.kind for r in first + again] == ["delivered", "delivered"]
    assert len(rec.reads) == 1
    assert reads == [
        EHLO,
        MAIL + rcpt(OK) + b"DATA\r\n",
        encode_content(CONTENT),
        b"MAIL FROM:<alice@sender.example> SIZE=%d\r\n" % len(second) + rcpt(GONE)
        + b"DATA\r\n",
        encode_content(second),
        b"QUIT\r\n",
    ]
    assert [unstuff(m) for m in rec.messages] == [CONTENT, second]


async def test_recipient_limit_makes_one_group_per_transaction() -> None:
    addrs = [f"u{i}@nausch.org" for i in range(3)]
    async with recorder(ReadRecorder()) as rec:
        results = await send(rec, *addrs, cfg=settings(recipient_limit=2))
        reads = await wait_reads(rec, 6)
    assert [r.kind for r in results] == ["delivered"] * 3
    assert reads[1] == MAIL + rcpt(addrs[0]) + rcpt(addrs[1]) + b"DATA\r\n"
    assert reads[3] == MAIL + rcpt(addrs[2]) + b"DATA\r\n"


async def test_a_surprise_while_building_the_group_defers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backupmx.smtp.session import Connection

    def broken(*args: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(Connection, "rcpt_command", broken)
    async with recorder(ReadRecorder()) as rec:
        results = await send(rec, OK, GONE)
        reads = await wait_reads(rec, 1, EHLO)
    assert reads == [EHLO]
    assert [(r.kind, r.status, r.text) for r in results] == [(
        "deferred", "4.3.0",
        f"delivery via mx1.nausch.org[{HOST}] failed: RuntimeError('surprise')",
    )] * 2
    assert rec.messages == []
