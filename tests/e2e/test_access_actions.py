"""Every access(5) action over TCP: what the client is told, what is queued, what arrives.

The maps are real files (hash: source text) read by a real ``backupmx serve``; clients
connect from 127.0.0.5 (client.example.net, outside mynetworks) unless a case needs
mynetworks (127.0.0.1); the recording primary shows what was delivered, and
``queue list --json`` what was kept.  Replies are compared whole, as config-syntax.md §4
and restrictions.md §1.4 give them.
"""

from __future__ import annotations

import re
import smtplib
import socket
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.e2e.util import OUTSIDE, message, queue, send, strip_received, wait_queue

MYNETWORKS = "127.0.0.1"

ACTIONS = """\
smtpd_sender_restrictions = check_sender_access hash:{d}/sender
smtpd_recipient_restrictions =
    check_sender_access hash:{d}/sender_late,
    check_recipient_access hash:{d}/recipient,
    permit_mx_backup,
    reject_unauth_destination
smtpd_data_restrictions = check_sender_access hash:{d}/data
smtpd_etrn_restrictions = check_helo_access hash:{d}/etrn_helo
"""

TABLES = {
    # smtpd_sender_restrictions (its flags carry into the recipient stage, §1.4)
    "sender": """\
held@sender.example HOLD
redirect@sender.example REDIRECT archive@nausch.org
bcc@sender.example BCC copy@nausch.org
tagged@sender.example PREPEND X-Access-Tag: from the sender map
bye@sender.example 421 4.7.0 closing now
gone@sender.example 521 go away
maybe@sender.example DEFER_IF_PERMIT
early@sender.example DEFER_IF_REJECT early doubts
mynet@sender.example permit_mynetworks, reject
broken@sender.example permit_mynetworks, no_such_restriction
table@sender.example check_client_access hash:/etc/postfix/elsewhere
""",
    # a sender map inside smtpd_recipient_restrictions
    "sender_late": """\
unsure@sender.example DEFER_IF_REJECT 4.7.0 not sure about you
late@sender.example DEFER_IF_PERMIT 4.2.0 come back later
""",
    "recipient": """\
blocked@nausch.org REJECT
later@nausch.org 451 4.3.2 come back
closing@nausch.org 521 5.7.1 no more
""",
    "data": """\
latebye@sender.example 421 4.7.0 not at DATA
""",
    "etrn_helo": """\
closing.example 421 4.7.0 closing now
""",
}


def server(factory, tmp_path: Path, config: str, tables: dict[str, str], extra: str = ""):
    """A started backupmx whose ``{d}`` in ``config`` names a directory holding ``tables``."""
    d = tmp_path / "tables"
    d.mkdir()
    for name, text in tables.items():
        (d / name).write_text(text)
    return factory(config.format(d=d) + extra)


@pytest.fixture
def mx(backupmx_factory, primary, tmp_path):
    return server(backupmx_factory, tmp_path, ACTIONS, TABLES)


def rcpt(mx, sender: str, recipient: str, source: str = OUTSIDE) -> str:
    """The reply to one RCPT TO, as one line."""
    s = smtplib.SMTP(mx.host, mx.port, source_address=(source, 0), timeout=60)
    try:
        s.ehlo("client.example.net")
        code, text = s.mail(sender)
        assert code == 250, text
        code, text = s.rcpt(recipient)
        return f"{code} {text.decode()}"
    finally:
        s.close()


def _reply(f: BinaryIO) -> str:
    """The last line of one (possibly multi-line) reply; "" when the server closed."""
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line.decode().rstrip("\r\n")


def dialogue(mx, commands: list[str], source: str = OUTSIDE) -> tuple[list[str], bool]:
    """Each command's reply, then whether the server closed the connection by itself."""
    with socket.create_connection((mx.host, mx.port), timeout=30,
                                  source_address=(source, 0)) as s:
        f = s.makefile("rb")
        assert _reply(f).startswith("220 "), "no greeting"
        replies = []
        for command in commands:
            s.sendall(command.encode() + b"\r\n")
            replies.append(_reply(f))
        s.settimeout(10)
        try:
            closed = f.read(1) == b""
        except TimeoutError:
            closed = False
    return replies, closed


def log_line(text: str) -> str:
    """A regular expression for one whole smtpd log line ending in ``text``."""
    return r"smtpd\[\d+\]: " + re.escape(text) + "$"


