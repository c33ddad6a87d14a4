"""Syntax and DNS checks of client, HELO and envelope addresses, with a scripted DNS."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupmx.restrictions.engine import EvalState, evaluate
from tests.unit.restrictions.spamkit import TEMP, FakeResolver, build, ctx, rcpt


async def check(tmp_path: Path, restriction: str, records: dict | None = None,
                extra: str = "", after: str = "", **kw: object) -> str:
    svc = build(f"{extra}smtpd_recipient_restrictions = {restriction} {after}\n", tmp_path,
                FakeResolver(records))
    return await rcpt(svc, ctx(**kw))


@pytest.mark.parametrize("sender,ok", [
    ("a@b.example", True), ("a@b.example.", True), ("a@[192.0.2.1]", True), ("", True),
    ("a@localhost", False), ("alice", False), ("a@-bad-.example", False),
])
async def test_non_fqdn_sender(tmp_path: Path, sender: str, ok: bool) -> None:
    got = await check(tmp_path, "reject_non_fqdn_sender", sender=sender)
    assert got == ("250 ok" if ok else
                   f"504 5.5.2 <{sender}>: Sender address rejected: need fully-qualified address")


async def test_non_fqdn_recipient(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_non_fqdn_recipient", recipient="bob") == (
        "504 5.5.2 <bob>: Recipient address rejected: need fully-qualified address")


@pytest.mark.parametrize("helo,reply", [
    ("mail.example.", "250 ok"),
    ("[192.0.2.1]", "250 ok"),
    ("localhost", "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"),
    ("192.0.2.1", "504 5.5.2 <192.0.2.1>: Helo command rejected: need fully-qualified hostname"),
    ("[300.1.1.1]", "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address"),
])
async def test_non_fqdn_helo(tmp_path: Path, helo: str, reply: str) -> None:
    assert await check(tmp_path, "reject_non_fqdn_helo_hostname", helo=helo) == reply


@pytest.mark.parametrize("helo,reply", [
    ("localhost", "250 ok"),
    ("192.0.2.1", "250 ok"),
    ("bad_-.exa mple", "501 5.5.2 <bad_-.exa mple>: Helo command rejected: Invalid name"),
    ("-x.example", "501 5.5.2 <-x.example>: Helo command rejected: Invalid name"),
])
async def test_invalid_helo(tmp_path: Path, helo: str, reply: str) -> None:
    assert await check(tmp_path, "reject_invalid_helo_hostname", helo=helo) == reply


async def test_unknown_sender_domain_default_450(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_sender_domain") == (
        "450 4.1.8 <alice@sender.example>: Sender address rejected: Domain not found")


async def test_unknown_sender_domain_with_550(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_sender_domain",
                       extra="unknown_address_reject_code = 550\n") == (
        "550 5.1.8 <alice@sender.example>: Sender address rejected: Domain not found")


@pytest.mark.parametrize("rtype,value", [("MX", [(10, "mx.sender.example")]),
                                         ("A", ["192.0.2.9"]), ("AAAA", ["2001:db8::9"])])
async def test_sender_domain_found_by_mx_a_or_aaaa(tmp_path: Path, rtype: str,
                                                   value: list) -> None:
    assert await check(tmp_path, "reject_unknown_sender_domain",
                       {("sender.example", rtype): value}) == "250 ok"


async def test_sender_null_mx(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_sender_domain",
                       {("sender.example", "MX"): [(0, "")]}) == (
        "550 5.7.27 <alice@sender.example>: Sender address rejected: "
        "Domain sender.example does not accept mail (nullMX)")


async def test_recipient_null_mx_and_not_found(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_recipient_domain",
                       {("nausch.org", "MX"): [(0, "")]}) == (
        "556 5.1.10 <bob@nausch.org>: Recipient address rejected: "
        "Domain nausch.org does not accept mail (nullMX)")
    assert await check(tmp_path / "..", "reject_unknown_recipient_domain") == (
        "450 4.1.2 <bob@nausch.org>: Recipient address rejected: Domain not found")


async def test_tempfail_defers_only_if_nothing_rejects(tmp_path: Path) -> None:
    records = {("sender.example", "MX"): TEMP, ("sender.example", "A"): TEMP,
               ("sender.example", "AAAA"): TEMP}
    assert await check(tmp_path, "reject_unknown_sender_domain", records, after="permit") == (
        "450 4.1.8 <alice@sender.example>: Sender address rejected: Domain not found")
    assert await check(tmp_path / "..", "reject_unknown_sender_domain", records,
                       after="reject") == (
        "554 5.7.1 <bob@nausch.org>: Recipient address rejected: Access denied")


async def test_tempfail_action_defer_rejects_at_once(tmp_path: Path) -> None:
    records = {("sender.example", "MX"): TEMP}
    assert await check(tmp_path, "reject_unknown_sender_domain", records,
                       extra="unknown_address_tempfail_action = defer\n", after="reject") == (
        "450 4.1.8 <alice@sender.example>: Sender address rejected: Domain not found")


async def test_warn_if_reject_logs_a_tempfail_instead_of_deferring(tmp_path: Path) -> None:
    records = {("sender.example", "MX"): TEMP}
    assert await check(tmp_path, "warn_if_reject reject_unknown_sender_domain", records,
                       after="permit") == "250 ok"


async def test_local_sender_domain_is_not_looked_up(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_sender_domain",
                       sender="me@mx1.tachtler.net") == "250 ok"


async def test_unknown_client_hostname(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_client_hostname", client_name="unknown",
                       client_name_status="nxdomain") == (
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.7]")
    assert await check(tmp_path / "..", "reject_unknown_client_hostname",
                       extra="unknown_client_reject_code = 550\n", client_name="unknown",
                       client_name_status="tempfail") == (
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.7]")


async def test_unknown_reverse_client_hostname(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_reverse_client_hostname",
                       client_name="unknown") == "250 ok"
    assert await check(tmp_path / "..", "reject_unknown_reverse_client_hostname",
                       extra="unknown_client_reject_code = 550\n", client_name="unknown",
                       reverse_name="unknown") == (
        "550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.7]")


async def test_unknown_helo_hostname(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unknown_helo_hostname") == (
        "450 4.7.1 <mail.client.example>: Helo command rejected: Host not found")
    assert await check(tmp_path / "..", "reject_unknown_helo_hostname",
                       {("mail.client.example", "MX"): [(0, "")]}) == "250 ok"


async def test_unauth_pipelining(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_unauth_pipelining", illegal_pipelining=True) == (
        "503 5.5.0 <bob@nausch.org>: Recipient address rejected: "
        "Improper use of SMTP command pipelining")
    svc = build("smtpd_data_restrictions = reject_unauth_pipelining\n", tmp_path / "..")
    c = ctx(illegal_pipelining=True)
    v = await evaluate([("data", svc.lists["data"])], c, svc, EvalState())
    assert v is not None and v.reply is not None and v.reply.line() == (
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining")


async def test_multi_recipient_bounce(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_multi_recipient_bounce", sender="", nrcpt=0) == "250 ok"
    assert await check(tmp_path / "..", "reject_multi_recipient_bounce", sender="", nrcpt=1) == (
        "550 5.5.3 <bob@nausch.org>: Recipient address rejected: Multi-recipient bounce")


async def test_sleep_then_continue(tmp_path: Path) -> None:
    assert await check(tmp_path, "sleep 0 reject") == (
        "554 5.7.1 <bob@nausch.org>: Recipient address rejected: Access denied")
