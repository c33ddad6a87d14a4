"""``backupmx explain`` and the server make one RCPT decision: for every recipient the
CLI prints as its final reply what the server answers over TCP, whether the lists,
smtpd_reject_unlisted_recipient, the postmaster rule, the probe sender or the local
unknown-user rule decide, with and without soft_bounce (which, as in Postfix, turns
every 5xx the server sends into 4xx, protocol errors too)."""

from __future__ import annotations

import pytest

from tests.e2e.util import connect

RECIPIENTS = [
    "alice@nausch.org",  # in relay_recipient_maps
    "bob@nausch.org",  # not in relay_recipient_maps: smtpd_reject_unlisted_recipient
    "x@foreign.example",  # relay denied by the relay list
    "postmaster",  # postmaster of this host, before any restriction
    "postmaster@mx1.tachtler.net",
    "double-bounce@mx1.tachtler.net",  # the probe sender
    "someone@mx1.tachtler.net",  # this host, but not postmaster
]


def config(tmp_path, extra: str = "") -> str:
    known = tmp_path / "relay_recipients"
    known.write_text("alice@nausch.org OK\n")
    return ("relay_domains = nausch.org\n"
            f"relay_recipient_maps = hash:{known}\n"
            "smtpd_recipient_restrictions = reject_unauth_destination\n" + extra)


def server_replies(mx) -> dict[str, str]:
    s = connect(mx)
    try:
        s.mail("x@sender.example")
        out = {}
        for r in RECIPIENTS:
            code, text = s.rcpt(r)
            out[r] = f"{code} {text.decode()}"
        code, text = s.docmd("RCPT", "TO:<not an address>")  # a protocol error
        out["syntax"] = f"{code} {text.decode()}"
        return out
    finally:
        s.close()


def explained(mx, rcpt: str) -> str:
    res = mx.cli("explain", "--client", "127.0.0.5", "--helo", "client.example.net",
                 "--sender", "x@sender.example", "--recipient", rcpt)
    assert res.returncode == 0, res.stderr
    last = res.stdout.splitlines()[-1]
    assert last.startswith("final reply: "), res.stdout
    return last.removeprefix("final reply: ")


@pytest.mark.parametrize("soft", [False, True])
def test_explain_prints_the_reply_the_server_sends(backupmx_factory, primary, tmp_path, soft):
    mx = backupmx_factory(config(tmp_path, "soft_bounce = yes\n" if soft else ""))
    got = server_replies(mx)
    first = "4" if soft else "5"
    assert got == {
        "alice@nausch.org": "250 2.1.5 Ok",
        "bob@nausch.org": f"{first}50 {first}.1.1 <bob@nausch.org>: Recipient address "
                          "rejected: User unknown in relay recipient table",
        "x@foreign.example": f"{first}54 {first}.7.1 <x@foreign.example>: Relay access denied",
        "postmaster": "250 2.1.5 Ok",
        "postmaster@mx1.tachtler.net": "250 2.1.5 Ok",
        "double-bounce@mx1.tachtler.net": "250 2.1.5 Ok",
        "someone@mx1.tachtler.net": f"{first}50 {first}.1.1 <someone@mx1.tachtler.net>: "
                                    "Recipient address rejected: User unknown in local "
                                    "recipient table",
        "syntax": f"{first}01 {first}.1.3 Bad recipient address syntax",
    }
    del got["syntax"]
    assert {r: explained(mx, r) for r in RECIPIENTS} == got
    mx.wait_log(r"[0-9A-F]+: reject: RCPT from client\.example\.net\[127\.0\.0\.5\]: "
                f"{first}50 {first}\\.1\\.1 <bob@nausch\\.org>: Recipient address rejected: "
                r"User unknown in relay recipient table; from=<x@sender\.example> "
                r"to=<bob@nausch\.org> proto=ESMTP helo=<client\.example\.net>")


def test_explain_names_the_rules_outside_the_lists(backupmx_factory, primary, tmp_path):
    mx = backupmx_factory(config(tmp_path), start=False)
    res = mx.cli("explain", "--client", "127.0.0.5", "--sender", "x@sender.example",
                 "--recipient", "bob@nausch.org")
    assert res.stdout.splitlines()[-5:] == [
        "smtpd_recipient_restrictions: reject_unauth_destination",
        "    => dunno",
        "smtpd_reject_unlisted_recipient: relay_recipient_maps",
        "    => reject (550 5.1.1 <bob@nausch.org>: Recipient address rejected: User unknown "
        "in relay recipient table)",
        "final reply: 550 5.1.1 <bob@nausch.org>: Recipient address rejected: User unknown "
        "in relay recipient table",
    ]
    res = mx.cli("explain", "--client", "127.0.0.5", "--sender", "x@sender.example",
                 "--recipient", "postmaster")
    assert res.stdout.splitlines()[-2:] == [
        "postmaster of this host: accepted before any restriction, for "
        "<postmaster@tachtler.net>",
        "final reply: 250 2.1.5 Ok",
    ]
