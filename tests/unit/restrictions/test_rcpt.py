"""The RCPT decision (restrictions/rcpt.py), the relay list's place and default, and
proxy_interfaces host names."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupmx.config import ConfigError
from backupmx.restrictions.rcpt import decide
from tests.unit.restrictions.spamkit import TEMP, FakeResolver, build, ctx

RELAY = "relay_domains = nausch.org\n"


async def line(svc, rcpt: str, **kw: object) -> str:
    d = await decide(ctx(recipient=rcpt, **kw), svc)
    if d.verdict is None:
        return f"250 keep {d.keep}"
    assert d.verdict.reply is not None
    return d.verdict.reply.line()


async def test_rules_before_and_after_the_lists(tmp_path: Path) -> None:
    known = tmp_path / "known"
    known.write_text("alice@nausch.org OK\n")
    svc = build(RELAY + f"relay_recipient_maps = hash:{known}\n"
                "smtpd_recipient_restrictions = reject\n", tmp_path)
    # before any restriction: the probe sender (nothing kept) and postmaster of this host
    assert await line(svc, "double-bounce@mx1.tachtler.net") == "250 keep None"
    assert await line(svc, "Postmaster") == "250 keep postmaster@tachtler.net"
    assert await line(svc, "postmaster@localhost") == "250 keep postmaster@tachtler.net"
    # the lists
    assert await line(svc, "alice@nausch.org") == (
        "554 5.7.1 <alice@nausch.org>: Recipient address rejected: Access denied")
    svc = build(RELAY + f"relay_recipient_maps = hash:{known}\n", tmp_path)
    assert await line(svc, "alice@nausch.org") == "250 keep alice@nausch.org"
    # smtpd_reject_unlisted_recipient, then the local unknown user
    assert await line(svc, "bob@nausch.org") == (
        "550 5.1.1 <bob@nausch.org>: Recipient address rejected: User unknown in relay "
        "recipient table")
    assert await line(svc, "bob@mx1.tachtler.net") == (
        "550 5.1.1 <bob@mx1.tachtler.net>: Recipient address rejected: User unknown in local "
        "recipient table")
    svc = build(RELAY + f"relay_recipient_maps = hash:{known}\n"
                "smtpd_reject_unlisted_recipient = no\n", tmp_path)
    assert await line(svc, "bob@nausch.org") == "250 keep bob@nausch.org"


async def test_discard_accepts_unknown_recipients(tmp_path: Path) -> None:
    access = tmp_path / "access"
    access.write_text("192.0.2.7 DISCARD\n")
    svc = build(RELAY + f"smtpd_client_restrictions = check_client_access hash:{access}\n",
                tmp_path)
    assert await line(svc, "bob@mx1.tachtler.net") == "250 keep bob@mx1.tachtler.net"


async def test_relay_denial_comes_before_the_recipient_list(tmp_path: Path) -> None:
    svc = build("smtpd_recipient_restrictions = reject_non_fqdn_recipient, "
                "reject_unauth_destination\n", tmp_path)
    assert [k for k, _ in svc.rcpt_lists()][-2:] == ["relay", "recipient"]
    # the default relay list ends in the recipient list's own reject_unauth_destination
    assert svc.lists["relay"].names()[-1] == "reject_unauth_destination"
    assert await line(svc, "x@foreign") == "554 5.7.1 <x@foreign>: Relay access denied"
    svc = build("smtpd_relay_before_recipient_restrictions = no\n"
                "smtpd_recipient_restrictions = reject_non_fqdn_recipient, "
                "reject_unauth_destination\n", tmp_path)
    assert await line(svc, "x@foreign") == (
        "504 5.5.2 <x@foreign>: Recipient address rejected: need fully-qualified address")


async def test_the_default_relay_list_defers_without_a_relay_decision_of_its_own(
        tmp_path: Path) -> None:
    svc = build("", tmp_path)
    assert svc.lists["relay"].names()[-1] == "defer_unauth_destination"
    assert await line(svc, "x@foreign.example") == (
        "454 4.7.1 <x@foreign.example>: Relay access denied")
    svc = build("smtpd_relay_restrictions = permit_mynetworks, defer_unauth_destination\n"
                "smtpd_recipient_restrictions = reject_unauth_destination\n", tmp_path)
    assert await line(svc, "x@foreign.example") == (
        "454 4.7.1 <x@foreign.example>: Relay access denied")


async def test_proxy_interfaces_names_are_resolved_and_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeResolver({("nat.example", "A"): ["192.0.2.80"], ("later.example", "A"): TEMP})
    svc = build("proxy_interfaces = [192.0.2.9], nat.example, later.example\n", tmp_path, dns)
    assert svc.is_own_ip("192.0.2.9") and not svc.is_own_ip("192.0.2.80")
    failed = await svc.resolve_own_names()
    assert [name for name, _ in failed] == ["later.example"]
    assert svc.is_own_ip("192.0.2.80") and "[192.0.2.80]" in svc.own_literals
    assert svc.own_names == ("later.example",)
    dns.records[("later.example", "A")] = ["192.0.2.81"]
    await svc.own_addresses()  # not yet due: no query
    assert not svc.is_own_ip("192.0.2.81")
    monkeypatch.setattr(svc, "_own_names_due", 0.0)
    await svc.own_addresses()
    assert svc.is_own_ip("192.0.2.81") and svc.own_names == ()


def test_proxy_interfaces_item_that_is_neither_address_nor_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'10.0.0.0/8' is neither an address nor a host name"):
        build("proxy_interfaces = 10.0.0.0/8\n", tmp_path)
