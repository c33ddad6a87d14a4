"""One client connection: buffered line reading and batched replies.

Our own asyncio protocol rather than StreamReader, because the session must see
what is already buffered (pipelining rules, the STARTTLS injection defence),
read DATA in batches of lines, and flush replies only before it waits for input.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

HIGH_WATER = 256 * 1024
T = TypeVar("T")


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


class Closed(Exception):
    """The client went away."""


class Interrupted(Closed):
    """The server is shutting down and ended the wait for input."""


class SessionExpired(TimeoutError):
    """The whole session outlived its time limit (a client that trickles forever)."""


class Conn(asyncio.Protocol):
    def __init__(self, start: Callable[[Conn], Coroutine[Any, Any, None]]) -> None:
        self._start = start
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self._waiter: asyncio.Future[bool] | None = None  # result True: timed out
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._out: list[bytes] = []
        self._skip_line = False
        self._interrupted = False
        self.linger = 2.0
        self.task: asyncio.Task[None] | None = None
        #: loop time at which the session ends whatever it is doing (None: no cap)
        self.session_deadline: float | None = None
        #: with True a timeout bounds the receipt of a whole line, not each chunk of it
        self.per_record_deadline = True
        #: how long a reply may wait for a client that does not read
        self.write_timeout = 300.0
        #: (client, server) (address, port) from a PROXY header, replacing the socket's
        self.proxied: tuple[tuple[str, int], tuple[str, int]] | None = None

    # --- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport; same interface.
        self.transport = cast(asyncio.Transport, transport)
        self.task = asyncio.get_running_loop().create_task(self._start(self))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > HIGH_WATER and self.transport and not self._paused_reading:
            self.transport.pause_reading()
            self._paused_reading = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()
        if self._drain and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(False)

    def endpoints(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """The client's and this server's (address, port): a PROXY header's, else the socket's."""
        if self.proxied is not None:
            return self.proxied
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername") or ("0.0.0.0", 0)
        local = self.transport.get_extra_info("sockname") or ("", 0)
        return (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))

    # --- reading ------------------------------------------------------------
    def _deadline(self, timeout: float) -> float:
        """When the record now being read must be complete."""
        return asyncio.get_running_loop().time() + timeout

    async def _more(self, timeout: float, deadline: float | None = None) -> None:
        """Flush replies, then wait for more input (or EOF).

        The wait ends after ``timeout``, or at ``deadline`` (the record's, with
        per_record_deadline) or the session's deadline, whichever comes first,
        so a client cannot hold a session by sending a byte now and then.
        """
        await self.flush()
        if self.eof:
            raise Closed()
        if self._paused_reading and self.transport:
            self._paused_reading = False
            self.transport.resume_reading()
        now = asyncio.get_running_loop().time()
        wait = timeout
        if deadline is not None and self.per_record_deadline:
            wait = min(wait, deadline - now)
        capped = self.session_deadline is not None and self.session_deadline - now <= wait
        if capped:
            assert self.session_deadline is not None
            wait = self.session_deadline - now
        if wait <= 0:
            raise SessionExpired() if capped else TimeoutError()
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # One timer on the future itself: cheaper than asyncio.wait_for per read.
        timer = loop.call_later(wait, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if waiter.result():
            raise SessionExpired() if capped else TimeoutError()
        if self._interrupted:
            raise Interrupted()

    def interrupt(self, linger: float) -> None:
        """Make the session's next wait for input end (server shutdown)."""
        self._interrupted = True
        self.linger = linger
        self._wake()

    def pending(self) -> bool:
        """Is client input already waiting (pipelining detection)?"""
        return bool(self.buf)

    def discard_input(self) -> None:
        self.buf.clear()
        self._skip_line = False

    async def readline(self, limit: int, timeout: float) -> tuple[bytes, bool]:
        """One command line without its line end, and whether it ended in a bare LF.

        A line longer than ``limit`` is cut there and the rest of it skipped, as
        Postfix does.  Raises Closed at EOF, TimeoutError on timeout.
        """
        deadline = self._deadline(timeout)
        while True:
            if self._skip_line:
                i = self.buf.find(b"\n")
                if i < 0:
                    self.buf.clear()
                    await self._more(timeout, deadline)
                    continue
                del self.buf[: i + 1]
                self._skip_line = False
            i = self.buf.find(b"\n", 0, limit + 1)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 1]
                if line.endswith(b"\r"):
                    return line[:-1], False
                return line, True
            if len(self.buf) >= limit:
                line = bytes(self.buf[:limit])
                del self.buf[:limit]
                self._skip_line = True
                return line, False
            await self._more(timeout, deadline)

    async def read_header(self, parse: Callable[[bytes], T | None], timeout: float) -> T:
        """What ``parse`` makes of the input before the first SMTP byte (a PROXY header).

        ``parse`` returns None while it needs more input; the whole header must arrive
        within ``timeout``.  Its exceptions propagate; Closed at EOF, TimeoutError.
        """
        deadline = self._deadline(timeout)
        while (found := parse(bytes(self.buf))) is None:
            await self._more(timeout, deadline)
        return found

    def consume(self, n: int) -> None:
        """Drop the first ``n`` bytes of input (a header that read_header returned)."""
        del self.buf[:n]

    async def read_records(self, limit: int, timeout: float) -> list[tuple[bytes, bool, bool]]:
        """All complete DATA records now buffered (waiting for at least one).

        Each record is (content, bare_lf, complete): ``complete`` is False for a
        ``limit``-sized piece of a longer line (its continuation follows).
        CR is never a line end; only the CR right before LF is stripped.
        """
        deadline = self._deadline(timeout)
        while True:
            buf = self.buf
            end = buf.rfind(b"\n")
            if end >= 0:
                chunk = bytes(buf[: end + 1])
                del buf[: end + 1]
                out: list[tuple[bytes, bool, bool]] = []
                for raw in chunk.split(b"\n")[:-1]:
                    if raw.endswith(b"\r"):
                        content, bare = raw[:-1], False
                    else:
                        content, bare = raw, True
                    while len(content) > limit:
                        out.append((content[:limit], False, False))
                        content = content[limit:]
                    out.append((content, bare, True))
                return out
            if len(buf) >= limit:
                # Never split a CR from the LF that may follow it: CRLF would
                # then look like a bare LF.
                cut = limit - 1 if buf[limit - 1] == 0x0D else limit
                piece = bytes(buf[:cut])
                del buf[:cut]
                return [(piece, False, False)]
            await self._more(timeout, deadline)

    async def plain_message(self, limit: int, timeout: float) -> bytes | None:
        """The whole message at once, when it is plain; None to read it record by record.

        Plain means: the standard end ``CRLF.CRLF`` is in the buffer, and before it
        every line ends in CRLF, no CR stands alone and no line starts with a dot.
        Then the record-by-record reader would store exactly these bytes, so the
        per-line work (the largest share of DATA's CPU) can be skipped.  Anything
        unusual falls back to that reader with nothing consumed.
        """
        deadline = self._deadline(timeout)
        lines = self.buf.count(b"\n")
        while True:
            buf = self.buf
            if buf.startswith(b".\r\n"):
                del buf[:3]
                return b""
            end = buf.find(b"\r\n.\r\n")
            if end >= 0:
                region = bytes(buf[: end + 2])
                crlf = region.count(b"\r\n")
                if (
                    len(region) > limit
                    or region.count(b"\n") != crlf
                    or region.count(b"\r") != crlf
                    or b"\n." in region
                    or region.startswith(b".")
                ):
                    return None
                del buf[: end + 5]
                return region
            if len(buf) > limit or b"\n.\n" in buf or b"\n.\r" in buf or buf.startswith(b"."):
                return None
            await self._more(timeout, deadline)
            now_lines = self.buf.count(b"\n")
            if now_lines > lines:  # as the record reader: each complete line renews the deadline
                lines, deadline = now_lines, self._deadline(timeout)

    def unread_records(self, records: list[tuple[bytes, bool, bool]]) -> None:
        """Put records from read_records back, byte for byte (commands after the final dot)."""
        raw = b"".join(
            c + (b"\n" if bare else b"\r\n") if complete else c for c, bare, complete in records
        )
        self.buf[:0] = raw

    # --- TLS ------------------------------------------------------------------
    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Send the queued replies (the 220), drop all buffered plaintext, handshake.

        Discarding happens with no await between it and the switch of protocol,
        so nothing the client pipelined in plaintext is ever read as if it had
        come over TLS (CVE-2011-0411).  Raises ssl.SSLError, OSError, TimeoutError.
        """
        await self.flush()
        t = self.transport
        if t is None or t.is_closing() or self.eof:
            raise Closed()
        self.discard_input()
        if self._paused_reading:
            self._paused_reading = False
            t.resume_reading()
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(
            t, self, context, server_side=True, ssl_handshake_timeout=timeout
        )
        if new is None:
            raise Closed()
        self.transport = new

    @property
    def tls(self) -> ssl.SSLObject | None:
        """The TLS session, once STARTTLS has succeeded."""
        if self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    # --- writing ------------------------------------------------------------
    def reply(self, line: str) -> None:
        self._out.append(line.encode("utf-8", "replace") + b"\r\n")

    async def flush(self) -> None:
        """Send the queued replies; TimeoutError (connection aborted) if they stay stuck."""
        if self._out and self.transport and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()
        if self._drain is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._drain), self.write_timeout)
            except TimeoutError:
                if self.transport is not None:
                    self.transport.abort()
                raise

    async def close(self) -> None:
        """Flush, half-close, and discard input until the client closes too.

        Closing with unread input makes the kernel send a reset, which can
        destroy the final reply (e.g. 421) before the client reads it.
        """
        try:
            await self.flush()
        except TimeoutError:
            return
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.can_write_eof() and not self.eof:
            t.write_eof()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.linger
            while not self.eof and loop.time() < deadline:
                self.buf.clear()
                try:
                    await self._more(deadline - loop.time())
                except (Closed, TimeoutError):
                    break
        t.close()
