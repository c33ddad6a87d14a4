"""Next-hop syntax and server selection, with a fake resolver (pure logic)."""

from __future__ import annotations

import pytest

from backupmx.dns import DnsTempError
from backupmx.smtp.nexthop import (
    NextHop,
    RouteError,
    Server,
    parse_nexthop,
    parse_transport,
    servers_for,
)


@pytest.mark.parametrize(
    ("text", "hop"),
    [
        ("nausch.org", NextHop("nausch.org", None, True)),
        ("Nausch.ORG:2525", NextHop("nausch.org", 2525, True)),
        ("[mx1.nausch.org]", NextHop("mx1.nausch.org", None, False)),
        ("[mx1.nausch.org]:587", NextHop("mx1.nausch.org", 587, False)),
        ("[192.0.2.1]", NextHop("192.0.2.1", None, False)),
        ("[192.0.2.1]:25", NextHop("192.0.2.1", 25, False)),
        ("[ipv6:2001:db8::1]", NextHop("2001:db8::1", None, False)),
        ("[IPv6:2001:db8::1]:2525", NextHop("2001:db8::1", 2525, False)),
        ("mx.example:smtp", NextHop("mx.example", 25, True)),
        ("  relay.example  ", NextHop("relay.example", None, True)),
    ],
)
def test_parse_nexthop(text: str, hop: NextHop) -> None:
    assert parse_nexthop(text) == hop


@pytest.mark.parametrize(
    "text",
    ["", "[mx.example", "[mx.example]x", "mx.example:0", "mx.example:70000", "mx.example:x",
     "192.0.2.1", "bad host", "a..b", "[not an ip or host]", "-x.example"],
)
def test_parse_nexthop_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nexthop(text)


@pytest.mark.parametrize(
    ("value", "result"),
    [
        ("smtp:[h.example]:2525", ("smtp", NextHop("h.example", 2525, False))),
        ("relay:", ("relay", None)),
        ("smtp", ("smtp", None)),
        (":[h.example]", ("smtp", NextHop("h.example", None, False))),
        ("RELAY:nausch.org", ("relay", NextHop("nausch.org", None, True))),
        ("error:5.1.1 mailbox unavailable", ("error", "5.1.1 mailbox unavailable")),
        ("discard:", ("discard", "")),
        ("retry:try later", ("retry", "try later")),
    ],
)
def test_parse_transport(value: str, result: tuple[str, object]) -> None:
    assert parse_transport(value) == result


def test_parse_transport_keeps_given_default() -> None:
    assert parse_transport(":", default_transport="relay") == ("relay", None)


@pytest.mark.parametrize("value", ["local:", "lmtp:unix:/x", "smtp:[bad"])
def test_parse_transport_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_transport(value)


class FakeResolver:
    """MX and address data from dicts; names in ``temp`` fail temporarily."""

    def __init__(
        self,
        mx: dict[str, list[tuple[int, str]]] | None = None,
        addrs: dict[str, list[str]] | None = None,
        temp: set[str] | None = None,
        temp_mx: set[str] | None = None,
    ) -> None:
        self._mx = mx or {}
        self._addrs = addrs or {}
        self._temp = temp or set()
        self._temp_mx = temp_mx or set()
        self.asked: list[str] = []

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        self.asked.append(f"MX {domain}")
        if domain in self._temp_mx:
            raise DnsTempError(domain, "MX")
        return sorted(self._mx.get(domain, []))

    async def addresses(self, host: str) -> list[str]:
        self.asked.append(f"A {host}")
        if host in self._temp:
            raise DnsTempError(host, "A")
        return self._addrs.get(host, [])


def nobody(ip: str, port: int) -> bool:
    return False


def me(*ips: str):
    return lambda ip, port: ip in ips


WIKI = FakeResolver(
    mx={"nausch.org": [(10, "mx1.nausch.org"), (20, "mx1.tachtler.net")]},
    addrs={
        "mx1.nausch.org": ["127.0.0.2", "::2"],
        "mx1.tachtler.net": ["127.0.0.1"],
    },
)


