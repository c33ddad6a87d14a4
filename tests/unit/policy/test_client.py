"""The policy client against a scripted loopback server: reuse, limits, retries, defaults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from backupmx.policy.client import (
    Endpoint,
    PolicyClient,
    ServiceSyntaxError,
    Settings,
    parse_endpoint,
    parse_service,
)
from backupmx.policy.request import attributes, decode, encode
from backupmx.restrictions.engine import Context

Script = Callable[[dict[str, str], int], bytes | None]  # (request, n) -> reply or None=close


class FakeServer:
    """Answers each request with ``script(attrs, n)``; records connections and requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[dict[str, str]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                block = b""
                while (line := await r.readline()) not in (b"\n", b""):
                    block += line
                if not line:
                    return
                attrs = decode(block)
                self.requests.append(attrs)
                reply = self.script(attrs, len(self.requests))
                if reply is None:
                    return
                w.write(reply)
                await w.drain()
        finally:
            w.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def client(self, **settings: float | int | str) -> PolicyClient:
        base = Settings(timeout=2, retry_delay=0)
        return PolicyClient(Endpoint("inet", "127.0.0.1", self.port),
                            Settings(**{**base.__dict__, **settings}))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], FakeServer]]:
    servers: list[FakeServer] = []

    async def make(script: Script) -> FakeServer:
        s = FakeServer(script)
        await s.start()
        servers.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in servers:
        assert s.server is not None
        s.server.close()


ATTRS = {"request": "smtpd_access_policy", "recipient": "bob@nausch.org"}


async def test_one_connection_is_reused(serve):
    srv = await serve(lambda a, n: f"action=DUNNO {n}\n\n".encode())
    c = srv.client()
    assert [await c.query(ATTRS) for _ in range(3)] == ["DUNNO 1", "DUNNO 2", "DUNNO 3"]
    assert srv.connections == 1
    c.close()


async def test_request_limit_and_max_idle_reconnect(serve):
    srv = await serve(lambda a, n: b"action=OK\n\n")
    c = srv.client(request_limit=2)
    for _ in range(3):
        await c.query(ATTRS)
    assert srv.connections == 2
    c2 = srv.client(max_idle=0.2)
    await c2.query(ATTRS)
    await asyncio.sleep(0.3)
    await c2.query(ATTRS)
    assert srv.connections == 4
    c.close()
    c2.close()


async def test_max_ttl_closes_even_a_busy_connection(serve):
    srv = await serve(lambda a, n: b"action=DUNNO\n\n")
    c = srv.client(max_ttl=0.3)
    await c.query(ATTRS)
    await asyncio.sleep(0.2)
    await c.query(ATTRS)  # used 0.2 s ago, opened 0.2 s ago: kept
    await asyncio.sleep(0.2)
    await c.query(ATTRS)  # opened 0.4 s ago: replaced although used recently
    assert srv.connections == 2
    c.close()


async def test_server_closing_connection_costs_a_retry_not_an_error(serve):
    srv = await serve(lambda a, n: None if n == 1 else b"action=REJECT go away\n\n")
    c = srv.client()
    assert await c.query(ATTRS) == "REJECT go away"
    assert srv.connections == 2


async def test_reply_without_action_and_empty_reply_fail(serve):
    srv = await serve(lambda a, n: b"foo=bar\n\n" if n == 1 else b"\n")
    c = srv.client(try_limit=2)
    assert await c.query(ATTRS) is None
    assert len(srv.requests) == 2


async def test_unreachable_server_gives_none_after_try_limit():
    c = PolicyClient(Endpoint("inet", "127.0.0.1", 1), Settings(timeout=2, retry_delay=0,
                                                                 try_limit=3))
    assert await c.query(ATTRS) is None


async def test_slow_server_times_out(serve):
    srv = await serve(lambda a, n: b"action=DUNNO")  # never ends the block
    c = srv.client(timeout=0.3, try_limit=1)
    assert await c.query(ATTRS) is None


async def test_unknown_reply_attributes_are_ignored_first_action_wins(serve):
    srv = await serve(lambda a, n: b"x=1\naction=DUNNO\naction=OK\n\n")
    assert await srv.client().query(ATTRS) == "DUNNO"


def test_request_has_every_postfix_attribute():
    ctx = Context(client_ip="198.51.100.7", client_name="mail.sender.example",
                  reverse_name="mail.sender.example", helo="mail.sender.example",
                  protocol="ESMTP", sender="alice@sender.example", recipient="bob@nausch.org",
                  client_port=49152, server_address="192.0.2.25", server_port=25,
                  instance="4d2.65f01a2b.7c1e3.0", nrcpt=2)
    attrs = attributes(ctx, "ctx1", "3.6")
    assert list(attrs) == [
        "request", "protocol_state", "protocol_name", "client_address", "client_name",
        "client_port", "reverse_client_name", "server_address", "server_port", "helo_name",
        "sender", "recipient", "recipient_count", "queue_id", "instance", "size",
        "etrn_domain", "stress", "sasl_method", "sasl_username", "sasl_sender",
        "ccert_subject", "ccert_issuer", "ccert_fingerprint", "ccert_pubkey_fingerprint",
        "encryption_protocol", "encryption_cipher", "encryption_keysize", "policy_context",
        "compatibility_level", "mail_version"]
    assert attrs["recipient_count"] == "0"  # only DATA/END-OF-MESSAGE count recipients
    assert (attrs["client_port"], attrs["server_port"], attrs["policy_context"]) == \
        ("49152", "25", "ctx1")
    assert encode({"a": "x\ny", "b": ""}) == b"a=x y\nb=\n\n"


def test_endpoints():
    assert parse_endpoint("inet:127.0.0.1:10023", "/q") == Endpoint("inet", "127.0.0.1", 10023)
    assert parse_endpoint("inet:[::1]:10023", "/q") == Endpoint("inet", "::1", 10023)
    assert parse_endpoint("unix:postgrey/socket", "/var/spool/postfix") == \
        Endpoint("unix", "/var/spool/postfix/postgrey/socket")
    assert parse_endpoint("local:/run/p.sock", "/q") == Endpoint("unix", "/run/p.sock")
    assert str(Endpoint("inet", "::1", 1)) == "inet:[::1]:1"
    for bad in ("inet:127.0.0.1", "tcp:1.2.3.4:5", "inet:h:99999", "unix:"):
        with pytest.raises(ServiceSyntaxError):
            parse_endpoint(bad, "/q")


def test_per_service_overrides():
    ep, s = parse_service(
        "inet:127.0.0.1:9998, timeout=10s, { default_action = 451 4.3.5 try later }, "
        "try_limit=1", Settings(), "/q")
    assert ep == Endpoint("inet", "127.0.0.1", 9998)
    assert (s.timeout, s.try_limit, s.default_action, s.max_idle) == \
        (10, 1, "451 4.3.5 try later", 300)
    for bad in ("inet:127.0.0.1:9, bogus=1", "inet:127.0.0.1:9, timeout", "",
                "inet:127.0.0.1:9, timeout=soon"):
        with pytest.raises(ServiceSyntaxError):
            parse_service(bad, Settings(), "/q")
