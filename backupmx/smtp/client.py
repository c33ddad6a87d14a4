"""Deliver one message to a list of servers, with a result for every recipient.

The per-stage rules are Postfix's: a soft failure at a server that is not the
last one to try moves on to the next; a 5xx to RCPT bounces that recipient, a 4xx
keeps it for the next server; nothing counts as delivered without a 2xx to the
final dot, and every failure to talk is transient.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiosmtplib.response import SMTPResponse

from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, Envelope, Recipient
from backupmx.log import log
from backupmx.outcome import Outcome, Stage
from backupmx.smtp.nexthop import Server
from backupmx.smtp.session import (
    ClientSettings,
    Command,
    Connection,
    ConnectionPool,
    SessionFailure,
)
from backupmx.smtp.wire import (
    encode_content,
    mail_options,
    one_line,
    rcpt_options,
    said,
    size_limit,
    status_of,
)

__all__ = ["ClientSettings", "Connection", "ConnectionPool", "deliver"]


def _relay(server: Server) -> str:
    return f"{server.name}:{server.port}"


def _from_failure(server: Server, failure: SessionFailure) -> Outcome:
    """A session's failure for each recipient still open; nobody there is ``CONNECT``."""
    kind = BOUNCED if failure.permanent else DEFERRED
    if not failure.connected:
        return Outcome(kind, failure.status, failure.text, Stage.CONNECT, None,
                       failure.diagnostic)
    return Outcome(kind, failure.status, failure.text, Stage.SESSION, _relay(server),
                   failure.diagnostic, failure.replied)


def _from_reply(server: Server, code: int, message: str, command: str) -> Outcome:
    """A per-recipient result from a server reply; a non-5xx failure is transient."""
    status = status_of(code, message)
    if code // 100 == 2:
        kind, text = DELIVERED, one_line(code, message)
    else:
        kind, text = (BOUNCED if code // 100 == 5 else DEFERRED), said(
            server.name, code, message, command
        )
    return Outcome(kind, status, text, Stage.RECIPIENT, _relay(server),
                   f"smtp; {one_line(code, message)}", replied=True)