async def test_mx_sorted_and_expanded_a_then_aaaa() -> None:
    servers = await servers_for("nausch.org", None, resolver=WIKI, port=25, is_myself=nobody)
    assert servers == [
        Server("mx1.nausch.org", "127.0.0.2", 25, 10),
        Server("mx1.nausch.org", "::2", 25, 10),
        Server("mx1.tachtler.net", "127.0.0.1", 25, 20),
    ]


async def test_backup_only_delivers_upwards() -> None:
    servers = await servers_for(
        "nausch.org", None, resolver=WIKI, port=25, is_myself=me("127.0.0.1")
    )
    assert servers == [
        Server("mx1.nausch.org", "127.0.0.2", 25, 10),
        Server("mx1.nausch.org", "::2", 25, 10),
    ]


async def test_equal_preference_peers_are_dropped_with_self() -> None:
    r = FakeResolver(
        mx={"d.example": [(10, "a.d.example"), (20, "b.d.example"), (20, "me.example")]},
        addrs={"a.d.example": ["192.0.2.1"], "b.d.example": ["192.0.2.2"],
               "me.example": ["192.0.2.9"]},
    )
    servers = await servers_for("d.example", None, resolver=r, port=25, is_myself=me("192.0.2.9"))
    assert servers == [Server("a.d.example", "192.0.2.1", 25, 10)]


async def test_equal_preferences_are_shuffled() -> None:
    r = FakeResolver(
        mx={"d.example": [(10, "a.example"), (10, "b.example"), (20, "c.example")]},
        addrs={"a.example": ["192.0.2.1"], "b.example": ["192.0.2.2"], "c.example": ["192.0.2.3"]},
    )
    firsts = set()
    for _ in range(60):
        servers = await servers_for("d.example", None, resolver=r, port=25, is_myself=nobody)
        assert {s.ip for s in servers[:2]} == {"192.0.2.1", "192.0.2.2"}
        assert servers[2] == Server("c.example", "192.0.2.3", 25, 20)
        firsts.add(servers[0].ip)
    assert firsts == {"192.0.2.1", "192.0.2.2"}


async def test_backup_that_is_best_mx_defers_never_bounces() -> None:
    r = FakeResolver(mx={"nausch.org": [(20, "mx1.tachtler.net")]},
                     addrs={"mx1.tachtler.net": ["127.0.0.1"]})
    with pytest.raises(RouteError) as e:
        await servers_for("nausch.org", None, resolver=r, port=25, is_myself=me("127.0.0.1"))
    assert (e.value.permanent, e.value.status, e.value.text) == (
        False, "4.4.6", "mail for nausch.org loops back to myself")


async def test_better_mx_unresolvable_is_unable_to_find_primary() -> None:
    r = FakeResolver(mx={"nausch.org": [(10, "mx1.nausch.org"), (20, "mx1.tachtler.net")]},
                     addrs={"mx1.tachtler.net": ["127.0.0.1"]})
    with pytest.raises(RouteError) as e:
        await servers_for("nausch.org", None, resolver=r, port=25, is_myself=me("127.0.0.1"))
    assert (e.value.permanent, e.value.status, e.value.text) == (
        False, "4.4.4", "unable to find primary relay for nausch.org")


async def test_better_mx_with_temp_failure_is_skipped() -> None:
    r = FakeResolver(
        mx={"d.example": [(5, "broken.example"), (10, "ok.example")]},
        addrs={"ok.example": ["192.0.2.5"]}, temp={"broken.example"},
    )
    servers = await servers_for("d.example", None, resolver=r, port=2525, is_myself=nobody)
    assert servers == [Server("ok.example", "192.0.2.5", 2525, 10)]


async def test_no_mx_uses_domain_address() -> None:
    r = FakeResolver(addrs={"d.example": ["192.0.2.7"]})
    servers = await servers_for("D.Example", None, resolver=r, port=25, is_myself=nobody)
    assert servers == [Server("d.example", "192.0.2.7", 25, 0)]


