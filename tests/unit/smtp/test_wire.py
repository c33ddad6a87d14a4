"""The bytes and words of the delivery client, without a socket."""

from __future__ import annotations

import pytest

from backupmx.envelope import Envelope, Recipient
from backupmx.smtp.wire import (
    encode_content,
    mail_options,
    one_line,
    rcpt_options,
    said,
    size_limit,
    status_of,
    xtext,
)


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".foo\r\n.\r\n..\r\nx.y\r\n", b"..foo\r\n..\r\n...\r\nx.y\r\n.\r\n"),
        (b"a\r\n\r\n", b"a\r\n\r\n.\r\n"),
        (b"bare\rcr and \n lf\r\n", b"bare\rcr and \n lf\r\n.\r\n"),
    ],
)
def test_encode_content(content: bytes, wire: bytes) -> None:
    assert encode_content(content) == wire


def test_long_lines_are_folded_with_crlf_space() -> None:
    assert encode_content(b"abcdefghij\r\n", line_limit=4) == (
        b"abcd\r\n efg\r\n hij\r\n.\r\n"
    )
    assert encode_content(b".bcdefg\r\n", line_limit=4) == b"..bcd\r\n efg\r\n.\r\n"
    assert encode_content(b"x" * 998 + b"\r\n") == b"x" * 998 + b"\r\n.\r\n"
    assert encode_content(b"x" * 999 + b"\r\n") == b"x" * 998 + b"\r\n x\r\n.\r\n"
    assert encode_content(b"abcdefghij\r\n", line_limit=0) == b"abcdefghij\r\n.\r\n"


def test_xtext() -> None:
    assert xtext("bob+tag@nausch.org") == "bob+2Btag@nausch.org"
    assert xtext("a=b c@x") == "a+3Db+20c@x"
    assert xtext("jörg@x") == "j+C3+B6rg@x"


def env(**kw: object) -> Envelope:
    return Envelope(id="3C1F51A2B3", sender="alice@sender.example", recipients=[],
                    arrival=0.0, **kw)  # type: ignore[arg-type]


def test_mail_options_only_when_offered() -> None:
    e = env(body="8BITMIME", smtputf8=True, ret="HDRS", envid="abc+2B1")
    all_ext = {"size": "10240000", "8bitmime": "", "smtputf8": "", "dsn": ""}
    assert mail_options(e, 1234, all_ext) == [
        "SIZE=1234", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=abc+2B1"]
    assert mail_options(e, 1234, {}) == []
    assert mail_options(env(body="7BIT"), 5, all_ext) == ["SIZE=5"]


def test_rcpt_options() -> None:
    dsn = {"dsn": ""}
    assert rcpt_options(Recipient("bob@nausch.org"), dsn) == ["ORCPT=rfc822;bob@nausch.org"]
    r = Recipient("bob@nausch.org", orcpt="rfc822;Bob@Nausch.org", notify="SUCCESS,FAILURE")
    assert rcpt_options(r, dsn) == ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@Nausch.org"]
    assert rcpt_options(r, {"size": ""}) == []


def test_size_limit() -> None:
    assert size_limit({"size": "10240000"}) == 10240000
    assert size_limit({"size": ""}) == 0
    assert size_limit({}) == 0


def test_reply_texts() -> None:
    assert one_line(550, "5.1.1 <x@nausch.org>: Recipient\naddress rejected") == (
        "550 5.1.1 <x@nausch.org>: Recipient address rejected")
    assert said("mx1.nausch.org[127.0.0.2]", 550, "5.1.1 <x>: no such user", "RCPT TO") == (
        "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <x>: no such user "
        "(in reply to RCPT TO command)")


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        (250, "2.0.0 Ok: queued as X", "2.0.0"),
        (250, "Ok", "2.0.0"),
        (550, "5.1.1 no", "5.1.1"),
        (450, "Try later", "4.0.0"),
        (450, "5.7.1 wrong class", "4.7.1"),
        (354, "go ahead", "4.5.0"),
    ],
)
def test_status_of(code: int, message: str, status: str) -> None:
    assert status_of(code, message) == status
