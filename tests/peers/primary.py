"""A recording SMTP server that plays a domain's primary MX (or any next hop).

It runs its own asyncio loop in a thread so that synchronous tests can start it,
stop it ("primary down") and read what it received while backupmx, a separate
process, delivers to it. Messages are recorded byte for byte as they went over the
wire, minus the SMTP transparency: the tests compare them with what was submitted.

The behaviour knobs are plain attributes that a test may set at any time, e.g.
``primary.rcpt_reply["a@nausch.org"] = "450 4.2.0 try later"``; each session reads
them when it needs them, under the recorder's lock.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
from dataclasses import dataclass, field

CRLF = b"\r\n"


@dataclass(frozen=True)
class Received:
    """One message the server accepted (a 2xx reply to the final dot)."""

    mail_from: str
    mail_params: list[str]
    rcpts: list[str]
    rcpt_params: list[list[str]]
    data: bytes


@dataclass
class Session:
    """One connection. ``transcript`` entries are ``("C", line)`` for a client command
    line, ``("S", reply)`` for a server reply (all its lines) and ``("D", raw)`` for
    the raw DATA content including the final ``.`` line."""

    peer: tuple[str, int]
    transcript: list[tuple[str, bytes]] = field(default_factory=list)
    closed: bool = False

    @property
    def commands(self) -> list[bytes]:
        """The client's command lines without their line ending."""
        return [line.rstrip(b"\r\n") for kind, line in self.transcript if kind == "C"]

    @property
    def replies(self) -> list[bytes]:
        return [reply for kind, reply in self.transcript if kind == "S"]


def split_path(arg: str) -> tuple[str, list[str]]:
    """``<addr> PARAM...`` (after ``FROM:``/``TO:``) to the address and the parameters."""
    arg = arg.strip()
    if arg.startswith("<"):
        addr, _, rest = arg[1:].partition(">")
    else:
        addr, _, rest = arg.partition(" ")
    return addr, rest.split()


def unstuff(raw: bytes) -> bytes:
    """DATA content as sent (ending with ``.`` CRLF) to the message itself (RFC 5321 4.5.2).

    Lines end at CRLF only: a bare LF is message content, as it is for the client.
    """
    lines = raw.split(CRLF)
    # raw ends with ".\r\n": the split leaves [..., ".", ""]
    body = lines[:-2]
    return b"".join((line[1:] if line.startswith(b".") else line) + CRLF for line in body)


