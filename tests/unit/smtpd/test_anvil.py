"""Anvil: per-client count and rate limits, exemptions, release."""

from __future__ import annotations

from types import SimpleNamespace

from backupmx import config, services
from backupmx.anvil import Anvil


def svc(extra: str):
    return services.build(config.parse("mynetworks = 127.0.0.1/32\n" + extra))


def session(ip: str):
    return SimpleNamespace(ctx=SimpleNamespace(client_ip=ip, client_name="unknown"))


def test_count_limit_and_release():
    s = svc("smtpd_client_connection_count_limit = 2\n")
    a = Anvil()
    one, two, three = session("10.0.0.1"), session("10.0.0.1"), session("10.0.0.1")
    assert a.admit(one, s) is None
    assert a.admit(two, s) is None
    assert a.admit(three, s) == "too many connections from 10.0.0.1"
    assert a.admit(session("10.0.0.2"), s) is None
    a.release(three)
    a.release(two)
    assert a.admit(session("10.0.0.1"), s) is None
    assert a.count["10.0.0.1"] == 2


def test_rate_limit_within_the_time_unit():
    s = svc("smtpd_client_connection_rate_limit = 3\nanvil_rate_time_unit = 60s\n")
    a = Anvil()
    got = []
    for t in (0.0, 1.0, 2.0, 3.0):
        x = session("10.0.0.1")
        got.append(a.admit(x, s, now=t))
        a.release(x)
    assert got == [None, None, None, "too many connections from 10.0.0.1"]
    x = session("10.0.0.1")
    assert a.admit(x, s, now=61.5) is None  # 0.0 and 1.0 have left the window


def test_refused_attempts_count_towards_the_rate():
    s = svc("smtpd_client_connection_rate_limit = 1\nanvil_rate_time_unit = 10s\n")
    a = Anvil()
    assert a.admit(session("10.0.0.1"), s, now=0.0) is None
    for t in range(1, 20):
        assert a.admit(session("10.0.0.1"), s, now=t * 0.5) is not None
    assert a.admit(session("10.0.0.1"), s, now=30.0) is None


def test_mynetworks_is_exempt():
    s = svc("smtpd_client_connection_count_limit = 1\nsmtpd_client_connection_rate_limit = 1\n")
    a = Anvil()
    assert [a.admit(session("127.0.0.1"), s, now=0.0) for _ in range(5)] == [None] * 5


def test_request_rates_are_counted_per_kind_and_client_within_the_unit():
    a = Anvil()
    assert [a.request("mail", "10.0.0.1", 60, now=t) for t in (0.0, 1.0, 2.0)] == [1, 2, 3]
    assert a.request("rcpt", "10.0.0.1", 60, now=2.0) == 1
    assert a.request("mail", "10.0.0.2", 60, now=2.0) == 1
    assert a.request("mail", "10.0.0.1", 60, now=60.5) == 3  # 0.0 has left the window
