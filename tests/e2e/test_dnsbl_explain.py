"""A DNS list that does not answer, and ``backupmx explain`` for a rejected and an accepted
transaction, over real DNS (unbound)."""

from __future__ import annotations

from tests.e2e.util import message, send

BROKEN = """
smtpd_recipient_restrictions = reject_rbl_client rbl.broken.example, permit_mx_backup,
    reject_unauth_destination
"""


def test_a_list_that_does_not_answer_does_not_block_mail(backupmx_factory, primary):
    mx = backupmx_factory(BROKEN)
    out = send(mx, "x@sender.example", ["alice@nausch.org"], message("broken rbl"))
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    mx.wait_log(r"warning: DNS list lookup error for 5\.0\.0\.127\.rbl\.broken\.example: .*"
                r"counted as not listed")


def test_explain_rejected_and_accepted(backupmx_factory, primary, dns_records, tmp_path):
    dns_records("66.0.0.127.zen.spamhaus.org. 300 IN A 127.0.0.4")
    dns_records('66.0.0.127.zen.spamhaus.org. 300 IN TXT "listed for testing"')
    rfc = tmp_path / "rfc"
    rfc.write_text("postmaster@ OK\n")
    mx = backupmx_factory(f"smtpd_recipient_restrictions = check_recipient_access hash:{rfc},"
                          " reject_rbl_client zen.spamhaus.org, permit_mx_backup,"
                          " reject_unauth_destination\n", start=False)
    res = mx.cli("explain", "--client", "127.0.0.66", "--helo", "x.example",
                 "--sender", "a@sender.example", "--recipient", "alice@nausch.org")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "client: unknown[127.0.0.66] (name status nxdomain, reverse name unknown)",
        "helo: x.example",
        "sender: <a@sender.example>",
        "recipient: <alice@nausch.org>",
        "smtpd_relay_restrictions: permit_mynetworks",
        "    => dunno",
        "smtpd_relay_restrictions: permit_sasl_authenticated",
        "    => dunno",
        "smtpd_relay_restrictions: permit_mx_backup",
        "    => permit",
        f"smtpd_recipient_restrictions: check_recipient_access hash:{rfc}",
        f"    hash:{rfc} 'alice@nausch.org': -",
        f"    hash:{rfc} 'nausch.org': -",
        f"    hash:{rfc} 'org': -",
        f"    hash:{rfc} 'alice@': -",
        "    => dunno",
        "smtpd_recipient_restrictions: reject_rbl_client zen.spamhaus.org",
        "    DNS 66.0.0.127.zen.spamhaus.org A: 127.0.0.4 TXT 'listed for testing'",
        "    => reject (554 5.7.1 Service unavailable; Client host [127.0.0.66] blocked using"
        " zen.spamhaus.org; listed for testing)",
        "final reply: 554 5.7.1 Service unavailable; Client host [127.0.0.66] blocked using"
        " zen.spamhaus.org; listed for testing",
    ]
    res = mx.cli("explain", "--client", "127.0.0.5", "--sender", "<>",
                 "--recipient", "postmaster@nausch.org")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "client: client.example.net[127.0.0.5] (name status ok," \
        " reverse name client.example.net)"
    assert f"    hash:{rfc} 'postmaster@': OK" in lines
    assert lines[-1] == "final reply: 250 2.1.5 Ok"
    assert primary.messages == []
