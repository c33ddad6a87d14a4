"""Property tests: hostile input never raises out of the parsers, and always gets a reply."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupmx import addr, config, services
from backupmx.config.params import PARAMS
from backupmx.smtpd.conn import Conn
from backupmx.smtpd.session import DataReader
from tests.unit.smtpd.fake import FakeServer, FakeTransport, converse, final_replies

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

VERBS = ["HELO", "EHLO", "MAIL", "RCPT", "RSET", "NOOP", "VRFY", "HELP", "ETRN", "STARTTLS",
         "AUTH", "BDAT", "EXPN", "mail", "rcpt", "XYZ", "QUITX"]
ARGS = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=80),
    st.sampled_from(["FROM:<a@b.example>", "TO:<u@nausch.org>", "FROM:<>", "TO:<postmaster>",
                     "FROM:<a@b> SIZE=99999999999", "TO:<x@y> NOTIFY=NEVER ORCPT=rfc822;x",
                     "FROM:<\"q\\\"x\"@[1.2.3.4]> BODY=8BITMIME RET=FULL ENVID=x+2B",
                     "TO:<@a,@b:u@nausch.org>", "FROM:<a@b> SMTPUTF8", "nausch.org"]),
)


@SETTINGS
@given(st.text(max_size=300), st.booleans())
def test_parse_path_raises_only_syntax_errors(text, strict):
    try:
        parsed = addr.parse_path(text, strict=strict)
    except addr.AddressSyntaxError:
        return
    assert isinstance(parsed.address, str)
    addr.domain_ok(parsed.address)


command_line = st.one_of(
    st.builds(lambda v, a: (v + " " + a).encode("utf-8", "surrogatepass"), st.sampled_from(VERBS),
              ARGS),
    st.binary(max_size=60).map(lambda b: b"NOOP " + b.replace(b"\n", b"")),
    st.integers(2040, 2100).map(lambda n: b"NOOP " + b"x" * n),
)


@SETTINGS
@given(st.lists(command_line, max_size=25))
def test_every_command_line_gets_one_reply(lines):
    server = FakeServer("smtpd_hard_error_limit = 1000\nsmtpd_soft_error_limit = 1000\n")
    data = b"".join(line + b"\r\n" for line in lines) + b"QUIT\r\n"
    out = asyncio.run(converse(server, data))
    replies = final_replies(out)
    assert not any(r.startswith("421 4.3.0") for r in replies), replies  # no internal error
    assert replies[0] == "220 mx1.tachtler.net ESMTP backupmx"
    assert len(replies) == len(lines) + 2, (lines, replies)
    assert replies[-1] == "221 2.0.0 Bye"


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=12), st.binary(max_size=200))
def test_arbitrary_bytes_never_break_the_session(lines, tail):
    server = FakeServer("")
    out = asyncio.run(converse(server, b"\r\n".join(lines) + tail))
    replies = final_replies(out)
    assert replies[0] == "220 mx1.tachtler.net ESMTP backupmx"
    assert not any(r.startswith("421 4.3.0") for r in replies), replies


async def _read_chunked(chunks: list[bytes], mode: str, limit: int, header: int) -> bytes:
    async def nothing(_: Conn) -> None:
        return None

    conn = Conn(nothing)
    conn.transport = FakeTransport()
    reader = DataReader(mode, 0, header)
    for chunk in chunks:
        conn.data_received(chunk)
        while b"\n" in conn.buf or len(conn.buf) >= limit:
            if reader.feed(await conn.read_records(limit, 1)):
                return reader.content()
    raise AssertionError("no end of data")


@SETTINGS
@given(
    st.binary(max_size=400),
    st.lists(st.integers(1, 50), max_size=20),
    st.sampled_from(["normalize", "reject", "no"]),
    st.integers(4, 64),
    st.integers(0, 100),
)
def test_data_reader_ends_at_the_dot_whatever_the_chunking(body, cuts, mode, limit, header):
    stream = body.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r") + b"\r\n.\r\n"
    stream = b"x" + stream if not body.startswith(b".") else stream
    whole = asyncio.run(_read_chunked([stream], mode, limit, header))
    chunks, pos = [], 0
    for c in cuts:
        chunks.append(stream[pos:pos + c])
        pos += c
    chunks.append(stream[pos:])
    chunked = asyncio.run(_read_chunked([c for c in chunks if c], mode, limit, header))
    if mode == "no":
        return  # any ".<LF>" line may end it early; that is mode no's (documented) weakness
    assert chunked == whole
    assert b"\n" not in whole.replace(b"\r\n", b"")
    assert b"\r" not in whole.replace(b"\r\n", b"")


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from(["normalize", "reject", "no"]))
def test_data_reader_never_raises_on_any_records(raw, mode):
    r = DataReader(mode, 100, 50)
    recs = []
    for line in raw.split(b"\n"):
        recs.append((line.rstrip(b"\r"), not line.endswith(b"\r"), bool(line) and line[-1] != 0))
    r.feed(recs)
    assert len(r.content()) <= 100 + 2


names = st.sampled_from(sorted(PARAMS))
assignment = st.builds(lambda n, v: f"{n} = {v}", names,
                       st.text(alphabet=st.characters(blacklist_characters="\n\x00"), max_size=40))
junk = st.text(max_size=60)


@SETTINGS
@given(st.lists(st.one_of(assignment, junk), max_size=15))
def test_config_parser_raises_only_config_errors(lines):
    text = "\n".join(lines)
    try:
        cfg = config.parse(text)
    except config.ConfigError as e:
        assert str(e)
        return
    try:
        services.build(cfg)
    except config.ConfigError:
        pass
