"""Anvil with the cluster's counts: they decide while they answer, this node's own
counts when they do not, and a session is released where it was counted."""

from __future__ import annotations

from types import SimpleNamespace

from backupmx import config, services
from backupmx.anvil import Anvil
from backupmx.redisstore import StoreUnavailable


def svc(extra: str):
    return services.build(config.parse("mynetworks = 127.0.0.1/32\n" + extra))


def session(ip: str = "10.0.0.1"):
    return SimpleNamespace(ctx=SimpleNamespace(client_ip=ip, client_name="unknown"))


class Counts:
    """The cluster as the other nodes have made it: ``others`` sessions and events more."""

    def __init__(self, others: int = 0) -> None:
        self.others = others
        self.open = 0
        self.events: dict[str, int] = {}
        self.down = False
        self.calls: list[str] = []

    def _check(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise StoreUnavailable("redis://h:6379/0: Connection refused")

    def admit(self, ip: str, rate_unit: float | None) -> tuple[int, int]:
        self._check("admit")
        self.open += 1
        self.events["conn"] = self.events.get("conn", self.others) + 1
        return self.others + self.open, self.events["conn"] if rate_unit else 0

    def release(self, ip: str) -> None:
        self._check("release")
        self.open -= 1

    def request(self, kind: str, ip: str, unit: float) -> int:
        self._check(kind)
        self.events[kind] = self.events.get(kind, self.others) + 1
        return self.events[kind]


def test_the_other_nodes_sessions_count_towards_the_limit():
    s = svc("smtpd_client_connection_count_limit = 3\n")
    a = Anvil()
    a.shared = Counts(others=2)  # type: ignore[assignment]
    first = session()
    assert a.admit(first, s) is None
    assert a.admit(session(), s) == "too many connections from 10.0.0.1"
    assert a.count["10.0.0.1"] == 2  # this node's own view goes on beside it


def test_the_cluster_rate_decides_and_requests_are_counted_there():
    s = svc("smtpd_client_connection_rate_limit = 2\n")
    a = Anvil()
    shared = Counts(others=2)
    a.shared = shared  # type: ignore[assignment]
    assert a.admit(session(), s) == "too many connections from 10.0.0.1"
    assert a.request("mail", "10.0.0.1", 60) == 3
    assert a.request("rcpt", "10.0.0.1", 60) == 3


def test_no_limit_no_question_to_the_cluster():
    s = svc("smtpd_client_connection_count_limit = 0\n")
    a = Anvil()
    shared = Counts()
    a.shared = shared  # type: ignore[assignment]
    x = session()
    assert a.admit(x, s) is None
    a.release(x)
    assert shared.calls == []


def test_when_the_cluster_does_not_answer_this_node_counts_alone(capsys):
    s = svc("smtpd_client_connection_count_limit = 2\n")
    a = Anvil()
    shared = Counts(others=5)
    shared.down = True
    a.shared = shared  # type: ignore[assignment]
    one, two = session(), session()
    assert a.admit(one, s) is None  # the cluster's 5 others are not known now
    assert a.admit(two, s) is None
    assert a.admit(session(), s) == "too many connections from 10.0.0.1"
    assert a.request("mail", "10.0.0.1", 60) == 1
    shared.down = False
    a.release(one)  # counted here only: the cluster is not told
    assert shared.calls == ["admit", "admit", "admit", "mail"]
    three = session()
    a.admit(three, s)
    a.release(three)
    assert shared.calls[-2:] == ["admit", "release"]
    assert shared.open == 0


def test_the_warning_is_logged_once_a_minute():
    from backupmx.log import log

    lines: list[str] = []
    old = log.emit
    log.emit = lambda component, text, priority=0: lines.append(f"{component}: {text}")
    try:
        s = svc("smtpd_client_connection_count_limit = 2\n")
        a = Anvil()
        shared = Counts()
        shared.down = True
        a.shared = shared  # type: ignore[assignment]
        for _ in range(5):
            a.admit(session(), s)
    finally:
        log.emit = old  # type: ignore[method-assign]
    assert lines == ["anvil: warning: cluster_store: redis://h:6379/0: Connection refused: "
                     "counting this node's clients only"]
