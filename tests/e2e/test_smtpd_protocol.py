"""The SMTP dialogue itself: commands, replies and enhanced status codes, over TCP."""

from __future__ import annotations

import pytest

from tests.e2e.util import Raw

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""


@pytest.fixture
def mx(backupmx_factory, primary):
    return backupmx_factory(SEED + "message_size_limit = 100000\n")


@pytest.fixture
def c(mx):
    client = Raw(mx)
    assert client.reply_lines() == ["220 mx1.tachtler.net ESMTP backupmx"]
    yield client
    client.close()


def test_ehlo_lists_the_extensions_in_postfix_order(c):
    assert c.cmd_lines("EHLO client.example.net") == [
        "250-mx1.tachtler.net",
        "250-PIPELINING",
        "250-SIZE 100000",
        "250-VRFY",
        "250-ETRN",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250-DSN",
        "250 SMTPUTF8",
    ]


@pytest.mark.parametrize(
    "command,reply",
    [
        ("HELO", "501 Syntax: HELO hostname"),
        ("EHLO", "501 Syntax: EHLO hostname"),
        ("NOOP", "250 2.0.0 Ok"),
        ("RSET", "250 2.0.0 Ok"),
        ("RSET x", "501 5.5.4 Syntax: RSET"),
        ("VRFY", "501 5.5.4 Syntax: VRFY address [SMTPUTF8]"),
        ("RCPT TO:<alice@nausch.org>", "503 5.5.1 Error: need MAIL command"),
        ("DATA", "503 5.5.1 Error: need RCPT command"),
        ("MAIL TO:<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:<bad", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a@192.0.2.1>", "501 5.1.7 Bad sender address syntax"),
        ("XYZZY", "500 5.5.2 Error: command not recognized"),
        ("STARTTLS", "502 5.5.1 Error: command not implemented"),
        ("AUTH PLAIN", "503 5.5.1 Error: authentication not enabled"),
        ("HELP", "214 2.0.0 Commands: DATA EHLO ETRN HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"),
        ("ETRN nausch.org", "459 <nausch.org>: service unavailable"),
        ("ETRN", "500 Syntax: ETRN domain"),
        ("VRFY alice@nausch.org", "252 2.0.0 <alice@nausch.org>"),
        ("VRFY x@foreign.example", "554 5.7.1 <x@foreign.example>: Relay access denied"),
    ],
)
def test_single_command_replies(c, command, reply):
    c.cmd_lines("EHLO client.example.net")
    assert c.cmd_lines(command) == [reply]


def test_transaction_errors(c):
    c.cmd_lines("EHLO client.example.net")
    assert c.cmd_lines("MAIL FROM:<s@sender.example> SIZE=200000") == [
        "552 5.3.4 Message size exceeds fixed limit"
    ]
    assert c.cmd_lines("MAIL FROM:<s@sender.example> SIZE=abc") == [
        "501 5.5.4 Bad message size syntax"
    ]
    assert c.cmd_lines("MAIL FROM:<s@sender.example> FOO=bar") == [
        "555 5.5.4 Unsupported option: FOO=bar"
    ]
    assert c.cmd_lines("MAIL FROM:<s@sender.example> BODY=8BITMIME SMTPUTF8") == ["250 2.1.0 Ok"]
    assert c.cmd_lines("MAIL FROM:<s@sender.example>") == ["503 5.5.1 Error: nested MAIL command"]
    assert c.cmd_lines("RCPT TO:<>") == ["501 5.1.3 Bad recipient address syntax"]
    assert c.cmd_lines("RCPT alice@nausch.org") == ["501 5.5.4 Syntax: RCPT TO:<address>"]
    assert c.cmd_lines("RCPT TO:<alice@nausch.org> NOTIFY=SOMETIMES") == [
        "501 5.5.4 Error: Bad NOTIFY parameter syntax"
    ]
    assert c.cmd_lines("RCPT TO:<alice@nausch.org> ORCPT=junk") == [
        "501 5.5.4 Error: Bad ORCPT parameter syntax"
    ]
    assert c.cmd_lines("DATA") == ["554 5.5.1 Error: no valid recipients"]
    assert c.cmd_lines("RCPT TO:<alice@nausch.org> NOTIFY=NEVER") == ["250 2.1.5 Ok"]
    assert c.cmd_lines("DATA x") == ["501 5.5.4 Syntax: DATA"]
    assert c.cmd_lines("ETRN nausch.org") == ["503 Error: MAIL transaction in progress"]
    assert c.cmd_lines("QUIT") == ["221 2.0.0 Bye"]


def test_pipelined_transaction_gets_all_replies_in_order(c):
    c.cmd_lines("EHLO client.example.net")
    c.sock.sendall(
        b"MAIL FROM:<s@sender.example>\r\nRCPT TO:<alice@nausch.org>\r\n"
        b"RCPT TO:<x@foreign.example>\r\nDATA\r\n"
    )
    assert c.reply_lines() == ["250 2.1.0 Ok"]
    assert c.reply_lines() == ["250 2.1.5 Ok"]
    assert c.reply_lines() == ["554 5.7.1 <x@foreign.example>: Relay access denied"]
    assert c.reply_lines() == ["354 End data with <CR><LF>.<CR><LF>"]
    c.sock.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert c.reply_lines()[0].startswith("250 2.0.0 Ok: queued as ")


def test_oversize_message_is_read_to_the_end_then_refused(c):
    c.cmd_lines("EHLO client.example.net")
    c.cmd_lines("MAIL FROM:<s@sender.example>")
    c.cmd_lines("RCPT TO:<alice@nausch.org>")
    assert c.cmd_lines("DATA") == ["354 End data with <CR><LF>.<CR><LF>"]
    c.sock.sendall(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 120 + b".\r\n")
    assert c.reply_lines() == ["552 5.3.4 Error: message file too big"]
    assert c.cmd_lines("NOOP") == ["250 2.0.0 Ok"]


def test_http_request_is_answered_and_disconnected(c):
    assert c.cmd_lines("GET / HTTP/1.0") == ["221 2.7.0 Error: I can break rules, too. Goodbye."]
    assert c.closed()


def test_hop_count_limit(c):
    c.cmd_lines("EHLO client.example.net")
    c.cmd_lines("MAIL FROM:<s@sender.example>")
    c.cmd_lines("RCPT TO:<alice@nausch.org>")
    c.cmd_lines("DATA")
    c.sock.sendall(b"Received: from x\r\n" * 49 + b"Subject: loop\r\n\r\nbody\r\n.\r\n")
    assert c.reply_lines() == ["554 5.4.0 Error: too many hops"]


def test_long_command_line_is_cut_with_one_reply(c):
    c.cmd_lines("EHLO client.example.net")
    assert c.cmd_lines("NOOP " + "x" * 5000) == ["250 2.0.0 Ok"]
    assert c.cmd_lines("NOOP") == ["250 2.0.0 Ok"]


def test_hard_error_limit_disconnects(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtpd_hard_error_limit = 3\nsmtpd_soft_error_limit = 100\n")
    c = Raw(mx)
    c.reply_lines()
    for _ in range(3):
        assert c.cmd_lines("XYZZY") == ["500 5.5.2 Error: command not recognized"]
    assert c.cmd_lines("NOOP") == ["421 4.7.0 mx1.tachtler.net Error: too many errors"]
    assert c.closed()