class RecordingPrimary:
    """An SMTP server on ``host:port`` that records sessions and messages.

    ``users``: None accepts every recipient; a set accepts only those (lowercase)
    and rejects others as Postfix does for an unknown virtual mailbox.
    ``rcpt_reply``: per-address reply overriding everything else for that RCPT.
    ``mail_reply`` / ``data_reply``: reply to MAIL / to the final dot instead of 250.
    ``greeting``: the reply on connect instead of 220; when not 2xx every later
    command but QUIT gets it again.
    ``drop_in_data``: after the 354, read part of the data and close without a reply.
    ``stall_seconds``: wait that long before replying to the final dot. The message
    is recorded before the wait, as a real server has taken it even when the client
    gives up before the reply.
    ``peak_in_data``: the most sessions that were between 354 and the reply to the
    final dot at the same moment (the parallel deliveries); ``clear`` resets it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        hostname: str = "mx1.nausch.org",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.ssl_context = ssl_context
        self.users: set[str] | None = None
        self.rcpt_reply: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.data_reply: str | None = None
        self.greeting: str | None = None
        self.drop_in_data = False
        self.stall_seconds = 0.0
        self.in_data = 0
        self.peak_in_data = 0
        self.messages: list[Received] = []
        self.sessions: list[Session] = []
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control from the test thread ------------------------------------------------

    def start(self) -> None:
        """Listen on host:port; returns when the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("already running")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._session, self.host, self.port, limit=1 << 26, reuse_address=True
                    )
                )
            except OSError as e:
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"primary-{self.host}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]

    def stop(self) -> None:
        """Close the port and every open connection: the primary is down."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._server = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` messages have arrived and return all received so far;
        AssertionError on timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(
                    f"{self.host}:{self.port} got {len(self.messages)} message(s), "
                    f"expected {count} within {timeout} s"
                )
            return list(self.messages)

    def wait_for_sessions(self, count: int, timeout: float = 10.0) -> list[Session]:
        """Wait until ``count`` sessions have ended (connections closed by either side)."""
        with self._changed:
            done = lambda: sum(s.closed for s in self.sessions) >= count  # noqa: E731
            if not self._changed.wait_for(done, timeout):
                raise AssertionError(
                    f"{self.host}:{self.port} saw {len(self.sessions)} session(s), "
                    f"expected {count} ended within {timeout} s"
                )
            return list(self.sessions)

    def clear(self) -> None:
        """Forget recorded messages and sessions (the knobs stay as they are)."""
        with self._changed:
            self.messages.clear()
            self.sessions.clear()
            self.peak_in_data = self.in_data

    # -- the SMTP side, in the server's loop ---------------------------------------------

    def _record(self, session: Session, kind: str, data: bytes) -> None:
        with self._changed:
            session.transcript.append((kind, data))

    async def _reply(self, session: Session, writer: asyncio.StreamWriter, text: str) -> None:
        data = text.replace("\n", "\r\n").encode() + CRLF
        self._record(session, "S", data)
        writer.write(data)
        await writer.drain()

    def _ehlo_reply(self, tls_active: bool) -> str:
        keywords = ["PIPELINING", "SIZE 10240000"]
        if self.ssl_context is not None and not tls_active:
            keywords.append("STARTTLS")
        keywords += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]
        lines = [self.hostname, *keywords]
        return "\n".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)
        )

    def _rcpt_reply(self, addr: str) -> str:
        with self._changed:
            override = self.rcpt_reply.get(addr.lower()) or self.rcpt_reply.get(addr)
            users = None if self.users is None else {u.lower() for u in self.users}
        if override is not None:
            return override
        if users is not None and addr.lower() not in users:
            return (
                f"550 5.1.1 <{addr}>: Recipient address rejected: "
                "User unknown in virtual mailbox table"
            )
        return "250 2.1.5 Ok"

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        session = Session(peer=(peer[0], peer[1]))
        with self._changed:
            self.sessions.append(session)
        self._writers.add(writer)
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            with self._changed:
                session.closed = True
                self._changed.notify_all()

    async def _converse(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        greeting = self.greeting or f"220 {self.hostname} ESMTP"
        await self._reply(session, writer, greeting)
        refused = not greeting.startswith("2")
        helo = False
        tls_active = False
        mail: tuple[str, list[str]] | None = None
        rcpts: list[tuple[str, list[str]]] = []
        while True:
            line = await reader.readline()
            if not line:
                return
            self._record(session, "C", line)
            text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                await self._reply(session, writer, "221 2.0.0 Bye")
                return
            if refused:
                await self._reply(session, writer, greeting)
            elif verb in ("EHLO", "HELO"):
                helo, mail, rcpts = True, None, []
                reply = self._ehlo_reply(tls_active) if verb == "EHLO" else f"250 {self.hostname}"
                await self._reply(session, writer, reply)
            elif verb == "STARTTLS" and self.ssl_context is not None and not tls_active:
                await self._reply(session, writer, "220 2.0.0 Ready to start TLS")
                await writer.start_tls(self.ssl_context)
                tls_active, helo, mail, rcpts = True, False, None, []
            elif verb in ("RSET", "NOOP"):
                if verb == "RSET":
                    mail, rcpts = None, []
                await self._reply(session, writer, "250 2.0.0 Ok")
            elif verb == "MAIL" and arg.upper().startswith("FROM:"):
                if not helo:
                    await self._reply(session, writer, "503 5.5.1 Error: send HELO/EHLO first")
                elif mail is not None:
                    await self._reply(session, writer, "503 5.5.1 Error: nested MAIL command")
                else:
                    reply = self.mail_reply or "250 2.1.0 Ok"
                    if reply.startswith("2"):
                        mail = split_path(arg[5:])
                    await self._reply(session, writer, reply)
            elif verb == "RCPT" and arg.upper().startswith("TO:"):
                if mail is None:
                    await self._reply(session, writer, "503 5.5.1 Error: need MAIL command")
                else:
                    addr, params = split_path(arg[3:])
                    reply = self._rcpt_reply(addr)
                    if reply.startswith("2"):
                        rcpts.append((addr, params))
                    await self._reply(session, writer, reply)
            elif verb == "DATA":
                if mail is None:
                    await self._reply(session, writer, "503 5.5.1 Error: need RCPT command")
                elif not rcpts:
                    await self._reply(session, writer, "554 5.5.1 Error: no valid recipients")
                else:
                    await self._data(session, reader, writer, mail, rcpts)
                    mail, rcpts = None, []
            elif verb == "VRFY":
                await self._reply(session, writer, "252 2.0.0 Send some mail, I'll try my best")
            else:
                await self._reply(session, writer, "502 5.5.2 Error: command not recognized")

    async def _data(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        mail: tuple[str, list[str]],
        rcpts: list[tuple[str, list[str]]],
    ) -> None:
        with self._changed:
            self.in_data += 1
            self.peak_in_data = max(self.peak_in_data, self.in_data)
        try:
            await self._transfer(session, reader, writer, mail, rcpts)
        finally:
            with self._changed:
                self.in_data -= 1

    async def _transfer(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        mail: tuple[str, list[str]],
        rcpts: list[tuple[str, list[str]]],
    ) -> None:
        await self._reply(session, writer, "354 End data with <CR><LF>.<CR><LF>")
        if self.drop_in_data:
            part = await reader.read(1024)
            self._record(session, "D", part)
            raise ConnectionAbortedError("dropped in DATA on purpose")
        chunks: list[bytes] = []
        while True:
            line = await reader.readuntil(CRLF)
            chunks.append(line)
            if line == b".\r\n":
                break
        raw = b"".join(chunks)
        self._record(session, "D", raw)
        reply = self.data_reply or f"250 2.0.0 Ok: queued as {next(self._ids):08X}"
        if reply.startswith("2"):
            message = Received(
                mail_from=mail[0],
                mail_params=mail[1],
                rcpts=[a for a, _ in rcpts],
                rcpt_params=[p for _, p in rcpts],
                data=unstuff(raw),
            )
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        await self._reply(session, writer, reply)
