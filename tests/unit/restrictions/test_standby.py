"""Standby mode in the RCPT decision: refused while the primary is known healthy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupmx import standby
from backupmx.health import Health
from backupmx.restrictions.rcpt import decide
from tests.unit.restrictions.spamkit import build, ctx

ON = "relay_domains = nausch.org\nstandby_while_primary_up = yes\n"
REFUSAL = ("450 4.7.1 <bob@nausch.org>: Recipient address rejected: this backup MX is on "
           "standby while the primary MX of nausch.org is up; deliver to the primary")


@pytest.fixture(autouse=True)
def view() -> Iterator[standby.View]:
    """This process's view, as a worker holds it; empty again afterwards."""
    standby.VIEW.until = {"nausch.org": time.time() + 60}
    standby.VIEW.known = True
    try:
        yield standby.VIEW
    finally:
        standby.VIEW.until = {}
        standby.VIEW.known = True


async def line(svc, rcpt: str = "bob@nausch.org", trace: list[str] | None = None,
               **kw: object) -> str:
    d = await decide(ctx(recipient=rcpt, **kw), svc, trace)
    if d.verdict is None:
        return f"250 keep {d.keep}"
    assert d.verdict.reply is not None
    assert d.standby == d.verdict.reply.line().startswith("450 4.7.1")
    return d.verdict.reply.line()


async def test_refused_while_the_primary_is_up(tmp_path: Path) -> None:
    svc = build(ON, tmp_path)
    trace: list[str] = []
    assert await line(svc, trace=trace) == REFUSAL
    assert trace[-1] == f"standby_while_primary_up: the primary of nausch.org is up => reject " \
        f"({REFUSAL})"
    assert await line(build("relay_domains = nausch.org\n", tmp_path)) == \
        "250 keep bob@nausch.org"  # standby off


async def test_accepted_once_the_knowledge_runs_out_or_is_missing(
        tmp_path: Path, view: standby.View) -> None:
    svc = build(ON, tmp_path)
    view.until = {"nausch.org": time.time() - 1}
    assert await line(svc) == "250 keep bob@nausch.org"
    view.until = {}
    trace: list[str] = []
    assert await line(svc, trace=trace) == "250 keep bob@nausch.org"
    assert trace[-1] == ("standby_while_primary_up: the primary of nausch.org is not known to "
                         "be up: accepted")
    view.until, view.known = {"nausch.org": time.time() + 60}, False  # explain, no server
    assert await line(svc) == "250 keep bob@nausch.org"


async def test_what_standby_leaves_alone(tmp_path: Path) -> None:
    svc = build(ON, tmp_path)
    # mynetworks clients are served
    assert await line(svc, client_ip="127.0.0.1") == "250 keep bob@nausch.org"
    # postmaster of this host is accepted before any restriction
    assert await line(svc, "postmaster@mx1.tachtler.net") == "250 keep postmaster@tachtler.net"
    # a relay attempt is still refused as one, whatever is known of that domain
    standby.VIEW.until["example.com"] = time.time() + 60
    assert await line(svc, "bob@example.com") == (  # the default defer_unauth_destination
        "454 4.7.1 <bob@example.com>: Relay access denied")
    # a relayed domain whose primary is not known to be up (a subdomain, relay_domains
    # matching subdomains): its own state counts, not its parent's
    assert await line(svc, "bob@other.nausch.org") == "250 keep bob@other.nausch.org"


def test_table_holds_the_destinations_known_healthy_now() -> None:
    from backupmx.outcome import DEFERRED, DELIVERED, Outcome, Stage

    h = Health()
    h.delivered("nausch.org", [Outcome(DELIVERED, "2.0.0", "250 Ok", Stage.RECIPIENT)], 1000.0)
    h.delivered("example.com", [Outcome(DEFERRED, "4.4.1", "refused", Stage.CONNECT)], 1000.0)
    h.delivered("old.example", [Outcome(DELIVERED, "2.0.0", "250 Ok", Stage.RECIPIENT)], 500.0)
    assert standby.table(h, 180, 1010.0) == {"nausch.org": 1180.0}


def test_learn_from_a_running_server_or_from_none() -> None:
    standby.learn({"destinations": [
        {"destination": "nausch.org", "healthy_until": "2026-12-05T13:00:00Z"},
        {"destination": "example.com", "healthy_until": None}]})
    assert standby.VIEW.known and standby.VIEW.until == {"nausch.org": 1796475600.0}
    standby.learn(None)
    assert not standby.VIEW.known and standby.VIEW.until == {}
