"""A Session wired to in-memory stand-ins: a fake transport, server, spool and queue manager.

The real Conn is used, fed through its Protocol methods, so the tests exercise the
same line reader and DATA reader as the server does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from backupmx import config, services
from backupmx.anvil import Anvil
from backupmx.envelope import Envelope
from backupmx.queue.store import SpoolError
from backupmx.rejects import Recent
from backupmx.smtpd.conn import Conn
from backupmx.smtpd.session import Session, anvil_reply

BASE = """
myhostname = mx1.tachtler.net
mydomain = tachtler.net
mynetworks = 127.0.0.1/32
relay_domains = nausch.org
smtpd_peername_lookup = no
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_relay_restrictions =
smtpd_error_sleep_time = 0
dns_nameservers = 127.0.0.1:9
"""


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: str = "127.0.0.5") -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": (self.peer, 40000), "sockname": ("127.0.0.3", 25)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass
class FakeSpool:
    committed: list[tuple[Envelope, bytes]] = field(default_factory=list)
    error: SpoolError | None = None  # what every commit raises, when set

    async def commit(self, env: Envelope, content: bytes) -> str:
        if self.error is not None:
            raise self.error
        self.committed.append((env, content))
        return "{}"


class FakeQmgr:
    def submit(self, env: Envelope, stored: str) -> None:
        pass

    def flush(self, domain: str) -> None:
        pass


class FakeServer:
    def __init__(self, text: str) -> None:
        cfg = config.parse(BASE + text)
        self.svc = services.build(cfg)
        self.spool = FakeSpool()
        self.qmgr = FakeQmgr()
        self.anvil = Anvil()
        self.sessions: set[Session] = set()
        self.stopping = False
        self.rejects = Recent()

    def spool_free_ok(self) -> bool:
        return True

    def rejected(self, stage: str, by: str, code: int, dsn: str) -> None:
        self.rejects.add(stage, by, code, dsn)

    async def admit(self, session: Session) -> str | None:
        refusal = self.anvil.admit(session, self.svc)
        return anvil_reply(session, refusal) if refusal else None

    async def request_rate(self, kind: str, session: Session) -> int:
        return self.anvil.request(kind, session.ctx.client_ip,
                                  self.svc.cfg.time("anvil_rate_time_unit"))


async def converse(server: FakeServer, data: bytes, peer: str = "127.0.0.5") -> bytes:
    """Run one session over ``data`` (then EOF); everything the server wrote."""

    async def nothing(_: Conn) -> None:
        return None

    conn = Conn(nothing)
    transport = FakeTransport(peer)
    conn.transport = transport
    conn.linger = 0.0
    session = Session(server, conn)  # type: ignore[arg-type]
    server.sessions.add(session)
    conn.data_received(data)
    conn.eof_received()
    try:
        await asyncio.wait_for(session.run(), 30)
    finally:
        server.sessions.discard(session)
    return bytes(transport.out)


def final_replies(out: bytes) -> list[str]:
    """The last line of every reply (code followed by a space)."""
    return [ln.decode("utf-8", "replace") for ln in out.split(b"\r\n") if ln[3:4] == b" "]