def test_hold_keeps_the_message_until_released(mx, primary):
    out = send(mx, "held@sender.example", ["alice@nausch.org"], message("held"))
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    qid = out.queue_id
    mx.wait_log(log_line(
        "NOQUEUE: hold: RCPT from client.example.net[127.0.0.5]: <held@sender.example>: "
        "Sender address triggers HOLD action; from=<held@sender.example> "
        "to=<alice@nausch.org> proto=ESMTP helo=<client.example.net>"))
    # A flush and a later message go out; the held one stays where it is.
    assert mx.cli("queue", "flush").returncode == 0
    send(mx, "x@sender.example", ["bob@nausch.org"], message("not held"))
    got = primary.wait_for(1, timeout=60)
    assert [m.rcpts for m in got] == [["bob@nausch.org"]]
    [entry] = wait_queue(mx, lambda q: len(q) == 1, timeout=60)
    assert (entry["id"], entry["state"], entry["sender"]) == (qid, "hold", "held@sender.example")
    assert [(r["address"], r["state"], r["attempts"]) for r in entry["recipients"]] == [
        ("alice@nausch.org", "pending", 0)]
    assert len(primary.messages) == 1

    res = mx.cli("queue", "release", qid)
    assert res.returncode == 0, res.stderr
    got = primary.wait_for(2, timeout=60)
    released = got[1]
    assert (released.mail_from, released.rcpts) == ("held@sender.example", ["alice@nausch.org"])
    assert strip_received(released.data)[1] == message("held")
    wait_queue(mx, lambda q: q == [], timeout=60)


def test_discard_from_a_client_map_accepts_and_keeps_nothing(
        backupmx_factory, primary, tmp_path):
    mx = server(backupmx_factory, tmp_path,
                "smtpd_client_restrictions = check_client_access hash:{d}/client\n"
                "smtpd_recipient_restrictions = permit_mx_backup, reject_unauth_destination\n",
                {"client": "client.example.net DISCARD\n"})
    # Later restrictions are skipped: a relay attempt and an unknown local user are
    # accepted as well, since nothing will be delivered anyway.
    out = send(mx, "x@sender.example",
               ["alice@nausch.org", "x@foreign.example", "nosuch@mx1.tachtler.net"],
               message("discarded"))
    assert out.rcpts == [(250, b"2.1.5 Ok")] * 3
    assert out.data is not None and out.data[0] == 250
    assert out.data[1] == f"2.0.0 Ok: queued as {out.queue_id}".encode()
    mx.wait_log(log_line(
        "NOQUEUE: discard: RCPT from client.example.net[127.0.0.5]: "
        "<client.example.net[127.0.0.5]>: Client host triggers DISCARD action; "
        "from=<x@sender.example> to=<alice@nausch.org> proto=ESMTP helo=<client.example.net>"))
    assert queue(mx) == []
    # Mail from another client is delivered; the discarded message never is.
    control = send(mx, "x@sender.example", ["alice@nausch.org"], message("control"),
                   source=MYNETWORKS)
    assert control.data is not None and control.data[0] == 250
    got = primary.wait_for(1, timeout=60)
    wait_queue(mx, lambda q: q == [], timeout=60)
    assert len(primary.messages) == 1
    assert strip_received(got[0].data)[1] == message("control")


def test_redirect_sends_only_to_the_redirect_address(mx, primary):
    out = send(mx, "redirect@sender.example", ["alice@nausch.org", "bob@nausch.org"],
               message("redirected"))
    assert out.rcpts == [(250, b"2.1.5 Ok")] * 2
    assert out.data is not None and out.data[0] == 250
    mx.wait_log(log_line(
        "NOQUEUE: redirect: RCPT from client.example.net[127.0.0.5]: <redirect@sender.example>: "
        "Sender address triggers REDIRECT archive@nausch.org; from=<redirect@sender.example> "
        "to=<alice@nausch.org> proto=ESMTP helo=<client.example.net>"))
    primary.wait_for(1, timeout=60)
    wait_queue(mx, lambda q: q == [], timeout=60)
    assert [(m.mail_from, m.rcpts) for m in primary.messages] == [
        ("redirect@sender.example", ["archive@nausch.org"])]
    assert strip_received(primary.messages[0].data)[1] == message("redirected")


def test_bcc_adds_a_recipient(mx, primary):
    out = send(mx, "bcc@sender.example", ["alice@nausch.org"], message("copied"))
    assert out.data is not None and out.data[0] == 250
    primary.wait_for(1, timeout=60)
    wait_queue(mx, lambda q: q == [], timeout=60)
    assert sorted(r for m in primary.messages for r in m.rcpts) == [
        "alice@nausch.org", "copy@nausch.org"]
    assert all(strip_received(m.data)[1] == message("copied") for m in primary.messages)