class _Attempt:
    """One message's walk over the server list; ``done`` maps recipient index to result."""

    def __init__(
        self,
        sender: str,
        recipients: list[Recipient],
        content: bytes,
        env: Envelope,
        settings: ClientSettings,
        pool: ConnectionPool | None,
    ) -> None:
        self.sender = sender
        self.recipients = recipients
        self.content = content
        self.env = env
        self.settings = settings
        self.pool = pool
        self.done: dict[int, Outcome] = {}
        #: recipient index -> the reply code to its RCPT at the server tried last
        self.rcpt: dict[int, int] = {}

    async def run(self, servers: list[Server]) -> list[Outcome]:
        todo = list(range(len(self.recipients)))
        sessions = 0
        for n, server in enumerate(servers):
            final = n == len(servers) - 1 or sessions + 1 >= self.settings.mx_session_limit
            soft, greeted = await self._session(server, todo)
            sessions += greeted
            if final or not soft:
                break
            # Soft results at a non-final server are only a reason to try the next one.
            for i in soft:
                del self.done[i]
                self.rcpt.pop(i, None)
            todo = soft
        return [self._with_rcpt(i) for i in range(len(self.recipients))]

    def _with_rcpt(self, i: int) -> Outcome:
        """The result, with the reply code to its RCPT at the server that gave the result."""
        o, code = self.done[i], self.rcpt.get(i, 0)
        return replace(o, rcpt=code) if code and o.relay is not None else o

    async def _session(self, server: Server, todo: list[int]) -> tuple[list[int], bool]:
        """Deliver ``todo`` through one server; returns the softly failed and "greeted"."""
        conn = await self.pool.get(server, self.settings) if self.pool else None
        greeted = True
        try:
            if conn is None:
                conn = await Connection.open(server, self.settings)
            limit = max(1, self.settings.recipient_limit)
            for start in range(0, len(todo), limit):
                await self._transaction(conn, server, todo[start : start + limit])
        except SessionFailure as failure:
            greeted = failure.greeted
            if conn is not None:
                conn.close()
            self._fail_open(todo, server, failure)
            if not failure.permanent:
                log.info("smtp", f"{self.env.id}: {failure.text}")
        except Exception as e:  # a bug or surprise must never lose or bounce mail
            if conn is not None:
                conn.close()
            self._fail_open(
                todo, server,
                SessionFailure(False, "4.3.0", f"delivery via {server.name} failed: {e!r}"),
            )
        else:
            if self.pool is not None:
                self.pool.put(conn)
            else:
                conn.quit()
        return [i for i in todo if self.done[i].kind == DEFERRED], greeted

    def _fail_open(self, todo: list[int], server: Server, failure: SessionFailure) -> None:
        for i in todo:
            if i not in self.done:
                self.done[i] = _from_failure(server, failure)

    async def _transaction(self, conn: Connection, server: Server, batch: list[int]) -> None:
        """MAIL, RCPT for each of ``batch``, DATA; results go to ``self.done``.

        One command at a time, or all of them in one write when the server offers
        PIPELINING; the replies mean the same either way.
        """
        ext, name = conn.extensions, server.name
        limit = size_limit(ext)
        if limit and len(self.content) > limit:
            raise SessionFailure(
                True, "5.3.4",
                f"message size {len(self.content)} exceeds size limit {limit} of server {name}",
            )
        if "smtputf8" not in ext and self.env.smtputf8 and not self._ascii(batch):
            raise SessionFailure(
                True, "5.6.7", f"SMTPUTF8 is required, but was not offered by host {name}"
            )
        forward = conn.xforward_commands(self.env)
        mail = conn.mail_command(self.sender, mail_options(self.env, len(self.content), ext))
        rcpts = [
            conn.rcpt_command(self.recipients[i].address, rcpt_options(self.recipients[i], ext))
            for i in batch
        ]
        data = conn.data_command()
        if "pipelining" in ext:
            accepted, resp = await self._pipelined(conn, server, batch, forward, mail, rcpts,
                                                   data)
        else:
            accepted = await self._envelope(server, batch, forward, mail, rcpts, conn.execute)
            resp = await conn.execute(data) if accepted else None
        if resp is None:
            await self._reset(conn)
            return
        if resp.code != 354:
            self._data_failed(conn, server, accepted, resp.code, resp.message, "DATA")
            await self._reset(conn)
            return
        resp = await conn.send_body(encode_content(self.content, self.settings.line_length_limit))
        if resp.code // 100 == 2:
            for i in accepted:
                self.done[i] = _from_reply(server, resp.code, resp.message, "end of DATA")
            return
        self._data_failed(conn, server, accepted, resp.code, resp.message, "end of DATA")

    async def _pipelined(
        self, conn: Connection, server: Server, batch: list[int], forward: list[Command],
        mail: Command, rcpts: list[Command], data: Command,
    ) -> tuple[list[int], SMTPResponse | None]:
        """MAIL, the RCPTs and DATA in one write (RFC 2920 3.1: DATA ends a group).

        Returns the accepted recipients and the DATA reply, None when nobody was
        accepted: then a server that still said 354 gets a lone dot, so that no
        message goes out for zero recipients and the session stays in step.
        """
        with conn.pipeline([*forward, mail, *rcpts, data]) as group:
            accepted = await self._envelope(server, batch, forward, mail, rcpts, group.reply)
            resp = await group.reply(data)
        if accepted:
            return accepted, resp
        if resp.code == 354:
            await conn.end_empty_data()
        return accepted, None

    async def _envelope(
        self, server: Server, batch: list[int], forward: list[Command], mail: Command,
        rcpts: list[Command], reply: Callable[[Command], Awaitable[SMTPResponse]],
    ) -> list[int]:
        """The replies to XFORWARD, MAIL and each RCPT, as results; returns the accepted
        recipients.

        ``reply`` sends a command and waits for its answer, or, when pipelining,
        only takes the answer to a command already sent. A refused XFORWARD counts
        as a refused MAIL, as in Postfix's client.
        """
        for command, name in [*((c, "XFORWARD") for c in forward), (mail, "MAIL FROM")]:
            resp = await reply(command)
            if resp.code // 100 != 2:
                # 5xx bounces everything still open here; 4xx and garbage are soft.
                raise SessionFailure(
                    resp.code // 100 == 5,
                    status_of(resp.code, resp.message),
                    said(server.name, resp.code, resp.message, name),
                    f"smtp; {one_line(resp.code, resp.message)}",
                    replied=True,
                )
        accepted = []
        for i, command in zip(batch, rcpts, strict=True):
            resp = await reply(command)
            if resp.code == 421:
                raise self._reply_failure(server, resp.code, resp.message, "RCPT TO")
            self.rcpt[i] = resp.code
            if resp.code // 100 == 2:
                accepted.append(i)
            else:
                self.done[i] = _from_reply(server, resp.code, resp.message, "RCPT TO")
        return accepted

    def _data_failed(
        self, conn: Connection, server: Server, accepted: list[int], code: int, message: str,
        command: str,
    ) -> None:
        """5xx bounces the accepted recipients; anything else is soft for the session."""
        if code // 100 != 5:
            raise self._reply_failure(server, code, message, command)
        for i in accepted:
            self.done[i] = _from_reply(server, code, message, command)

    @staticmethod
    def _reply_failure(server: Server, code: int, message: str, command: str) -> SessionFailure:
        return SessionFailure(
            False,
            "4" + status_of(code, message)[1:],
            said(server.name, code, message, command),
            f"smtp; {one_line(code, message)}",
            replied=True,
        )

    @staticmethod
    async def _reset(conn: Connection) -> None:
        resp = await conn.rset()
        if resp.code != 250:
            conn.close()
            raise SessionFailure(False, "4.4.2", f"host {conn.server.name} refused RSET: "
                                 f"{one_line(resp.code, resp.message)}")

    def _ascii(self, batch: list[int]) -> bool:
        addrs = [self.sender, *(self.recipients[i].address for i in batch)]
        return all(a.isascii() for a in addrs)


async def deliver(
    servers: list[Server],
    sender: str,
    recipients: list[Recipient],
    content: bytes,
    *,
    env: Envelope,
    settings: ClientSettings,
    pool: ConnectionPool | None = None,
) -> list[Outcome]:
    """Try ``servers`` in order; one outcome per recipient, in the recipients' order."""
    if not recipients:
        return []
    if not servers:
        return [Outcome(DEFERRED, "4.4.4", "no mail servers to deliver to", Stage.ROUTE)
                for _ in recipients]
    attempt = _Attempt(sender, recipients, content, env, settings, pool)
    try:
        return await attempt.run(servers)
    except Exception as e:  # never lose mail to a bug: defer what has no result yet
        failed = Outcome(DEFERRED, "4.3.0", f"delivery failed: {e!r}", Stage.LOCAL)
        return [attempt.done.get(i) or failed for i in range(len(recipients))]
