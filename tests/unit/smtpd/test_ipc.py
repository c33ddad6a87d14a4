"""The master–worker channel: notices in order, requests answered, failures reported."""

from __future__ import annotations

import asyncio
import socket

import pytest

from backupmx.ipc import Channel, ChannelClosed, Message


async def pair(handler_a, handler_b) -> tuple[Channel, Channel, list[asyncio.Task[None]]]:
    a, b = socket.socketpair()
    ca = await Channel.open(a, handler_a)
    cb = await Channel.open(b, handler_b)
    return ca, cb, [asyncio.create_task(ca.serve()), asyncio.create_task(cb.serve())]


async def nothing(msg: Message) -> Message | None:
    return None


async def test_notices_arrive_in_order_and_requests_get_their_own_answer():
    seen: list[Message] = []

    async def master(msg: Message) -> Message | None:
        if msg["t"] == "slow":
            await asyncio.sleep(0.2)
            return {"n": msg["n"] * 10}
        if msg["t"] == "fast":
            return {"n": msg["n"] + 1}
        seen.append(msg)
        return None

    m, w, tasks = await pair(master, nothing)
    for i in range(100):
        w.notify({"t": "queued", "i": i})
    slow = asyncio.create_task(w.request({"t": "slow", "n": 4}))
    await asyncio.sleep(0)  # sent first
    fast = await w.request({"t": "fast", "n": 1})
    assert fast == {"n": 2, "re": 2}
    assert not slow.done()  # the slow answer holds nothing up
    assert (await slow) == {"n": 40, "re": 1}
    assert [s["i"] for s in seen] == list(range(100))
    w.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_a_failing_handler_answers_with_its_error():
    async def master(msg: Message) -> Message | None:
        raise KeyError("address")

    m, w, tasks = await pair(master, nothing)
    assert await w.request({"t": "verify"}) == {"error": "KeyError('address')", "re": 1}
    w.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_a_request_fails_when_the_other_side_goes():
    async def never(msg: Message) -> Message | None:
        await asyncio.sleep(60)
        return None

    m, w, tasks = await pair(never, nothing)
    waiting = asyncio.create_task(w.request({"t": "admit"}))
    await asyncio.sleep(0.05)
    m.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(ChannelClosed):
        await w.request({"t": "admit"})
    for t in tasks:
        t.cancel()


async def test_a_handler_may_answer_at_once():
    def master(msg: Message) -> Message | None:
        return {"refusal": None} if msg["t"] == "admit" else None

    m, w, tasks = await pair(master, nothing)
    assert await w.request({"t": "admit"}) == {"refusal": None, "re": 1}
    assert await w.request({"t": "release"}) == {"re": 2}
    assert m._tasks == set()  # no task was needed for either
    w.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
