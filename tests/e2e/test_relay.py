"""The backup-MX rule over TCP, with real DNS (unbound) and a recording primary."""

from __future__ import annotations

import pytest

from tests.e2e.util import OUTSIDE, message, send

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""


@pytest.fixture
def mx(backupmx_factory, primary):
    return backupmx_factory(SEED)


def test_mail_for_backed_up_domain_is_accepted_from_outside(mx, primary):
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    assert out.mail == (250, b"2.1.0 Ok")
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    assert out.data is not None and out.data[0] == 250
    assert out.data[1].startswith(b"2.0.0 Ok: queued as ")


@pytest.mark.parametrize(
    "rcpt",
    [
        "x@foreign.example",  # does not list this host as MX
        "x@evil.example",  # lists us, but its primary is outside permit_mx_backup_networks
        "x@self.example",  # we are the best MX
        "x@nonexistent.example",  # no MX at all
        "x%foreign.example@nausch.org",  # sender-routed through a backed-up domain
        "foreign.example!x@nausch.org",
    ],
)
def test_relay_attempts_are_refused_with_554(mx, primary, rcpt):
    out = send(mx, "sender@sender.example", [rcpt])
    assert out.rcpt_line() == f"554 5.7.1 <{rcpt}>: Relay access denied"
    assert primary.messages == []


def test_relay_denied_is_logged_in_postfix_format(mx, primary):
    send(mx, "sender@sender.example", ["x@foreign.example"])
    line = mx.wait_log(r"NOQUEUE: reject: RCPT from .*").group(0)
    assert line == (
        "NOQUEUE: reject: RCPT from client.example.net[127.0.0.5]: 554 5.7.1 "
        "<x@foreign.example>: Relay access denied; from=<sender@sender.example> "
        "to=<x@foreign.example> proto=ESMTP helo=<client.example.net>"
    )


def test_mynetworks_client_may_relay(mx, primary):
    out = send(mx, "me@tachtler.net", ["x@foreign.example"], message(), source="127.0.0.1")
    assert out.rcpts == [(250, b"2.1.5 Ok")]


def test_dns_failure_of_recipient_domain_is_a_4xx(mx, primary):
    out = send(mx, "sender@sender.example", ["x@broken.example"])
    code, text = out.rcpts[0]
    assert code == 450, text
    assert text.startswith(
        b"4.4.4 <x@broken.example>: Recipient address rejected: "
        b"Unable to look up mail exchanger information: "
    )


def test_default_relay_restrictions_alone_defer_foreign_and_accept_backup(
    backupmx_factory, primary
):
    mx = backupmx_factory("")
    out = send(mx, "sender@sender.example", ["x@foreign.example", "alice@nausch.org"])
    assert out.rcpt_line(0) == "454 4.7.1 <x@foreign.example>: Relay access denied"
    assert out.rcpts[1] == (250, b"2.1.5 Ok")


def test_mx_backup_without_networks_accepts_any_domain_naming_us(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "permit_mx_backup_networks =\n")
    out = send(mx, "sender@sender.example", ["x@evil.example"])
    assert out.rcpts == [(250, b"2.1.5 Ok")]


def test_primary_gaining_an_address_outside_the_networks_stops_acceptance(
    mx, primary, dns_records
):
    dns_records("mx1.nausch.org. 300 IN AAAA ::2")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"])
    assert out.rcpt_line() == "554 5.7.1 <alice@nausch.org>: Relay access denied"


def test_relay_domains_authorises_without_mx(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "relay_domains = foreign.example\n")
    out = send(mx, "sender@sender.example", ["x@foreign.example", "y@sub.foreign.example"])
    assert out.rcpts == [(250, b"2.1.5 Ok"), (250, b"2.1.5 Ok")]


def test_postmaster_of_this_host_goes_to_postmaster_address(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "postmaster_address = alice@nausch.org\n")
    body = message("to postmaster")
    out = send(mx, "sender@sender.example", ["postmaster", "Postmaster@mx1.tachtler.net"], body)
    assert out.rcpts == [(250, b"2.1.5 Ok"), (250, b"2.1.5 Ok")]
    got = primary.wait_for(1)[0]
    assert got.rcpts == ["alice@nausch.org"]  # duplicates collapse, as cleanup does
    other = send(mx, "sender@sender.example", ["bob@mx1.tachtler.net"])
    assert other.rcpt_line() == (
        "550 5.1.1 <bob@mx1.tachtler.net>: Recipient address rejected: "
        "User unknown in local recipient table"
    )


def test_unknown_local_recipient_reject_code_sets_the_code(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "unknown_local_recipient_reject_code = 450\n")
    out = send(mx, "sender@sender.example", ["bob@mx1.tachtler.net"])
    assert out.rcpt_line() == (
        "450 4.1.1 <bob@mx1.tachtler.net>: Recipient address rejected: "
        "User unknown in local recipient table"
    )


def test_outside_client_name_is_its_verified_rdns(mx, primary):
    send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    assert mx.wait_log(r"connect from client\.example\.net\[127\.0\.0\.5\]")
    assert OUTSIDE == "127.0.0.5"