def test_prepend_puts_the_header_above_our_received(mx, primary):
    out = send(mx, "tagged@sender.example", ["alice@nausch.org"], message("tagged"))
    assert out.data is not None and out.data[0] == 250
    [got] = primary.wait_for(1, timeout=60)
    header = b"X-Access-Tag: from the sender map\r\n"
    assert got.data.startswith(header + b"Received: from client.example.net "), got.data[:200]
    assert strip_received(got.data[len(header):])[1] == message("tagged")


@pytest.mark.parametrize("helo,commands,stage,reply,tail", [
    ("client.example.net",
     ["MAIL FROM:<latebye@sender.example>", "RCPT TO:<alice@nausch.org>", "DATA"], "DATA",
     "421 4.7.0 <latebye@sender.example>: Sender address rejected: not at DATA",
     "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4"),
    ("client.example.net", ["VRFY <closing@nausch.org>"], "VRFY",
     "521 5.7.1 <closing@nausch.org>: Recipient address rejected: no more",
     "ehlo=1 vrfy=0/1 commands=1/2"),
    ("closing.example", ["ETRN nausch.org"], "ETRN",
     "421 4.7.0 <closing.example>: Helo command rejected: closing now",
     "ehlo=1 etrn=0/1 commands=1/2"),
])
def test_421_and_521_close_the_connection_at_data_vrfy_and_etrn(mx, primary, helo, commands,
                                                                stage, reply, tail):
    """As at RCPT: the reply, then the server closes; nothing is queued."""
    replies, closed = dialogue(mx, [f"EHLO {helo}", *commands])
    assert replies[1:] == [*(["250 2.1.0 Ok", "250 2.1.5 Ok"] if stage == "DATA" else []),
                           reply]
    assert closed is True
    mx.wait_log(rf"smtpd\[\d+\]: \S+: reject: {stage} from client\.example\.net\[127\.0\.0\.5\]: "
                + re.escape(reply) + ";")
    mx.wait_log(log_line(f"disconnect from client.example.net[127.0.0.5] {tail}"))
    assert queue(mx) == []


@pytest.mark.parametrize("sender,recipient,reply", [
    ("bye@sender.example", "alice@nausch.org",
     "421 4.7.0 <bye@sender.example>: Sender address rejected: closing now"),
    ("gone@sender.example", "alice@nausch.org",
     "521 5.7.1 <gone@sender.example>: Sender address rejected: go away"),
    ("x@sender.example", "closing@nausch.org",
     "521 5.7.1 <closing@nausch.org>: Recipient address rejected: no more"),
])
def test_421_and_521_close_the_connection(mx, primary, sender, recipient, reply):
    replies, closed = dialogue(mx, ["EHLO client.example.net", f"MAIL FROM:<{sender}>",
                                    f"RCPT TO:<{recipient}>"])
    assert replies == ["250 SMTPUTF8", "250 2.1.0 Ok", reply]
    assert closed is True
    mx.wait_log(log_line(
        f"NOQUEUE: reject: RCPT from client.example.net[127.0.0.5]: {reply}; "
        f"from=<{sender}> to=<{recipient}> proto=ESMTP helo=<client.example.net>"))
    mx.wait_log(log_line("disconnect from client.example.net[127.0.0.5] ehlo=1 mail=1 "
                         "rcpt=0/1 commands=2/3"))
    # The server goes on serving: the next client's mail is delivered.
    out = send(mx, "x@sender.example", ["alice@nausch.org"], message("next client"))
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    assert strip_received(primary.wait_for(1, timeout=60)[0].data)[1] == message("next client")


@pytest.mark.parametrize("sender,recipient,reply", [
    # an ordinary 554 keeps the session open
    ("x@sender.example", "blocked@nausch.org",
     "554 5.7.1 <blocked@nausch.org>: Recipient address rejected: Access denied"),
    # a 521 turned into the defer_if_reject 450 is a 450: no hang-up
    ("unsure@sender.example", "closing@nausch.org",
     "450 4.7.0 <unsure@sender.example>: Sender address rejected: not sure about you"),
])
def test_other_rejects_keep_the_connection(mx, sender, recipient, reply):
    replies, closed = dialogue(mx, ["EHLO client.example.net", f"MAIL FROM:<{sender}>",
                                    f"RCPT TO:<{recipient}>", "NOOP", "QUIT"])
    assert replies == ["250 SMTPUTF8", "250 2.1.0 Ok", reply, "250 2.0.0 Ok", "221 2.0.0 Bye"]
    assert closed is True


