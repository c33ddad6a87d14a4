"""Each server limit hit over TCP: Postfix's exact reply, and the next client is served."""

from __future__ import annotations

import socket
import time

import pytest

from tests.e2e.util import OUTSIDE, Raw, message, send

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
HOST = "mx1.tachtler.net"


def served(mx, source: str = OUTSIDE) -> None:
    """A fresh client gets the banner and a working session."""
    c = Raw(mx, source)
    try:
        assert c.reply() == f"220 {HOST} ESMTP backupmx"
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
        assert c.cmd("QUIT") == "221 2.0.0 Bye"
    finally:
        c.close()


def session(mx, source: str = OUTSIDE) -> Raw:
    c = Raw(mx, source)
    assert c.reply() == f"220 {HOST} ESMTP backupmx"
    assert c.cmd("EHLO client.example.net").startswith("250-")
    return c


def test_size_parameter_over_the_limit(backupmx_factory):
    mx = backupmx_factory(SEED + "message_size_limit = 50000\n")
    c = session(mx)
    assert c.cmd("MAIL FROM:<s@sender.example> SIZE=50001") == (
        "552 5.3.4 Message size exceeds fixed limit"
    )
    assert c.cmd("MAIL FROM:<s@sender.example> SIZE=50000") == "250 2.1.0 Ok"
    c.close()
    served(mx)


def test_content_over_the_limit(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "message_size_limit = 20000\n")
    out = send(mx, "s@sender.example", ["alice@nausch.org"], message(body="x" * 70 + "\r\n") * 300)
    assert out.data == (552, b"5.3.4 Error: message file too big")
    served(mx)


