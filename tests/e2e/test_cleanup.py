"""cleanup over TCP: canonical envelope addresses, one delivery per recipient.

The client writes ``valid@nausch.org.`` (trailing dot) or a source route; the
recording primary, like some real ones, refuses the dotted form with 553.  What
the primary finally gets, what verification probes and what the relay check
answers all use the canonical address.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.util import Raw, message, strip_received

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
VERIFY = """
address_verify_map = btree:$data_directory/verify
unverified_recipient_reject_code = 577
smtpd_recipient_restrictions =
    reject_unverified_recipient,
    permit_mx_backup,
    reject_unauth_destination
"""
DOTTED_553 = "553 5.1.3 <valid@nausch.org.>: Recipient address rejected: bad address syntax"


@pytest.fixture
def strict_primary(primary):
    """A primary that knows valid@nausch.org and refuses the dotted form."""
    primary.users = {"valid@nausch.org"}
    primary.rcpt_reply["valid@nausch.org."] = DOTTED_553
    return primary


def transaction(mx, sender: str, rcpts: list[str], body: bytes | None = None) -> list[str]:
    """Each reply of EHLO, MAIL, every RCPT and (with a body) DATA and the final dot."""
    c = Raw(mx)
    try:
        assert c.reply().startswith("220 ")
        replies = [c.cmd_lines("EHLO client.example.net")[-1]]
        replies.append(c.cmd(f"MAIL FROM:<{sender}>"))
        replies += [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
        if body is not None:
            replies.append(c.cmd("DATA"))
            replies.append(c.cmd(body + b".\r\n"))
        c.cmd("QUIT")
    finally:
        c.close()
    return replies


def test_trailing_dot_and_source_route_are_rewritten_and_delivered_once(
        backupmx_factory, strict_primary):
    mx = backupmx_factory(SEED)
    body = message("dotted")
    replies = transaction(mx, "sender@sender.example.", [
        "valid@nausch.org.", "@a.example,@b.example:valid@nausch.org", "valid@nausch.org",
    ], body)
    assert replies[1:5] == ["250 2.1.0 Ok"] + ["250 2.1.5 Ok"] * 3
    assert replies[5].startswith("354 ")
    qid = re.fullmatch(r"250 2\.0\.0 Ok: queued as ([0-9A-F]+)", replies[6]).group(1)
    [got] = strict_primary.wait_for(1)
    assert got.mail_from == "sender@sender.example"
    assert got.rcpts == ["valid@nausch.org"]
    assert got.rcpt_params == [["ORCPT=rfc822;valid@nausch.org."]]  # the address as written
    received, rest = strip_received(got.data)
    assert re.fullmatch(
        rb"Received: from client\.example\.net \(client\.example\.net \[127\.0\.0\.5\]\)\r\n"
        rb"\tby mx1\.tachtler\.net \(backupmx\) with ESMTP id " + qid.encode() + rb"\r\n"
        rb"\tfor <valid@nausch\.org>; [^\r\n]+\r\n", received), received
    assert rest == body
    mx.wait_log(rf"{qid}: from=<sender@sender\.example>, size=\d+, nrcpt=1 \(queue active\)$")
    mx.wait_log(rf"{qid}: to=<valid@nausch\.org>, relay=mx1\.nausch\.org\[127\.0\.0\.2\]:\d+, "
                rf"delay=[\d.]+, dsn=2\.0\.0, status=sent \(250 ")
    assert "bounced" not in mx.log_text()


def test_verification_and_the_relay_check_see_the_canonical_address(
        backupmx_factory, strict_primary):
    mx = backupmx_factory(VERIFY)
    replies = transaction(mx, "sender@sender.example", [
        "valid@nausch.org.", "victim@foreign.example.",
    ])
    assert replies[2:] == [
        "250 2.1.5 Ok",
        "554 5.7.1 <victim@foreign.example>: Relay access denied",
    ]
    probes = [c for s in strict_primary.sessions for c in s.commands if c.startswith(b"RCPT")
              and not c.startswith(b"RCPT TO:<backupmx-catchall-check-")]
    assert probes == [b"RCPT TO:<valid@nausch.org>"]
    mx.wait_log(r"[0-9A-F]+: reject: RCPT from client\.example\.net\[127\.0\.0\.5\]: 554 5\.7\.1 "
                r"<victim@foreign\.example>: Relay access denied; from=<sender@sender\.example> "
                r"to=<victim@foreign\.example> proto=ESMTP helo=<client\.example\.net>$")
