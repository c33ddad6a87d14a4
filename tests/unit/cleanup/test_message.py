"""cleanup.Cleanup: headers, hop count, duplicates, access actions, the spool's answer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from backupmx.cleanup.actions import NO_ACTIONS, MessageActions
from backupmx.cleanup.headers import Arrival
from backupmx.cleanup.message import (
    DISCARDED,
    FAILED,
    QUEUED,
    REFUSED,
    Cleanup,
    Message,
    Outcome,
    unique,
)
from backupmx.envelope import Envelope, Recipient
from backupmx.queue.store import SpoolError

ARRIVAL = Arrival(helo="client.example.net", client_name="client.example.net",
                  client_ip="192.0.2.7", protocol="ESMTP")
BODY = b"Subject: x\r\n\r\nHello.\r\n"


@dataclass
class FakeSpool:
    error: SpoolError | None = None
    committed: list[tuple[Envelope, bytes]] = field(default_factory=list)

    async def commit(self, env: Envelope, content: bytes) -> str:
        if self.error is not None:
            raise self.error
        self.committed.append((env, content))
        return f'{{"id": "{env.id}"}}'


@dataclass
class FakeQueue:
    submitted: list[tuple[Envelope, str]] = field(default_factory=list)

    def submit(self, env: Envelope, stored: str) -> None:
        self.submitted.append((env, stored))


def msg(*rcpts: str, actions: MessageActions = NO_ACTIONS) -> Message:
    return Message(queue_id="4F2A1B3C", sender="s@sender.example",
                   recipients=[Recipient(r) for r in rcpts], arrival=ARRIVAL, actions=actions)


async def run(m: Message, content: bytes = BODY, spool: FakeSpool | None = None,
              hops: int = 50) -> tuple[Outcome, FakeSpool, FakeQueue]:
    spool = spool or FakeSpool()
    queue = FakeQueue()
    outcome = await Cleanup(spool, queue).enqueue(m, content, "mx1.tachtler.net", hops)
    return outcome, spool, queue


async def test_queued_once_durable_and_announced() -> None:
    outcome, spool, queue = await run(msg("alice@nausch.org"))
    assert outcome.kind == QUEUED
    assert outcome.reply.line() == "250 2.0.0 Ok: queued as 4F2A1B3C"
    (env, content), = spool.committed
    assert queue.submitted == [(env, '{"id": "4F2A1B3C"}')]
    assert env.client == "client.example.net[192.0.2.7]"
    assert re.fullmatch(
        rb"Received: from client\.example\.net \(client\.example\.net \[192\.0\.2\.7\]\)\r\n"
        rb"\tby mx1\.tachtler\.net \(backupmx\) with ESMTP id 4F2A1B3C\r\n"
        rb"\tfor <alice@nausch\.org>; [^\r\n]+\r\n" + re.escape(BODY), content)
    assert env.size == len(content)


async def test_duplicates_are_dropped_the_first_wins() -> None:
    first = Recipient("valid@nausch.org", orcpt="rfc822;valid@nausch.org.")
    m = Message(queue_id="Q", sender="", arrival=ARRIVAL, actions=NO_ACTIONS, recipients=[
        first, Recipient("valid@nausch.org"), Recipient("valid@NAUSCH.org"),
        Recipient("Valid@nausch.org")])
    _, spool, _ = await run(m)
    (env, content), = spool.committed
    assert env.recipients == [first, Recipient("Valid@nausch.org")]  # local parts keep case
    assert b"Received: " in content and b"\tfor <" not in content  # two recipients


def test_unique_keeps_order() -> None:
    rs = [Recipient(a) for a in ("b@x.example", "a@x.example", "b@X.EXAMPLE", "postmaster")]
    assert [r.address for r in unique(rs)] == ["b@x.example", "a@x.example", "postmaster"]


async def test_actions_prepend_hold_redirect_bcc() -> None:
    actions = (NO_ACTIONS.prepended("X-One: 1").prepended("X-Two: 2").held()
               .redirected("first@tachtler.net").redirected("spam@tachtler.net")
               .copied("copy@tachtler.net").copied("copy@tachtler.net"))
    _, spool, _ = await run(msg("bob@nausch.org", actions=actions))
    (env, content), = spool.committed
    assert env.hold is True
    assert [r.address for r in env.recipients] == ["spam@tachtler.net", "copy@tachtler.net"]
    assert content.startswith(b"X-One: 1\r\nX-Two: 2\r\nReceived: from client.example.net")


def test_actions_apply_to_an_envelope() -> None:
    env = Envelope(id="Q1", sender="", recipients=[Recipient("bob@nausch.org")], arrival=0.0)
    MessageActions(bcc=("bob@nausch.org", "copy@tachtler.net")).apply(env)
    assert env.hold is False
    assert [r.address for r in env.recipients] == ["bob@nausch.org", "copy@tachtler.net"]


async def test_discard_answers_250_and_stores_nothing() -> None:
    outcome, spool, queue = await run(msg("bob@nausch.org", actions=NO_ACTIONS.discarded()))
    assert outcome.kind == DISCARDED
    assert outcome.reply.line() == "250 2.0.0 Ok: queued as 4F2A1B3C"
    assert spool.committed == [] and queue.submitted == []


async def test_hop_count_counts_our_received_line_too() -> None:
    content = b"Received: from a\r\nReceived: from b\r\n\r\nReceived: in the body\r\n"
    outcome, spool, _ = await run(msg("bob@nausch.org"), content, hops=3)
    assert (outcome.kind, outcome.reply.line()) == (
        REFUSED, "554 5.4.0 Error: too many hops")
    assert spool.committed == []
    outcome, spool, _ = await run(msg("bob@nausch.org"), content, hops=4)
    assert outcome.kind == QUEUED


async def test_a_spool_failure_is_a_4xx_and_nothing_is_announced() -> None:
    full = FakeSpool(error=SpoolError("database or disk is full", disk_full=True))
    outcome, _, queue = await run(msg("bob@nausch.org"), spool=full)
    assert (outcome.kind, outcome.reply.line()) == (
        FAILED, "452 4.3.1 Insufficient system storage")
    assert queue.submitted == []
    locked = FakeSpool(error=SpoolError("database is locked"))
    outcome, _, _ = await run(msg("bob@nausch.org"), spool=locked)
    assert outcome.reply.line() == "451 4.3.0 Error: queue file write error"
