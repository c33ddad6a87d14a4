"""SMTP smuggling (spec §9): no end-of-data variant lets a second message through.

Each test sends one message whose content carries a non-standard end-of-data
sequence followed by a complete second SMTP transaction, then the real end.
backupmx must accept exactly one message, and the primary must receive exactly
that one, with CRLF line ends only, so it cannot be smuggled either.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.util import Raw

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""

SMUGGLED = (
    b"MAIL FROM:<ceo@sender.example>\r\n"
    b"RCPT TO:<alice@nausch.org>\r\n"
    b"DATA\r\n"
    b"From: <ceo@sender.example>\r\nSubject: smuggled\r\n\r\nPay now.\r\n"
)

#: (name, bytes between the first message's text and the smuggled commands)
VARIANTS = [
    ("LF.LF", b"\n.\n"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CRLF.LF", b"\r\n.\n"),
    ("CRLF.CRCRLF", b"\r\n.\r\r\n"),
    ("CR.CR", b"\r.\r"),
    ("CRLF.CR", b"\r\n.\r"),
    ("CR.CRLF", b"\r.\r\n"),
    ("LF.CRCRLF", b"\n.\r\r\n"),
    ("CRLF.CRLF-stuffed-LF", b"\r\n..\n.\n"),
]


def transaction(mx, body: bytes) -> tuple[list[str], Raw]:
    """EHLO, MAIL, RCPT, DATA, ``body`` (sent as is); the replies up to the one after it."""
    c = Raw(mx)
    replies = [c.reply()]
    replies.append(c.cmd(b"EHLO client.example.net\r\n"))
    replies.append(c.cmd(b"MAIL FROM:<sender@sender.example>\r\n"))
    replies.append(c.cmd(b"RCPT TO:<alice@nausch.org>\r\n"))
    replies.append(c.cmd(b"DATA\r\n"))
    replies.append(c.cmd(body))
    return replies, c


def first_message(variant: bytes) -> bytes:
    return (
        b"From: <sender@sender.example>\r\nSubject: first\r\n\r\nHello."
        + variant + SMUGGLED + b".\r\n"
    )


@pytest.fixture
def mx(backupmx_factory, primary):
    return backupmx_factory(SEED)


@pytest.mark.parametrize(("name", "variant"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_smuggling_variant_yields_exactly_one_message(mx, primary, name, variant):
    replies, c = transaction(mx, first_message(variant))
    assert replies[4] == "354 End data with <CR><LF>.<CR><LF>"
    assert replies[5].startswith("250 2.0.0 Ok: queued as "), replies
    # Nothing of the smuggled transaction was executed: the next command is the next reply.
    assert c.cmd(b"NOOP\r\n") == "250 2.0.0 Ok"
    assert c.cmd(b"QUIT\r\n") == "221 2.0.0 Bye"
    c.close()
    got = primary.wait_for(1, timeout=30)
    time.sleep(1.0)  # a second message would have been delivered in the same run
    assert len(primary.messages) == 1
    data = got[0].data
    assert b"Subject: first\r\n" in data
    assert b"Pay now." in data  # smuggled text stayed content of the first message
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert got[0].mail_from == "sender@sender.example"
    sessions = primary.wait_for_sessions(1, timeout=30)
    mails = [cmd for s in sessions for cmd in s.commands if cmd.upper().startswith(b"MAIL")]
    assert len(mails) == 1


def test_standard_end_of_data_still_ends_the_message(mx, primary):
    replies, c = transaction(mx, b"Subject: plain\r\n\r\nHello.\r\n.\r\n")
    assert replies[5].startswith("250 2.0.0 Ok: queued as ")
    assert c.cmd(b"QUIT\r\n") == "221 2.0.0 Bye"
    c.close()
    assert primary.wait_for(1, timeout=30)[0].data.endswith(b"\r\n\r\nHello.\r\n")


def test_dot_LF_as_first_line_is_dropped_not_an_end(mx, primary):
    replies, c = transaction(mx, b".\nSubject: x\r\n\r\nbody\r\n.\r\n")
    assert replies[5].startswith("250 2.0.0 Ok: queued as ")
    c.close()
    data = primary.wait_for(1, timeout=30)[0].data
    assert data.endswith(b"Subject: x\r\n\r\nbody\r\n")


@pytest.fixture
def strict_mx(backupmx_factory, primary):
    return backupmx_factory(SEED + "smtpd_forbid_bare_newline = reject\n")


@pytest.mark.parametrize(
    ("name", "variant"), [v for v in VARIANTS if b"\n" in v[1].replace(b"\r\n", b"")],
    ids=[v[0] for v in VARIANTS if b"\n" in v[1].replace(b"\r\n", b"")],
)
def test_reject_mode_refuses_bare_LF_after_the_end(strict_mx, primary, name, variant):
    replies, c = transaction(strict_mx, first_message(variant))
    assert replies[5] == "550 5.5.2 mx1.tachtler.net Error: bare <LF> received"
    assert c.cmd(b"QUIT\r\n") == "221 2.0.0 Bye"
    c.close()
    # the server still serves the next client, and a clean message goes through
    replies, c = transaction(strict_mx, b"Subject: clean\r\n\r\nok\r\n.\r\n")
    assert replies[5].startswith("250 2.0.0 Ok: queued as ")
    c.close()
    got = primary.wait_for(1, timeout=30)
    time.sleep(1.0)
    assert len(primary.messages) == 1
    assert b"Subject: clean" in got[0].data


def test_reject_mode_521_disconnects(backupmx_factory, primary):
    mx = backupmx_factory(
        SEED + "smtpd_forbid_bare_newline = reject\n"
        "smtpd_forbid_bare_newline_reject_code = 521\n"
    )
    replies, c = transaction(mx, b"Subject: x\r\n\r\nbare\nline\r\n.\r\n")
    assert replies[5] == "521 5.5.2 mx1.tachtler.net Error: bare <LF> received"
    assert c.f.readline() == b""
    c.close()


def test_reject_mode_bare_LF_command_line_disconnects(strict_mx):
    c = Raw(strict_mx)
    c.reply()
    assert c.cmd(b"EHLO client.example.net\n") == (
        "550 5.5.2 mx1.tachtler.net Error: bare <LF> received"
    )
    assert c.f.readline() == b""
    c.close()