def test_recipient_limit(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_recipient_limit = 3\n")
    c = session(mx)
    assert c.cmd("MAIL FROM:<s@sender.example>") == "250 2.1.0 Ok"
    for i in range(3):
        assert c.cmd(f"RCPT TO:<u{i}@nausch.org>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<u9@nausch.org>") == "452 4.5.3 Error: too many recipients"
    c.close()
    served(mx)


def test_recipients_beyond_the_limit_are_no_errors_up_to_the_overshoot_limit(
        backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtpd_recipient_limit = 2\nsmtpd_recipient_overshoot_limit = 2\n"
                                 "smtpd_hard_error_limit = 2\n")
    c = session(mx)
    assert c.cmd("MAIL FROM:<s@sender.example>") == "250 2.1.0 Ok"
    replies = [c.cmd(f"RCPT TO:<u{i}@nausch.org>") for i in range(5)]
    assert replies == ["250 2.1.5 Ok"] * 2 + ["452 4.5.3 Error: too many recipients"] * 3
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"  # one error so far, not two
    assert c.cmd(message() + b".\r\n").startswith("250 2.0.0 Ok: queued as ")
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    c.close()
    assert primary.wait_for(1)[0].rcpts == ["u0@nausch.org", "u1@nausch.org"]
    mx.wait_log(r"disconnect from client\.example\.net\[127\.0\.0\.5\] ehlo=1 mail=1 "
                r"rcpt=4/5 data=1 quit=1 commands=8/9$")


def test_junk_commands_beyond_the_limit_count_as_errors(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtpd_junk_command_limit = 2\nsmtpd_hard_error_limit = 3\n")
    c = session(mx)  # EHLO is the first junk command
    for _ in range(5):  # the 4th, 5th and 6th are one error each
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.reply() == f"421 4.7.0 {HOST} Error: too many errors"
    assert c.closed()
    c.close()
    mx.wait_log(r"too many errors after NOOP from client\.example\.net\[127\.0\.0\.5\]")
    # a delivered message forgives the errors and the junk commands so far
    c = session(mx)
    for _ in range(4):
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("MAIL FROM:<s@sender.example>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@nausch.org>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354 ")
    assert c.cmd(message() + b".\r\n").startswith("250 2.0.0 Ok: queued as ")
    for _ in range(5):
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    c.close()


def test_long_command_line_unknown_command_and_http(backupmx_factory):
    mx = backupmx_factory(SEED)
    c = session(mx)
    assert c.cmd("NOOP " + "x" * 5000) == "250 2.0.0 Ok"  # cut at 2048, rest skipped
    assert c.cmd("NOOP") == "250 2.0.0 Ok"  # exactly one reply for the long line
    assert c.cmd("XYZZY") == "500 5.5.2 Error: command not recognized"
    assert c.cmd("CONNECT 10.0.0.1:25 HTTP/1.0") == (
        "221 2.7.0 Error: I can break rules, too. Goodbye."
    )
    assert c.closed()
    c.close()
    c = Raw(mx)
    c.reply()
    assert c.cmd("GET / HTTP/1.0") == "221 2.7.0 Error: I can break rules, too. Goodbye."
    c.close()
    served(mx)


def test_header_size_limit_truncates_the_header(backupmx_factory, primary):
    # 900 < smtp_line_length_limit (998): delivery does not fold the cut line
    mx = backupmx_factory(SEED + "header_size_limit = 900\n")
    long_subject = "Subject: " + "s" * 3000
    folded = "X-Folded: start\r\n" + "".join(f"\t{'f' * 300}\r\n" for _ in range(10))
    data = (
        f"From: <s@sender.example>\r\n{long_subject}\r\n{folded}To: <alice@nausch.org>\r\n"
        "\r\nbody\r\n"
    ).encode()
    out = send(mx, "s@sender.example", ["alice@nausch.org"], data)
    assert out.data is not None and out.data[0] == 250
    got = primary.wait_for(1, timeout=30)[0].data
    assert b"\r\n" + long_subject[:900].encode() + b"\r\nX-Folded: start\r\n" in got
    # 15 ("X-Folded: start") + 2 x (1 + 301) = 619; the 3rd line keeps 900 - 620 = 280 bytes
    kept = "X-Folded: start\r\n" + f"\t{'f' * 300}\r\n" * 2 + "\t" + "f" * 279 + "\r\n"
    assert (kept + "To: <alice@nausch.org>\r\n\r\nbody\r\n").encode() in got


def test_idle_timeout(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_timeout = 2s\n")
    c = session(mx)
    t0 = time.monotonic()
    assert c.reply() == f"421 4.4.2 {HOST} Error: timeout exceeded"
    assert 1.5 < time.monotonic() - t0 < 10
    c.close()
    served(mx)


def test_trickled_command_line_hits_the_per_command_deadline(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_timeout = 3s\n")
    c = session(mx)
    t0 = time.monotonic()
    c.sock.settimeout(0.8)
    got = b""
    for _ in range(30):  # one byte every 0.5 s: each wait is short, the line never ends
        try:
            c.sock.sendall(b"N")
        except OSError:
            break
        try:
            got += c.sock.recv(200)
        except TimeoutError:
            pass
        if got:
            break
    elapsed = time.monotonic() - t0
    assert got == f"421 4.4.2 {HOST} Error: timeout exceeded\r\n".encode()
    assert 2.5 < elapsed < 9
    c.close()
    mx.wait_log(r"timeout after EHLO from client\.example\.net\[127\.0\.0\.5\]")
    served(mx)


def test_session_time_limit(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_session_time_limit = 4s\n")
    c = session(mx)
    t0 = time.monotonic()
    replies = []
    for _ in range(20):
        r = c.cmd("NOOP")
        replies.append(r)
        if r.startswith("421"):
            break
        time.sleep(0.5)
    assert replies[-1] == f"421 4.4.2 {HOST} Error: timeout exceeded"
    assert set(replies[:-1]) == {"250 2.0.0 Ok"}
    assert 3 < time.monotonic() - t0 < 12
    c.close()
    mx.wait_log(r"session time limit exceeded after NOOP from client\.example\.net")
    served(mx)


def test_soft_error_limit_tarpits(backupmx_factory):
    mx = backupmx_factory(
        SEED + "smtpd_soft_error_limit = 2\nsmtpd_error_sleep_time = 1s\n"
    )
    c = session(mx)
    t0 = time.monotonic()
    assert c.cmd("XYZZY") == "500 5.5.2 Error: command not recognized"
    assert time.monotonic() - t0 < 0.9
    t1 = time.monotonic()
    assert c.cmd("XYZZY") == "500 5.5.2 Error: command not recognized"
    assert time.monotonic() - t1 >= 0.9
    c.close()
    served(mx)


def test_hard_error_limit(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_hard_error_limit = 3\nsmtpd_soft_error_limit = 10\n")
    c = session(mx)
    for _ in range(3):
        assert c.cmd("XYZZY") == "500 5.5.2 Error: command not recognized"
    assert c.reply() == f"421 4.7.0 {HOST} Error: too many errors"
    assert c.closed()
    c.close()
    served(mx)


def test_connection_count_limit(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_client_connection_count_limit = 2\n")
    open_ = [session(mx), session(mx)]
    c = Raw(mx)
    assert c.reply() == f"421 4.7.0 {HOST} Error: too many connections from 127.0.0.5"
    assert c.closed()
    c.close()
    served(mx, "127.0.0.6")  # another client is not affected
    served(mx, "127.0.0.1")  # mynetworks is exempt
    open_[0].close()
    mx.wait_log(r"disconnect from client\.example\.net\[127\.0\.0\.5\]")
    served(mx)  # a slot is free again
    open_[1].close()


def test_connection_rate_limit(backupmx_factory):
    mx = backupmx_factory(
        SEED + "smtpd_client_connection_rate_limit = 3\nanvil_rate_time_unit = 60s\n"
    )
    # The harness's start-up probe came from 127.0.0.3, not from the client.
    for _ in range(3):
        served(mx)
    c = Raw(mx)
    assert c.reply() == f"421 4.7.0 {HOST} Error: too many connections from 127.0.0.5"
    c.close()
    mx.wait_log(r"too many connections from 127\.0\.0\.5 for client\.example\.net")
    served(mx, "127.0.0.6")


def test_message_rate_limit(backupmx_factory, primary):
    mx = backupmx_factory(
        SEED + "smtpd_client_message_rate_limit = 2\nanvil_rate_time_unit = 60s\n"
    )
    c = session(mx)
    for _ in range(2):
        assert c.cmd("MAIL FROM:<sender@sender.example>") == "250 2.1.0 Ok"
        assert c.cmd("RSET") == "250 2.0.0 Ok"
    assert c.cmd("MAIL FROM:<sender@sender.example>") == (
        "450 4.7.1 Error: too much mail from 127.0.0.5")
    c.close()
    mx.wait_log(r"smtpd\[\d+\]: warning: Message delivery request rate limit exceeded: 3 from "
                r"client\.example\.net\[127\.0\.0\.5\] for service smtp$")
    again = send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    assert again.mail == (450, b"4.7.1 Error: too much mail from 127.0.0.5")  # also refused
    # another client, and smtpd_client_event_limit_exceptions ($mynetworks), are not limited
    assert send(mx, "sender@sender.example", ["alice@nausch.org"], source="127.0.0.6").mail == (
        250, b"2.1.0 Ok")
    for _ in range(3):
        assert send(mx, "me@tachtler.net", [], source="127.0.0.1").mail == (250, b"2.1.0 Ok")
    assert primary.messages == []


def test_recipient_rate_limit(backupmx_factory, primary):
    mx = backupmx_factory(
        SEED + "smtpd_client_recipient_rate_limit = 2\nanvil_rate_time_unit = 60s\n"
    )
    out = send(mx, "sender@sender.example",
               ["alice@nausch.org", "bob@nausch.org", "carol@nausch.org"], message())
    assert out.rcpts == [(250, b"2.1.5 Ok"), (250, b"2.1.5 Ok"),
                         (450, b"4.7.1 Error: too many recipients from 127.0.0.5")]
    mx.wait_log(r"smtpd\[\d+\]: warning: Recipient address rate limit exceeded: 3 from "
                r"client\.example\.net\[127\.0\.0\.5\] for service smtp$")
    got = primary.wait_for(1)[0]
    assert got.rcpts == ["alice@nausch.org", "bob@nausch.org"]
    c = session(mx)
    assert c.cmd("VRFY dave@nausch.org") == "450 4.7.1 Error: too many recipients from 127.0.0.5"
    c.close()
    mx.wait_log(r"Recipient address rate limit exceeded: 4 from ")


def test_global_session_ceiling_answers_421(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_max_sessions = 3\n")
    held = [session(mx, f"127.0.0.{20 + i}") for i in range(3)]
    refused = []
    for i in range(5):
        c = Raw(mx, f"127.0.0.{30 + i}")
        refused.append(c.reply())
        assert c.closed()
        c.close()
    assert refused == [f"421 4.3.2 {HOST} Error: too many sessions, try again later"] * 5
    for c in held:
        assert c.cmd("NOOP") == "250 2.0.0 Ok"  # the sessions in flight go on
        c.cmd("QUIT")
        c.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            served(mx)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("n", [300])
def test_many_parallel_connections_do_not_bring_it_down(backupmx_factory, n):
    mx = backupmx_factory(
        SEED + "smtpd_max_sessions = 100\nsmtpd_client_connection_count_limit = 0\n"
    )
    socks = []
    for i in range(n):
        s = socket.create_connection((mx.host, mx.port), timeout=30,
                                     source_address=(f"127.0.1.{i % 250 + 1}", 0))
        socks.append(s)
    banners = []
    for s in socks:
        f = s.makefile("rb")
        banners.append(f.readline()[:9])
        f.close()
    for s in socks:
        s.close()
    assert banners.count(b"220 mx1.t") == 100
    assert banners.count(b"421 4.3.2") == n - 100
    served(mx)
