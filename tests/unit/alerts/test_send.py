"""The webhook's retries and the bounded queue, against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from backupmx.alerts.alert import HOLDING, Alert
from backupmx.alerts.send import Channel, Notice, Post, PostmasterMail, Webhook, retryable
from backupmx.envelope import Envelope
from backupmx.log import log

T0 = 1_700_000_000.0


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)
    bodies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.bodies.append((status, await request.json()))
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    r.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield r
    finally:
        await runner.cleanup()


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    got: list[str] = []
    monkeypatch.setattr(log, "emit", lambda component, text, priority=0: got.append(text))
    return got


def post(url: str) -> Post:
    return Post(HOLDING, url, 5.0, {"kind": HOLDING, "destination": "nausch.org"})


async def test_5xx_is_tried_again_until_it_succeeds(receiver: Receiver, lines: list[str]):
    receiver.statuses = [500, 503]
    hook = Webhook(backoff=0.01)
    await hook.post(post(receiver.url))
    await hook.close()
    assert [s for s, _ in receiver.bodies] == [500, 503, 200]
    assert all(b == {"kind": "holding", "destination": "nausch.org"} for _, b in receiver.bodies)
    assert lines[-1] == "alert=holding webhook: HTTP 200, attempt 3"


async def test_a_4xx_is_given_up_at_once(receiver: Receiver, lines: list[str]):
    receiver.statuses = [404]
    hook = Webhook(backoff=0.01)
    await hook.post(post(receiver.url))
    await hook.close()
    assert [s for s, _ in receiver.bodies] == [404]
    assert lines == ["warning: alert=holding webhook refused it: HTTP 404"]


async def test_attempts_are_bounded(receiver: Receiver, lines: list[str]):
    receiver.statuses = [500] * 10
    hook = Webhook(attempts=3, backoff=0.01)
    await hook.post(post(receiver.url))
    await hook.close()
    assert len(receiver.bodies) == 3
    assert lines[-1] == ("warning: alert=holding webhook failed: HTTP 500; giving up after 3 "
                         "attempts")


async def test_an_unreachable_webhook_is_given_up_after_the_attempts(lines: list[str]):
    hook = Webhook(attempts=2, backoff=0.01)
    await hook.post(post("http://127.0.0.1:9/hook"))  # discard port: nobody listens
    await hook.close()
    assert lines[-1].startswith("warning: alert=holding webhook failed: ")
    assert lines[-1].endswith("giving up after 2 attempts")


def test_statuses_worth_trying_again():
    assert [s for s in (200, 400, 404, 408, 429, 500, 502) if retryable(s)] == [408, 429, 500,
                                                                                 502]


async def test_a_full_channel_drops_and_logs_and_never_waits(lines: list[str]):
    gate = asyncio.Event()
    handled: list[int] = []

    async def slow(n: int) -> None:
        await gate.wait()
        handled.append(n)

    ch: Channel[int] = Channel("webhook", slow, size=2)
    for n in range(4):
        ch.put(n, f"alert={n}")
    assert lines == ["warning: alert=2: webhook queue full, not sent",
                     "warning: alert=3: webhook queue full, not sent"]
    await asyncio.sleep(0)  # the task takes item 0: room for one more
    ch.put(4, "alert=4")
    assert len(lines) == 2
    gate.set()
    await asyncio.wait_for(ch.idle(), 5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert handled == [0, 1, 4]
    ch.close()


async def test_a_failing_item_does_not_end_the_channel(lines: list[str]):
    done: list[int] = []

    async def handle(n: int) -> None:
        if n == 0:
            raise OSError("no space left on device")
        done.append(n)

    ch: Channel[int] = Channel("postmaster notification", handle)
    ch.put(0, "a")
    ch.put(1, "b")
    await asyncio.wait_for(ch.idle(), 5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert done == [1]
    assert lines[0] == "warning: postmaster notification failed: OSError: no space left on device"
    ch.close()


async def test_the_postmaster_notice_is_committed_then_submitted(lines: list[str]):
    stored: list[tuple[Envelope, bytes]] = []
    submitted: list[Envelope] = []

    class Spool:
        async def commit(self, env: Envelope, content: bytes) -> str:
            stored.append((env, content))
            return ""

    mail = PostmasterMail(Spool(), submitted.append)
    alert = Alert(HOLDING, T0, "mail for nausch.org is being held: refused", "nausch.org")
    await mail.send(Notice(alert, "mx1.tachtler.net", "postmaster@nausch.org"))
    (env, content), = stored
    assert submitted == [env]
    assert env.sender == "" and [r.address for r in env.recipients] == ["postmaster@nausch.org"]
    assert env.size == len(content) and env.arrival == T0
    subject = b"Subject: backupmx alert on mx1.tachtler.net: holding mail for nausch.org\r\n"
    assert subject in content
    assert lines == [f"alert=holding postmaster notification: {env.id}"]
