"""Pipelined replies without a socket: parsing, queueing, and which reply goes to whom."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from backupmx.envelope import Envelope, Recipient
from backupmx.outcome import Outcome, Stage
from backupmx.smtp.client import _Attempt
from backupmx.smtp.nexthop import Server
from backupmx.smtp.session import (
    ClientSettings,
    Command,
    Pipeline,
    ReplyReader,
    SessionFailure,
    parse_reply,
)


def test_parse_reply_takes_one_reply_and_leaves_the_rest() -> None:
    buf = bytearray(b"250 2.1.0 Ok\r\n550-5.1.1 first\r\n550 5.1.1 second\r\n354 go")
    assert parse_reply(buf) == SMTPResponse(250, "2.1.0 Ok")
    assert parse_reply(buf) == SMTPResponse(550, "5.1.1 first\n5.1.1 second")
    assert parse_reply(buf) is None
    assert buf == bytearray(b"354 go")
    buf += b"\r\n"
    assert parse_reply(buf) == SMTPResponse(354, "go")
    assert buf == bytearray()


def test_parse_reply_waits_for_the_last_line_of_a_multiline_reply() -> None:
    buf = bytearray(b"250-mx1\r\n250-PIPE")
    assert parse_reply(buf) is None
    assert buf == bytearray(b"250-mx1\r\n250-PIPE")


def test_parse_reply_reads_like_aiosmtplib() -> None:
    # the same text aiosmtplib gives for the lock-step path: trailing blanks go, a bare LF ends
    buf = bytearray(b"250-first  \t\r\n250 last \n")
    assert parse_reply(buf) == SMTPResponse(250, "first\nlast")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello there\r\n", "Malformed SMTP response line: hello there\r\n"),
        (b"250 " + b"x" * 8200 + b"\r\n", "Response too long"),
        (b"250-" + b"x" * 8000 + b"\r\n" + (b"250-" + b"y" * 8000 + b"\r\n") * 4,
         "Response too long"),
    ],
)
def test_parse_reply_malformed(data: bytes, message: str) -> None:
    with pytest.raises(aiosmtplib.SMTPResponseException) as err:
        parse_reply(bytearray(data))
    assert (err.value.code, err.value.message) == (-1, message)


def test_command_line_and_injection() -> None:
    cmd = Command("sending RCPT TO", 300.0, (b"RCPT", b"TO:<a@nausch.org>", b"NOTIFY=NEVER"))
    assert cmd.line() == b"RCPT TO:<a@nausch.org> NOTIFY=NEVER\r\n"
    with pytest.raises(ValueError, match="prohibited control character"):
        Command("sending RCPT TO", 300.0, (b"RCPT", b"TO:<a@x>\r\nDATA")).line()


def reader() -> tuple[ReplyReader, list[SMTPProtocol]]:
    lost: list[SMTPProtocol] = []
    inner = SMTPProtocol(loop=asyncio.get_running_loop(), connection_lost_callback=lost.append)
    return ReplyReader(inner), lost


async def test_reader_hands_out_replies_split_over_reads_in_order() -> None:
    r, _ = reader()
    r.data_received(b"250 2.1.0 Ok\r\n25")
    r.data_received(b"0 2.1.5 Ok\r\n450 4.2.0 later\r\n354")
    assert await r.next(1.0) == SMTPResponse(250, "2.1.0 Ok")
    assert await r.next(1.0) == SMTPResponse(250, "2.1.5 Ok")
    assert await r.next(1.0) == SMTPResponse(450, "4.2.0 later")
    waiting = asyncio.ensure_future(r.next(5.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    r.data_received(b" go ahead\r\n")
    assert await waiting == SMTPResponse(354, "go ahead")


async def test_reader_gives_replies_before_the_hangup() -> None:
    r, lost = reader()
    r.data_received(b"421 4.3.2 closing\r\n")
    assert r.eof_received() is False
    r.connection_lost(None)
    assert lost == [r._inner]  # aiosmtplib learns that the connection is gone
    assert await r.next(1.0) == SMTPResponse(421, "4.3.2 closing")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected, match="Unexpected EOF received"):
        await r.next(1.0)


async def test_reader_times_out_without_a_complete_reply() -> None:
    r, _ = reader()
    r.data_received(b"250 2.1.0 Ok\r\n250 half")
    assert await r.next(1.0) == SMTPResponse(250, "2.1.0 Ok")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await r.next(0.2)
    assert time.monotonic() - started >= 0.19


async def test_reader_malformed_reply_after_good_ones() -> None:
    r, _ = reader()
    r.data_received(b"250 2.1.0 Ok\r\nxyz\r\n250 2.1.5 Ok\r\n")
    assert await r.next(1.0) == SMTPResponse(250, "2.1.0 Ok")
    with pytest.raises(aiosmtplib.SMTPResponseException) as err:
        await r.next(1.0)
    assert err.value.code == -1


SERVER = Server("mx1.nausch.org", "127.0.0.2", 25, 10)
RELAY = "mx1.nausch.org[127.0.0.2]:25"
MAIL = Command("sending MAIL FROM", 300.0, (b"MAIL", b"FROM:<alice@sender.example>"))


def attempt(*addrs: str) -> tuple[_Attempt, list[Command]]:
    env = Envelope(id="3C1F51A2B3", sender="alice@sender.example",
                   recipients=[Recipient(a) for a in addrs], arrival=time.time())
    rcpts = [Command("sending RCPT TO", 300.0, (b"RCPT", f"TO:<{a}>".encode())) for a in addrs]
    return _Attempt(env.sender, env.recipients, b"x\r\n", env,
                    ClientSettings(helo_name="mx1.tachtler.net"), None), rcpts


def replies(pairs: list[tuple[Command, str]]) -> Callable[[Command], Awaitable[SMTPResponse]]:
    """A reply source that checks it is asked for the commands in the order sent."""
    due = list(pairs)

    async def reply(command: Command) -> SMTPResponse:
        expected, text = due.pop(0)
        assert command is expected
        code, _, message = text.partition(" ")
        return SMTPResponse(int(code), message)

    return reply


async def test_each_rcpt_reply_goes_to_its_recipient() -> None:
    a, rcpts = attempt("ok@nausch.org", "later@nausch.org", "gone@nausch.org", "odd@nausch.org")
    source = replies([(MAIL, "250 2.1.0 Ok"), (rcpts[0], "250 2.1.5 Ok"),
                      (rcpts[1], "450 4.2.0 try later"), (rcpts[2], "550 5.1.1 unknown"),
                      (rcpts[3], "299 odd but fine")])
    accepted = await a._envelope(SERVER, [0, 1, 2, 3], [], MAIL, rcpts, source)
    assert accepted == [0, 3]
    assert a.done == {
        1: Outcome("deferred", "4.2.0", "host mx1.nausch.org[127.0.0.2] said: "
                   "450 4.2.0 try later (in reply to RCPT TO command)", Stage.RECIPIENT, RELAY,
                   "smtp; 450 4.2.0 try later", replied=True),
        2: Outcome("bounced", "5.1.1", "host mx1.nausch.org[127.0.0.2] said: "
                   "550 5.1.1 unknown (in reply to RCPT TO command)", Stage.RECIPIENT, RELAY,
                   "smtp; 550 5.1.1 unknown", replied=True),
    }


async def test_garbage_rcpt_reply_is_transient() -> None:
    a, rcpts = attempt("a@nausch.org")
    source = replies([(MAIL, "250 2.1.0 Ok"), (rcpts[0], "600 what")])
    assert await a._envelope(SERVER, [0], [], MAIL, rcpts, source) == []
    assert (a.done[0].kind, a.done[0].status) == ("deferred", "4.5.0")


@pytest.mark.parametrize(("reply", "permanent", "status"),
                         [("553 5.7.1 sender rejected", True, "5.7.1"),
                          ("451 4.3.0 try later", False, "4.3.0")])
async def test_mail_reply_decides_for_the_whole_batch(
    reply: str, permanent: bool, status: str
) -> None:
    a, rcpts = attempt("a@nausch.org", "b@nausch.org")
    with pytest.raises(SessionFailure) as err:
        await a._envelope(SERVER, [0, 1], [], MAIL, rcpts, replies([(MAIL, reply)]))
    assert (err.value.permanent, err.value.status, err.value.text, err.value.diagnostic) == (
        permanent, status,
        f"host mx1.nausch.org[127.0.0.2] said: {reply} (in reply to MAIL FROM command)",
        f"smtp; {reply}",
    )
    assert a.done == {}


async def test_rcpt_421_ends_the_session_keeping_earlier_results() -> None:
    a, rcpts = attempt("gone@nausch.org", "b@nausch.org", "c@nausch.org")
    source = replies([(MAIL, "250 2.1.0 Ok"), (rcpts[0], "550 5.1.1 unknown"),
                      (rcpts[1], "421 4.7.0 closing")])
    with pytest.raises(SessionFailure) as err:
        await a._envelope(SERVER, [0, 1, 2], [], MAIL, rcpts, source)
    assert (err.value.permanent, err.value.status, err.value.text) == (
        False, "4.7.0",
        "host mx1.nausch.org[127.0.0.2] said: 421 4.7.0 closing (in reply to RCPT TO command)")
    assert list(a.done) == [0]


async def test_pipeline_refuses_replies_out_of_order() -> None:
    r, _ = reader()
    rcpt = Command("sending RCPT TO", 300.0, (b"RCPT", b"TO:<a@nausch.org>"))
    group = Pipeline(None, r, [MAIL, rcpt])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="read out of order"):
        await group.reply(rcpt)
