"""The line between the master and one smtpd worker: JSON objects, one per line.

Both ends run an asyncio event loop over one end of a socketpair.  A *notice* (a
message was queued, ETRN asked for a flush, a session ended) carries no ``id`` and gets
no answer; a *request* (may this client connect, is this address deliverable) carries an
``id`` that its answer repeats as ``re``.  A handler answers at once (a dict or
None) or returns an awaitable; only then does the request get a task of its own, so a
slow one (a verification probe) never holds up the notices behind it, and the many
quick ones (anvil) cost no task each.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from backupmx.log import log

Message = dict[str, Any]
Handler = Callable[[Message], "Message | None | Awaitable[Message | None]"]

#: the longest line either side accepts: an envelope with many long recipients
LINE_LIMIT = 64 * 1024 * 1024


class ChannelClosed(ConnectionError):
    """The other side has gone away."""


class RemoteError(Exception):
    """A request failed on the other side; shown exactly as the exception there was."""

    def __repr__(self) -> str:
        return str(self)


class Channel:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._out: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket, handler: Handler) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer, handler)

    def notify(self, msg: Message) -> None:
        """Send a notice; silently nothing once the other side is gone.

        What is sent within one turn of the event loop goes out in one write: under load
        a worker has several messages to announce at once, and each write is a syscall.
        """
        self.notify_raw(json.dumps(msg, separators=(",", ":")).encode())

    def notify_raw(self, line: bytes) -> None:
        """Send a notice already encoded as one JSON object without a newline.

        For a notice that embeds JSON made elsewhere (a stored envelope): encoding it
        again as a string would escape every quote of it, on every message.
        """
        if self.closed:
            return
        self._out.append(line)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        if not self.closed:
            self._out.append(b"")
            self._writer.write(b"\n".join(self._out))
        self._out.clear()

    async def request(self, msg: Message) -> Message:
        """Send a request and wait for its answer; ChannelClosed if the other side goes."""
        if self.closed:
            raise ChannelClosed("channel closed")
        n = next(self._ids)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[n] = fut
        self.notify({**msg, "id": n})
        try:
            return await fut
        finally:
            self._pending.pop(n, None)

    async def serve(self) -> None:
        """Read and dispatch until the other side closes; then fail what still waits."""
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("master", f"garbled line on a worker channel: {line[:80]!r}")
                    continue
                if "re" in msg:
                    fut = self._pending.get(msg["re"])
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif "id" in msg:
                    self._request(msg)
                else:
                    result = self._handler(msg)
                    if inspect.isawaitable(result):
                        await result
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self.closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ChannelClosed("channel closed"))
            self._writer.close()

    def _request(self, msg: Message) -> None:
        try:
            result = self._handler(msg)
        except Exception as e:  # the asker gets the failure, never silence
            result = {"error": repr(e)}
        if inspect.isawaitable(result):
            task = asyncio.create_task(self._answer(msg, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.notify({**(result or {}), "re": msg["id"]})

    async def _answer(self, msg: Message, pending: Awaitable[Message | None]) -> None:
        try:
            reply = await pending or {}
        except Exception as e:
            reply = {"error": repr(e)}
        self.notify({**reply, "re": msg["id"]})

    def close(self) -> None:
        self.closed = True
        self._writer.close()