async def test_no_mx_address_is_myself_defers() -> None:
    r = FakeResolver(addrs={"d.example": ["192.0.2.7"]})
    with pytest.raises(RouteError) as e:
        await servers_for("d.example", None, resolver=r, port=25, is_myself=me("192.0.2.7"))
    assert (e.value.permanent, e.value.status, e.value.text) == (
        False, "4.4.6", "mail for d.example loops back to myself")


async def test_nxdomain_everywhere_bounces_544() -> None:
    with pytest.raises(RouteError) as e:
        await servers_for("gone.example", None, resolver=FakeResolver(), port=25,
                          is_myself=nobody)
    assert (e.value.permanent, e.value.status, e.value.text) == (
        True, "5.4.4",
        "Host or domain name not found. Name service error for name=gone.example type=A: "
        "Host not found")


async def test_mx_temp_failure_defers_443() -> None:
    r = FakeResolver(addrs={"d.example": ["192.0.2.1"]}, temp_mx={"d.example"})
    with pytest.raises(RouteError) as e:
        await servers_for("d.example", None, resolver=r, port=25, is_myself=nobody)
    assert (e.value.permanent, e.value.status, e.value.text) == (
        False, "4.4.3",
        "Host or domain name not found. Name service error for name=d.example type=MX: "
        "Host not found, try again")


async def test_all_mx_hosts_temp_failing_defers() -> None:
    r = FakeResolver(mx={"d.example": [(10, "a.example")]}, temp={"a.example"})
    with pytest.raises(RouteError) as e:
        await servers_for("d.example", None, resolver=r, port=25, is_myself=nobody)
    assert (e.value.permanent, e.value.status) == (False, "4.4.3")
    assert "name=a.example type=A" in e.value.text


async def test_null_mx_bounces_510() -> None:
    r = FakeResolver(mx={"d.example": [(0, "")]})
    with pytest.raises(RouteError) as e:
        await servers_for("d.example", None, resolver=r, port=25, is_myself=nobody)
    assert (e.value.permanent, e.value.status, e.value.text) == (
        True, "5.1.0", "d.example does not accept mail (nullMX)")


async def test_literal_nexthop_skips_mx() -> None:
    r = FakeResolver(mx={"h.example": [(10, "other.example")]}, addrs={"h.example": ["192.0.2.3"]})
    servers = await servers_for("nausch.org", NextHop("h.example", 2525, False), resolver=r,
                                port=25, is_myself=nobody)
    assert servers == [Server("h.example", "192.0.2.3", 2525, 0)]
    assert r.asked == ["A h.example"]


async def test_literal_ip_needs_no_dns() -> None:
    r = FakeResolver()
    servers = await servers_for("nausch.org", NextHop("127.0.0.2", None, False), resolver=r,
                                port=2525, is_myself=nobody)
    assert servers == [Server("127.0.0.2", "127.0.0.2", 2525, 0)]
    assert r.asked == []


async def test_mx_nexthop_looks_up_relayhost_domain() -> None:
    servers = await servers_for("other.example", NextHop("nausch.org", 2526, True),
                                resolver=WIKI, port=25, is_myself=nobody)
    assert [(s.ip, s.port) for s in servers] == [("127.0.0.2", 2526), ("::2", 2526),
                                                  ("127.0.0.1", 2526)]


async def test_address_limit_after_loop_detection() -> None:
    r = FakeResolver(
        mx={"d.example": [(10, "a.example"), (20, "me.example")]},
        addrs={"a.example": [f"192.0.2.{i}" for i in range(1, 9)], "me.example": ["192.0.2.99"]},
    )
    servers = await servers_for("d.example", None, resolver=r, port=25,
                                is_myself=me("192.0.2.99"), mx_address_limit=3)
    assert [s.ip for s in servers] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


async def test_is_myself_gets_the_port() -> None:
    seen: list[tuple[str, int]] = []

    def check(ip: str, port: int) -> bool:
        seen.append((ip, port))
        return False

    await servers_for("nausch.org", None, resolver=WIKI, port=2525, is_myself=check)
    assert seen == [("127.0.0.2", 2525), ("::2", 2525), ("127.0.0.1", 2525)]