# (sender, recipient, client, reply) for one RCPT each
DEFER_CASES = [
    # DEFER_IF_PERMIT in the sender stage: a later permit (permit_mx_backup) becomes 450 ...
    ("maybe@sender.example", "alice@nausch.org", OUTSIDE,
     "450 4.7.1 <maybe@sender.example>: Sender address rejected: Service unavailable"),
    # ... a later reject stays the reject
    ("maybe@sender.example", "blocked@nausch.org", OUTSIDE,
     "554 5.7.1 <blocked@nausch.org>: Recipient address rejected: Access denied"),
    # DEFER_IF_PERMIT with its own DSN (not X.1.Y: kept)
    ("late@sender.example", "alice@nausch.org", OUTSIDE,
     "450 4.2.0 <late@sender.example>: Sender address rejected: come back later"),
    # DEFER_IF_REJECT in the recipient stage: a later 5xx becomes its 450 ...
    ("unsure@sender.example", "blocked@nausch.org", OUTSIDE,
     "450 4.7.0 <unsure@sender.example>: Sender address rejected: not sure about you"),
    # ... a 4xx is never converted, and a permit is a permit
    ("unsure@sender.example", "later@nausch.org", OUTSIDE,
     "451 4.3.2 <later@nausch.org>: Recipient address rejected: come back"),
    ("unsure@sender.example", "alice@nausch.org", OUTSIDE, "250 2.1.5 Ok"),
    # DEFER_IF_REJECT of the sender stage is reset when the recipient stage starts
    ("early@sender.example", "blocked@nausch.org", OUTSIDE,
     "554 5.7.1 <blocked@nausch.org>: Recipient address rejected: Access denied"),
    ("early@sender.example", "alice@nausch.org", OUTSIDE, "250 2.1.5 Ok"),
]

NESTED_CASES = [
    # a restriction list as the value runs under the map's class
    ("mynet@sender.example", "alice@nausch.org", OUTSIDE,
     "554 5.7.1 <mynet@sender.example>: Sender address rejected: Access denied"),
    ("mynet@sender.example", "alice@nausch.org", MYNETWORKS, "250 2.1.5 Ok"),
    # an unknown name is a server configuration error once evaluation reaches it
    ("broken@sender.example", "alice@nausch.org", OUTSIDE,
     "451 4.3.5 Server configuration error"),
    ("broken@sender.example", "alice@nausch.org", MYNETWORKS, "250 2.1.5 Ok"),
    # a lookup table inside a value is one at once
    ("table@sender.example", "alice@nausch.org", MYNETWORKS,
     "451 4.3.5 Server configuration error"),
]


def test_defer_if_permit_and_defer_if_reject(mx):
    got = [rcpt(mx, s, r, c) for s, r, c, _ in DEFER_CASES]
    assert got == [reply for *_, reply in DEFER_CASES]


def test_restriction_lists_as_values(mx):
    got = [rcpt(mx, s, r, c) for s, r, c, _ in NESTED_CASES]
    assert got == [reply for *_, reply in NESTED_CASES]
    mx.wait_log(r"warning: hash:\S+/sender broken@sender\.example: "
                r'unknown restriction "no_such_restriction"$')


def test_rbl_reply_maps_521_closes_the_connection(backupmx_factory, primary, dns_records,
                                                  tmp_path):
    dns_records("5.0.0.127.dnsbl-521.example. 300 IN A 127.0.0.2")
    mx = server(backupmx_factory, tmp_path,
                "smtpd_recipient_restrictions = reject_rbl_client dnsbl-521.example,"
                " permit_mx_backup, reject_unauth_destination\n"
                "rbl_reply_maps = hash:{d}/rbl_reply\n",
                {"rbl_reply": "dnsbl-521.example 521 5.7.1 Service unavailable; $rbl_class"
                              " [$rbl_what] blocked using $rbl_domain; closing\n"})
    replies, closed = dialogue(mx, ["EHLO client.example.net", "MAIL FROM:<x@sender.example>",
                                    "RCPT TO:<alice@nausch.org>"])
    assert replies == ["250 SMTPUTF8", "250 2.1.0 Ok",
                       "521 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using "
                       "dnsbl-521.example; closing"]
    assert closed is True
    # a client that is not listed is served as before
    out = send(mx, "x@sender.example", ["alice@nausch.org"], message("not listed"),
               source=MYNETWORKS)
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    assert strip_received(primary.wait_for(1, timeout=60)[0].data)[1] == message("not listed")
