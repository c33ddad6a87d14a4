"""Per-destination delivery slots: Postfix's destination concurrency limit.

The limit is read from the running configuration each time a slot is asked for or
given back, so a reload reaches the next delivery: lowered, new deliveries wait until
those in flight have dropped below it (none is interrupted); raised, ``refresh`` lets
the waiting ones in at once.  Waiters are served in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class DestinationSlots:
    """Slots per destination, at most ``limit()`` busy at a time for each."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._busy: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def busy(self, destination: str) -> int:
        return self._busy.get(destination, 0)

    @asynccontextmanager
    async def slot(self, destination: str) -> AsyncIterator[None]:
        """Hold one of ``destination``'s slots for the block."""
        await self._acquire(destination)
        try:
            yield
        finally:
            self._release(destination)

    def refresh(self) -> None:
        """The limit may have changed (a reload): let in whoever now fits."""
        for destination in list(self._waiting):
            self._grant(destination)

    def _cap(self) -> int:
        return max(1, self._limit())

    async def _acquire(self, destination: str) -> None:
        if destination not in self._waiting and self.busy(destination) < self._cap():
            self._busy[destination] = self.busy(destination) + 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(destination, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(destination)  # granted just before the cancel: give it back
            else:
                self._forget_waiter(destination, future)
            raise

    def _release(self, destination: str) -> None:
        left = self.busy(destination) - 1
        if left > 0:
            self._busy[destination] = left
        else:
            self._busy.pop(destination, None)
        self._grant(destination)

    def _grant(self, destination: str) -> None:
        waiting = self._waiting.get(destination)
        cap = self._cap()
        while waiting and self.busy(destination) < cap:
            future = waiting.popleft()
            if not future.done():
                self._busy[destination] = self.busy(destination) + 1
                future.set_result(None)
        if not waiting:
            self._waiting.pop(destination, None)

    def _forget_waiter(self, destination: str, future: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(destination)
        if waiting is not None and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._waiting[destination]
