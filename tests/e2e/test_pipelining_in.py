"""Pipelining by clients (RFC 2920): what is allowed, what is flagged, and
smtpd_forbid_unauth_pipelining, which disconnects a client at the first command that
comes ahead of its turn."""

from __future__ import annotations

import socket

from tests.e2e.util import OUTSIDE, Raw

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
FORBID = SEED + "smtpd_forbid_unauth_pipelining = yes\n"
BANNER = "220 mx1.tachtler.net ESMTP backupmx"
CLIENT = r"client\.example\.net\[127\.0\.0\.5\]"
SYNC = "554 5.5.0 Error: SMTP protocol synchronization"


def greeted(mx) -> Raw:
    c = Raw(mx)
    assert c.reply() == BANNER
    return c


def test_a_command_after_ehlo_in_the_same_write_is_refused_and_the_client_dropped(
        backupmx_factory):
    mx = backupmx_factory(FORBID)
    c = greeted(mx)
    c.send(b"EHLO client.example.net\r\nMAIL FROM:<sender@sender.example>\r\n")
    assert c.reply() == SYNC
    assert c.closed()
    c.close()
    assert mx.wait_log(rf"improper command pipelining after EHLO from {CLIENT}: .*$").group(0) \
        == ("improper command pipelining after EHLO from client.example.net[127.0.0.5]: "
            "MAIL FROM:<sender@sender.example>\\r\\n")
    mx.wait_log(rf"disconnect from {CLIENT} ehlo=0/1 commands=0/1$")


def test_a_pipelined_group_after_ehlo_is_allowed(backupmx_factory, primary):
    mx = backupmx_factory(FORBID)
    c = greeted(mx)
    assert c.cmd("EHLO client.example.net").startswith("250-")
    c.send(b"MAIL FROM:<sender@sender.example>\r\nRCPT TO:<alice@nausch.org>\r\nDATA\r\n")
    assert [c.reply(), c.reply(), c.reply()] == [
        "250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
    assert c.cmd(b"Subject: pipelined\r\n\r\nbody\r\n.\r\n").startswith("250 2.0.0 Ok: queued")
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    c.close()
    assert primary.wait_for(1)[0].rcpts == ["alice@nausch.org"]
    assert "improper command pipelining" not in mx.log_text()


def test_pipelining_after_helo_is_refused(backupmx_factory):
    """Without EHLO no PIPELINING was offered: MAIL may not come with RCPT behind it."""
    mx = backupmx_factory(FORBID)
    c = greeted(mx)
    assert c.cmd("HELO client.example.net") == "250 mx1.tachtler.net"
    c.send(b"MAIL FROM:<sender@sender.example>\r\nRCPT TO:<alice@nausch.org>\r\n")
    assert c.reply() == SYNC
    assert c.closed()
    c.close()
    mx.wait_log(rf"improper command pipelining after MAIL from {CLIENT}: "
                r"RCPT TO:<alice@nausch\.org>\\r\\n$")


def test_talking_before_the_greeting_is_refused(backupmx_factory):
    mx = backupmx_factory(FORBID)
    sock = socket.create_connection((mx.host, mx.port), timeout=30,
                                    source_address=(OUTSIDE, 0))
    sock.sendall(b"EHLO client.example.net\r\n")  # while its name is still being looked up
    f = sock.makefile("rb")
    assert f.readline() == (SYNC + "\r\n").encode()
    assert f.readline() == b""
    f.close()
    sock.close()
    mx.wait_log(rf"improper command pipelining after CONNECT from {CLIENT}: "
                r"EHLO client\.example\.net\\r\\n$")


def test_without_forbid_the_flag_is_for_reject_unauth_pipelining(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtpd_data_restrictions = reject_unauth_pipelining\n")
    c = greeted(mx)
    c.send(b"EHLO client.example.net\r\nMAIL FROM:<sender@sender.example>\r\n")
    assert c.reply().startswith("250-mx1.tachtler.net\n250-PIPELINING")
    assert c.reply() == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@nausch.org>") == "250 2.1.5 Ok"
    assert c.cmd("DATA") == ("503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP "
                             "command pipelining")
    c.close()
    mx.wait_log(rf"improper command pipelining after EHLO from {CLIENT}: MAIL FROM:")
    assert primary.messages == []
