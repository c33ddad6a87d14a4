"""DNS lists: query names, filters, reply templates, failures counted as not listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupmx.config import ConfigError
from backupmx.restrictions import dnsbl
from tests.unit.restrictions.spamkit import TEMP, FakeResolver, build, ctx, rcpt

LISTED = {("7.2.0.192.zen.example", "A"): ["127.0.0.4"],
          ("7.2.0.192.zen.example", "TXT"): ["see https://zen.example/q/192.0.2.7"]}


async def check(tmp_path: Path, restriction: str, records: dict, extra: str = "",
                **kw: object) -> str:
    svc = build(f"{extra}smtpd_recipient_restrictions = {restriction}\n", tmp_path,
                FakeResolver(records))
    return await rcpt(svc, ctx(**kw))


def test_reversed_names() -> None:
    assert dnsbl.reversed_ip("192.0.2.7") == "7.2.0.192"
    assert dnsbl.reversed_ip("2001:db8::1") == ".".join("1" + "0" * 23 + "8bd01002")


@pytest.mark.parametrize("flt,addr,hit", [
    ("127.0.0.2", "127.0.0.2", True), ("127.0.0.2", "127.0.0.3", False),
    ("127.0.0.[2..11]", "127.0.0.11", True), ("127.0.0.[2..11]", "127.0.0.12", False),
    ("127.0.[0;1].[2..4]", "127.0.1.3", True), ("127.0.[0;1].[2..4]", "127.0.2.3", False),
])
def test_filters(flt: str, addr: str, hit: bool) -> None:
    assert dnsbl.filter_matches(dnsbl.parse_filter(flt), addr) is hit


@pytest.mark.parametrize("bad", ["127.0.0", "127.0.0.[2..x]", "127.0.0.300", "127.0.0.[5..2]"])
def test_bad_filters(bad: str) -> None:
    with pytest.raises(ValueError):
        dnsbl.parse_filter(bad)


def test_bad_filter_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build("smtpd_recipient_restrictions = reject_rbl_client zen.example=127.0.0\n", tmp_path)
    assert "bad DNS list filter '127.0.0': expected four octets" in str(e.value)


async def test_listed_client_gets_the_default_reply_with_txt(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_rbl_client zen.example", LISTED) == (
        "554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.example; "
        "see https://zen.example/q/192.0.2.7")


async def test_listed_without_txt(tmp_path: Path) -> None:
    records = {("7.2.0.192.zen.example", "A"): ["127.0.0.2"]}
    assert await check(tmp_path, "reject_rbl_client zen.example", records) == (
        "554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.example")


async def test_filter_that_does_not_match_is_not_listed(tmp_path: Path) -> None:
    assert await check(tmp_path, "reject_rbl_client zen.example=127.0.0.2", LISTED) == "250 ok"
    assert await check(tmp_path / "..", "reject_rbl_client zen.example=127.0.0.[2..11]",
                       LISTED) != "250 ok"


async def test_temporary_failure_is_not_listed(tmp_path: Path) -> None:
    records = {("7.2.0.192.zen.example", "A"): TEMP}
    assert await check(tmp_path, "reject_rbl_client zen.example", records) == "250 ok"


async def test_rbl_reply_maps_and_variables(tmp_path: Path) -> None:
    maps = tmp_path / "rbl_reply"
    maps.write_text("zen.example 521 4.7.1 $rbl_what is on $rbl_domain (code $rbl_code):"
                    " $rbl_reason; helo $helo_name\n")
    got = await check(tmp_path, "reject_rbl_client zen.example=127.0.0.4", LISTED,
                      extra=f"rbl_reply_maps = hash:{maps}\nmaps_rbl_reject_code = 550\n")
    assert got == ("521 5.7.1 192.0.2.7 is on zen.example (code 550): "
                   "see https://zen.example/q/192.0.2.7; helo mail.client.example")


async def test_maps_rbl_reject_code(tmp_path: Path) -> None:
    got = await check(tmp_path, "reject_rbl_client zen.example", LISTED,
                      extra="maps_rbl_reject_code = 450\n")
    assert got.startswith("450 4.7.1 Service unavailable; Client host [192.0.2.7]")


async def test_rhsbl_client_sender_helo(tmp_path: Path) -> None:
    records = {("mail.client.example.rhs.example", "A"): ["127.0.0.2"],
               ("sender.example.rhs.example", "A"): ["127.0.0.2"]}
    assert await check(tmp_path, "reject_rhsbl_client rhs.example", records) == (
        "554 5.7.1 Service unavailable; Client host [mail.client.example] "
        "blocked using rhs.example")
    assert await check(tmp_path / "a", "reject_rhsbl_helo rhs.example", records) == (
        "554 5.7.1 Service unavailable; Helo command [mail.client.example] "
        "blocked using rhs.example")
    assert await check(tmp_path / "b", "reject_rhsbl_sender rhs.example", records) == (
        "554 5.7.1 Service unavailable; Sender address [sender.example] "
        "blocked using rhs.example")
    assert await check(tmp_path / "c", "reject_rhsbl_reverse_client rhs.example", records,
                       client_name="unknown") == (
        "554 5.7.1 Service unavailable; Unverified Client host [mail.client.example] "
        "blocked using rhs.example")


async def test_rhsbl_skips_unknown_and_numeric_names(tmp_path: Path) -> None:
    records = {("unknown.rhs.example", "A"): ["127.0.0.2"]}
    assert await check(tmp_path, "reject_rhsbl_client rhs.example", records,
                       client_name="unknown") == "250 ok"
    assert await check(tmp_path / "a", "reject_rhsbl_helo rhs.example", records,
                       helo="1.2.3.4") == "250 ok"


async def test_prefetch_starts_every_list_at_once(tmp_path: Path) -> None:
    resolver = FakeResolver(LISTED)
    svc = build("smtpd_client_restrictions = reject_rbl_client one.example\n"
                "smtpd_recipient_restrictions = reject_rbl_client zen.example=127.0.0.4, "
                "reject_rbl_client two.example\n", tmp_path, resolver)
    c = ctx()
    dnsbl.prefetch(c, svc)
    assert sorted(c.dnsbl) == ["7.2.0.192.one.example", "7.2.0.192.two.example",
                               "7.2.0.192.zen.example"]
    assert (await rcpt(svc, c)).startswith("554 5.7.1 Service unavailable;")
    assert resolver.queries.count(("7.2.0.192.zen.example", "A")) == 1
