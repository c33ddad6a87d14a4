"""Per-destination slots whose limit follows the configuration."""

from __future__ import annotations

import asyncio

from backupmx.concurrency import DestinationSlots


class Holders:
    """Tasks that each take a slot of one destination and keep it until told."""

    def __init__(self, slots: DestinationSlots, destination: str = "nausch.org") -> None:
        self.slots = slots
        self.destination = destination
        self.inside: list[int] = []
        self.leave: dict[int, asyncio.Event] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, n: int) -> None:
        for i in range(len(self.tasks), len(self.tasks) + n):
            self.leave[i] = asyncio.Event()
            self.tasks[i] = asyncio.create_task(self._hold(i))

    async def _hold(self, i: int) -> None:
        async with self.slots.slot(self.destination):
            self.inside.append(i)
            await self.leave[i].wait()
            self.inside.remove(i)

    async def release(self, *ids: int) -> None:
        for i in ids:
            self.leave[i].set()
        await asyncio.gather(*(self.tasks[i] for i in ids))
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_most_the_limit_and_in_arrival_order() -> None:
    h = Holders(DestinationSlots(lambda: 2))
    h.start(4)
    await settle()
    assert h.inside == [0, 1]
    await h.release(0)
    assert h.inside == [1, 2]
    other = Holders(h.slots, "other.example")  # each destination has its own slots
    other.start(2)
    await settle()
    assert other.inside == [0, 1]
    await h.release(1, 2)
    assert h.inside == [3]
    await h.release(3)
    await other.release(0, 1)
    assert h.slots.busy("nausch.org") == h.slots.busy("other.example") == 0


async def test_a_lowered_limit_lets_nobody_in_until_below_it() -> None:
    limit = [3]
    h = Holders(DestinationSlots(lambda: limit[0]))
    h.start(5)
    await settle()
    assert h.inside == [0, 1, 2]
    limit[0] = 1
    h.slots.refresh()
    await h.release(0)
    assert h.inside == [1, 2]  # those in flight go on; none of the waiting enters
    await h.release(1)
    assert h.inside == [2]
    await h.release(2)
    assert h.inside == [3]
    await h.release(3)
    assert h.inside == [4]
    await h.release(4)


async def test_a_raised_limit_lets_the_waiting_in_at_refresh() -> None:
    limit = [1]
    h = Holders(DestinationSlots(lambda: limit[0]))
    h.start(4)
    await settle()
    assert h.inside == [0]
    limit[0] = 3
    h.slots.refresh()
    await settle()
    assert h.inside == [0, 1, 2]
    await h.release(0, 1, 2)
    assert h.inside == [3]
    await h.release(3)


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    h = Holders(DestinationSlots(lambda: 1))
    h.start(3)
    await settle()
    h.tasks[1].cancel()
    await settle()
    await h.release(0)
    assert h.inside == [2]
    await h.release(2)
    assert h.slots.busy("nausch.org") == 0


async def test_zero_means_one() -> None:
    h = Holders(DestinationSlots(lambda: 0))
    h.start(2)
    await settle()
    assert h.inside == [0]
    await h.release(0)
    await h.release(1)
