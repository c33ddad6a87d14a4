"""One SMTP session to one server, and a pool that lets messages share sessions.

aiosmtplib does the protocol; this module adds what a relay needs on top: a
timeout per stage, Postfix's wording for every way a session can fail, and a
message body sent byte for byte with the exact moment the final dot left us
known, so that a failure after it is never taken for "not delivered" nor for
"delivered". When the server offers PIPELINING (RFC 2920) a transaction's
commands go out in one write and a reader of our own hands out their replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from backupmx.envelope import Envelope
from backupmx.log import log
from backupmx.smtp import tlspolicy, xforward
from backupmx.smtp.nexthop import Server
from backupmx.smtp.tlspolicy import TlsPolicy
from backupmx.smtp.wire import one_line, status_of

_POLL = 0.05  # how often the body transfer checks that the peer keeps reading
END_OF_DATA = "sending end of data -- message may be sent more than once"


if TYPE_CHECKING:
    from backupmx.config import Config


@dataclass
class ClientSettings:
    """The smtp_* parameters of one delivery attempt (Postfix defaults)."""

    helo_name: str
    bind_address: str | None = None
    connect_timeout: float = 30.0
    helo_timeout: float = 300.0
    mail_timeout: float = 300.0
    rcpt_timeout: float = 300.0
    data_init_timeout: float = 120.0
    data_xfer_timeout: float = 180.0
    data_done_timeout: float = 600.0
    tls_level: str = "none"  # none may encrypt verify secure fingerprint (see tls_level())
    tls_cafile: str | None = None
    tls_match: tuple[str, ...] = ()  # names (verify, secure) or digests (fingerprint)
    tls_ciphers: str = ""  # a grade of tlspolicy.CIPHER_GRADES; empty: the default
    tls_protocols: str = ""
    tls_exclude: str = ""
    tls_nexthop: str = ""  # the next-hop domain that nexthop / dot-nexthop stand for
    tls_digest: str = "sha256"
    default_match: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    line_length_limit: int = 998
    rset_timeout: float = 20.0
    starttls_timeout: float = 300.0
    recipient_limit: int = 50
    mx_session_limit: int = 2
    send_xforward: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> ClientSettings:
        """The smtp_* parameters of a configuration (deliveries and probes alike)."""
        default_match = {level: tuple(cfg.list(param)) for level, param in _MATCH_PARAM.items()}
        fingerprints = "|".join(default_match["fingerprint"])
        default_match["fingerprint"] = tlspolicy.parse(f"fingerprint match={fingerprints}").match \
            if fingerprints else ()
        return cls(
            helo_name=cfg.str("smtp_helo_name"),
            bind_address=cfg.str("smtp_bind_address") or None,
            connect_timeout=cfg.time("smtp_connect_timeout"),
            helo_timeout=cfg.time("smtp_helo_timeout"),
            mail_timeout=cfg.time("smtp_mail_timeout"),
            rcpt_timeout=cfg.time("smtp_rcpt_timeout"),
            data_init_timeout=cfg.time("smtp_data_init_timeout"),
            data_xfer_timeout=cfg.time("smtp_data_xfer_timeout"),
            data_done_timeout=cfg.time("smtp_data_done_timeout"),
            tls_level=cfg.str("smtp_tls_security_level"),
            tls_cafile=cfg.str("smtp_tls_CAfile") or None,
            tls_match=default_match.get(tls_level(cfg.str("smtp_tls_security_level")), ()),
            tls_digest=cfg.str("smtp_tls_fingerprint_digest"),
            default_match=default_match,
            line_length_limit=cfg.int("smtp_line_length_limit"),
            rset_timeout=cfg.time("smtp_rset_timeout"),
            starttls_timeout=cfg.time("smtp_starttls_timeout"),
            recipient_limit=cfg.int("smtp_destination_recipient_limit"),
            mx_session_limit=cfg.int("smtp_mx_session_limit"),
            send_xforward=cfg.bool("smtp_send_xforward_command"),
        )


    def with_policy(self, policy: TlsPolicy, nexthop: str) -> ClientSettings:
        """These settings under one hop's smtp_tls_policy_maps entry; an entry without
        match= takes the configuration's smtp_tls_*_cert_match for its level."""
        level = tls_level(policy.level)
        return dataclasses.replace(
            self, tls_level=level, tls_match=policy.match or self.default_match.get(level, ()),
            tls_ciphers=policy.ciphers, tls_protocols=policy.protocols,
            tls_exclude=policy.exclude, tls_nexthop=nexthop)


# Postfix levels this client has no machinery for, mapped to the nearest level that
# is at least as strict about what it requires (DANE without DNSSEC is opportunistic).
_LEVEL_ALIASES = {"": "none", "dane": "may", "dane-only": "verify"}
_AUTHENTICATED = ("verify", "secure", "fingerprint")
_MATCH_PARAM = {"verify": "smtp_tls_verify_cert_match", "secure": "smtp_tls_secure_cert_match",
                "fingerprint": "smtp_tls_fingerprint_cert_match"}


def tls_level(level: str) -> str:
    """smtp_tls_security_level as none, may, encrypt, verify, secure or fingerprint."""
    level = level.strip().lower()
    return _LEVEL_ALIASES.get(level, level)


class SessionFailure(Exception):
    """The session cannot go on; every recipient still open gets this result.

    ``greeted`` tells whether the server had sent its 220 greeting, which is what
    counts against smtp_mx_session_limit; ``connected`` whether a TCP connection was
    made at all (no: nobody is there, the destination may be dead); ``replied`` whether
    the server's own reply ends it (a 5xx to HELO or MAIL), not a check of ours.
    """

    def __init__(
        self,
        permanent: bool,
        status: str,
        text: str,
        diagnostic: str | None = None,
        greeted: bool = True,
        connected: bool = True,
        replied: bool = False,
    ) -> None:
        super().__init__(text)
        self.permanent = permanent
        self.status = status
        self.text = text
        self.diagnostic = diagnostic
        self.greeted = greeted
        self.connected = connected
        self.replied = replied


def soft(status: str) -> str:
    """A status as transient: a 5xx that is handled softly must not read as final."""
    return "4" + status[1:]


def _strerror(err: OSError) -> str:
    if isinstance(err, TimeoutError):
        return "Connection timed out"
    if err.errno:
        return os.strerror(err.errno)  # asyncio's own wording names no cause
    return str(err) or type(err).__name__


@functools.lru_cache(maxsize=16)
def _tls_context(level: str, cafile: str | None, ciphers: str = "", protocols: str = "",
                 exclude: str = "") -> ssl.SSLContext:
    """``verify``/``secure`` check the chain (the names are matched after the handshake);
    ``may``/``encrypt``/``fingerprint`` take any certificate."""
    if level in ("verify", "secure"):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ciphers or exclude:
        grade = tlspolicy.CIPHER_GRADES.get(ciphers, tlspolicy.CIPHER_GRADES["medium"])
        ctx.set_ciphers(grade + "".join(f":!{c}" for c in exclude.split(":") if c))
    version = tlspolicy.min_version(protocols)
    if version is not None:
        ctx.minimum_version = version
    return ctx


class _TlsHandshakeFailed(Exception):
    """STARTTLS was accepted but no TLS session came of it; the socket is gone."""


@dataclass(frozen=True)
class Command:
    """One command line, with the stage a failure is reported under and its reply timeout."""

    stage: str
    timeout: float
    args: tuple[bytes, ...]

    def line(self) -> bytes:
        """The command as sent; control characters would let an address inject commands."""
        for arg in self.args:
            if any(b < 32 or b == 127 for b in arg):
                raise ValueError("Command arg contains a prohibited control character")
        return b" ".join(self.args) + b"\r\n"


_MAX_LINE = 8192  # the limits aiosmtplib applies to a reply it parses itself
_MAX_REPLY = 4 * _MAX_LINE


def parse_reply(buffer: bytearray) -> SMTPResponse | None:
    """Take the first complete reply off ``buffer``; None while it is incomplete.

    The reply reads as aiosmtplib's own would (code of the last line, texts joined
    by newlines), so both paths word a server's answer alike; a line that does
    not start with a code, or a reply too long, is malformed (code -1).
    """
    offset, texts = 0, []
    while (end := buffer.find(b"\n", offset)) != -1:
        line = bytes(buffer[offset : end + 1])
        if len(line) > _MAX_LINE:
            raise aiosmtplib.SMTPResponseException(-1, "Response too long")
        try:
            code = int(line[:3])
        except ValueError:
            text = line.decode("utf-8", errors="ignore")
            raise aiosmtplib.SMTPResponseException(
                -1, f"Malformed SMTP response line: {text}"
            ) from None
        offset = end + 1
        texts.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:offset]
            return SMTPResponse(code, b"\n".join(texts).decode("utf-8", "surrogateescape"))
    if len(buffer) > _MAX_REPLY:
        raise aiosmtplib.SMTPResponseException(-1, "Response too long")
    return None


class ReplyReader(asyncio.Protocol):
    """Queues the replies to pipelined commands as they arrive, in order.

    It stands in for aiosmtplib's protocol on the transport and passes on what
    that protocol must still learn: the end of the connection and flow control.
    Replies that came before an error are still handed out before it.
    """

    def __init__(self, inner: SMTPProtocol) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._error: Exception | None = None
        self._changed: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer += data
        try:
            while (reply := parse_reply(self._buffer)) is not None:
                self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as e:
            self._error = e
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _fail(self, err: Exception) -> None:
        if self._error is None:
            self._error = err
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def next(self, timeout: float) -> SMTPResponse:
        """The next reply; TimeoutError when none is complete within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._changed = loop.create_future()
            try:
                await asyncio.wait_for(self._changed, max(0.0, deadline - loop.time()))
            finally:
                self._changed = None
        return self._replies.popleft()


class Pipeline:
    """The replies to a group of commands written at once, read in the commands' order."""

    def __init__(self, conn: Connection, reader: ReplyReader, commands: list[Command]) -> None:
        self._conn = conn
        self._reader = reader
        self._due = deque(commands)

    async def reply(self, command: Command) -> SMTPResponse:
        """The reply to ``command``, which must be the oldest one not yet answered."""
        if not self._due or self._due[0] is not command:
            raise RuntimeError(f"reply for {command.stage!r} read out of order")
        self._due.popleft()
        try:
            return await self._reader.next(command.timeout)
        except Exception as e:
            self._conn.close()
            raise _failure(self._conn.server, command.stage, e) from e


class Connection:
    """An open SMTP session, after greeting, EHLO/HELO and STARTTLS as configured."""

    def __init__(self, server: Server, smtp: aiosmtplib.SMTP, settings: ClientSettings) -> None:
        self.server = server
        self.settings = settings
        self.opened = time.monotonic()
        self._smtp = smtp

    @property
    def extensions(self) -> dict[str, str]:
        return self._smtp.esmtp_extensions

    @property
    def connected(self) -> bool:
        return self._smtp.is_connected

    @classmethod
    async def open(cls, server: Server, settings: ClientSettings) -> Connection:
        """Connect and say hello; :class:`SessionFailure` when that fails.

        With ``tls_level = may`` a failed TLS handshake is retried once in plain
        text on a new connection, as Postfix does, so a broken TLS stack at the
        primary does not stop the mail.
        """
        level = tls_level(settings.tls_level)
        try:
            return await cls._open(server, settings, level != "none")
        except _TlsHandshakeFailed as e:
            if level != "may":
                raise SessionFailure(
                    False, "4.7.5", f"Cannot start TLS: handshake failure with {server.name}"
                ) from e
        return await cls._open(server, settings, False)

    @classmethod
    async def _open(cls, server: Server, settings: ClientSettings, use_tls: bool) -> Connection:
        sock = await _connect(server, settings)
        smtp = aiosmtplib.SMTP(
            sock=sock,
            local_hostname=settings.helo_name,
            timeout=settings.helo_timeout,
            start_tls=False,
        )
        stage = "receiving the initial server greeting"
        try:
            await smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as e:
            smtp.close()
            # smtp_skip_5xx_greeting: a 5xx greeting is soft, another MX may take it.
            raise SessionFailure(
                False,
                soft(status_of(e.code, e.message)),
                f"host {server.name} refused to talk to me: {one_line(e.code, e.message)}",
                f"smtp; {one_line(e.code, e.message)}",
                greeted=False,
            ) from e
        except Exception as e:
            smtp.close()
            failure = _failure(server, stage, e)
            failure.greeted = False
            raise failure from e
        conn = cls(server, smtp, settings)
        try:
            await conn._hello()
            if use_tls:
                await conn._starttls()
        except BaseException:
            conn.close()
            raise
        return conn

    async def _hello(self) -> None:
        """EHLO, falling back to HELO when EHLO is rejected with anything but 421."""
        name, timeout = self.settings.helo_name, self.settings.helo_timeout
        resp = await self._command("performing the EHLO handshake", timeout, b"EHLO", name.encode())
        if resp.code == 250:
            self._smtp.last_ehlo_response = resp  # aiosmtplib parses the extensions
            return
        if resp.code != 421:
            resp = await self._command(
                "performing the HELO handshake", timeout, b"HELO", name.encode()
            )
            if resp.code == 250:
                self._smtp.last_helo_response = resp
                return
        text = f"host {self.server.name} refused to talk to me: {one_line(resp.code, resp.message)}"
        status = status_of(resp.code, resp.message)
        permanent = resp.code // 100 == 5
        raise SessionFailure(permanent, status, text, f"smtp; {one_line(resp.code, resp.message)}",
                             replied=True)

    async def _starttls(self) -> None:
        st = self.settings
        level, name = tls_level(st.tls_level), self.server.name
        if "starttls" not in self.extensions:
            if level == "may":
                return
            raise SessionFailure(
                False, "4.7.4", f"TLS is required, but was not offered by host {name}"
            )
        try:
            await self._smtp.starttls(
                server_hostname=self.server.host,
                tls_context=_tls_context(level, st.tls_cafile, st.tls_ciphers,
                                         st.tls_protocols, st.tls_exclude),
                timeout=self.settings.starttls_timeout,
            )
        except aiosmtplib.SMTPResponseException as e:
            if e.code < 0:
                self.close()
                raise _failure(self.server, "sending STARTTLS", e) from e
            reply = one_line(e.code, e.message)
            if level == "may" and e.code != 421:
                return  # refused: carry on in plain text on this session
            self.close()
            raise SessionFailure(
                False,
                "4.7.4" if e.code != 421 else status_of(e.code, e.message),
                f"TLS is required, but host {name} refused to start TLS: {reply}",
                f"smtp; {reply}",
            ) from e
        except (ssl.SSLError, OSError, aiosmtplib.SMTPException) as e:
            self.close()
            raise _TlsHandshakeFailed() from e
        cipher = self._smtp.get_transport_info("cipher") or ("unknown", "TLS", 0)
        self._check_peer(level)
        trust = "Verified" if level in _AUTHENTICATED else "Untrusted"
        log.info("smtp", f"{trust} TLS connection established to {name}:{self.server.port}: "
                 f"{cipher[1]} with cipher {cipher[0]} ({cipher[2]}/{cipher[2]} bits)")
        await self._hello()

    def _check_peer(self, level: str) -> None:
        """verify/secure: a certificate name the policy accepts; fingerprint: its digest.

        A mismatch defers (4.7.5) with the reason; the session is closed unused.
        """
        if level not in _AUTHENTICATED:
            return
        st, ssl_obj = self.settings, self._smtp.get_transport_info("ssl_object")
        problem = None
        if ssl_obj is None:
            problem = "no TLS session"
        elif level == "fingerprint":
            der = ssl_obj.getpeercert(binary_form=True) or b""
            if not der or tlspolicy.fingerprint(der, st.tls_digest) not in st.tls_match:
                problem = f"{st.tls_digest} fingerprint of the certificate is not listed"
        else:
            names = tlspolicy.cert_names(ssl_obj.getpeercert() or {})
            wanted = self._wanted_names(level)
            if not tlspolicy.names_match(names, wanted):
                problem = (f"certificate names {', '.join(names) or 'none'} do not match "
                           f"{', '.join(wanted) or 'anything'}")
        if problem is not None:
            self.close()
            text = f"Server certificate not verified: {self.server.name}: {problem}"
            log.info("smtp", f"server certificate verification failed for "
                     f"{self.server.name}:{self.server.port}: {problem}")
            raise SessionFailure(False, "4.7.5", text)

    def _wanted_names(self, level: str) -> list[str]:
        """The match= words as names: hostname (the server's name from DNS; for verify
        only when it came from an MX lookup, which backupmx does not check by DNSSEC),
        nexthop, dot-nexthop, or a name as written."""
        st, out = self.settings, []
        for word in st.tls_match:
            key = word.lower()
            if key == "hostname":
                out.append(self.server.host)
            elif key == "nexthop":
                out.append(st.tls_nexthop or self.server.host)
            elif key == "dot-nexthop":
                out.append("." + (st.tls_nexthop or self.server.host))
            else:
                out.append(word)
        if not st.tls_match:
            out.append(self.server.host if level == "verify" else st.tls_nexthop
                       or self.server.host)
        return out

    async def _command(self, stage: str, timeout: float, *args: bytes) -> SMTPResponse:
        """One command and its reply; a lost or silent peer becomes a SessionFailure."""
        return await self.execute(Command(stage, timeout, args))

    async def execute(self, command: Command) -> SMTPResponse:
        """Send ``command`` alone and wait for its reply."""
        try:
            resp = await self._smtp.execute_command(*command.args, timeout=command.timeout)
        except Exception as e:
            self.close()
            raise _failure(self.server, command.stage, e) from e
        return resp

    def mail_command(self, sender: str, options: list[str]) -> Command:
        arg = b"FROM:<" + sender.encode("utf-8") + b">"
        return Command(
            "sending MAIL FROM", self.settings.mail_timeout,
            (b"MAIL", arg, *(o.encode("utf-8") for o in options)),
        )

    def rcpt_command(self, address: str, options: list[str]) -> Command:
        arg = b"TO:<" + address.encode("utf-8") + b">"
        return Command(
            "sending RCPT TO", self.settings.rcpt_timeout,
            (b"RCPT", arg, *(o.encode("utf-8") for o in options)),
        )

    def xforward_commands(self, env: Envelope) -> list[Command]:
        """XFORWARD lines for ``env``, when enabled and the server offers XFORWARD."""
        offer = self.extensions.get("xforward")
        if not self.settings.send_xforward or offer is None:
            return []
        return [Command("sending XFORWARD", self.settings.mail_timeout, words)
                for words in xforward.commands(env, xforward.offered(offer))]

    def data_command(self) -> Command:
        return Command("sending DATA command", self.settings.data_init_timeout, (b"DATA",))

    async def mail(self, sender: str, options: list[str]) -> SMTPResponse:
        return await self.execute(self.mail_command(sender, options))

    async def rcpt(self, address: str, options: list[str]) -> SMTPResponse:
        return await self.execute(self.rcpt_command(address, options))

    async def rset(self) -> SMTPResponse:
        return await self._command("sending RSET", self.settings.rset_timeout, b"RSET")

    @contextlib.contextmanager
    def pipeline(self, commands: list[Command]) -> Iterator[Pipeline]:
        """Write ``commands`` in one go (RFC 2920) and read their replies through the result.

        While the block runs a :class:`ReplyReader` owns the socket, because
        aiosmtplib holds one parsed reply at a time and drops what arrives while it
        holds it; on leaving, the session is aiosmtplib's again (for the body, RSET).
        """
        data = b"".join(self._line(command) for command in commands)
        proto, stage = self._smtp.protocol, commands[0].stage
        if proto is None or proto.transport is None:
            self.close()
            raise _failure(self.server, stage, aiosmtplib.SMTPServerDisconnected("Connection lost"))
        transport, reader = proto.transport, ReplyReader(proto)
        transport.set_protocol(reader)
        try:
            try:
                proto.write(data)
            except Exception as e:
                self.close()
                raise _failure(self.server, stage, e) from e
            yield Pipeline(self, reader, commands)
        finally:
            if transport.get_protocol() is reader:
                transport.set_protocol(proto)

    def _line(self, command: Command) -> bytes:
        try:
            return command.line()
        except ValueError as e:
            self.close()
            raise _failure(self.server, command.stage, e) from e

    async def end_empty_data(self) -> SMTPResponse:
        """End a DATA that the server opened although it accepted no recipient.

        A lone dot: the server gets an empty message for nobody instead of taking
        whatever comes next as message content.
        """
        return await self._command(
            "sending end of data", self.settings.data_done_timeout, b"."
        )

    async def send_body(self, data: bytes) -> SMTPResponse:
        """Write the encoded content (final dot included) and wait for the reply.

        The peer must keep taking bytes (data_xfer_timeout without progress is a
        timeout "while sending message body"); once our buffer is empty the final
        dot is out and any failure is "while sending end of data -- message may be
        sent more than once", which the caller must treat as deferred.
        """
        proto, transport = self._smtp.protocol, self._smtp.transport
        stage = "sending message body"
        try:
            if proto is None or transport is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            out = cast(asyncio.WriteTransport, transport)
            proto.write(data)
            # Started before this coroutine yields, so a quick reply is not missed.
            reply = asyncio.ensure_future(proto.read_response())
            try:
                # A transport that closes drops its buffer: "empty" only counts while open.
                left, idle = out.get_write_buffer_size(), 0.0
                while left and not reply.done() and not out.is_closing():
                    await asyncio.wait({reply}, timeout=_POLL)
                    now_left = out.get_write_buffer_size()
                    idle = 0.0 if now_left < left else idle + _POLL
                    if idle >= self.settings.data_xfer_timeout:
                        raise TimeoutError()
                    left = now_left
                if not left and not out.is_closing():
                    stage = END_OF_DATA
                resp = await asyncio.wait_for(reply, self.settings.data_done_timeout)
                if stage != END_OF_DATA and resp.code // 100 == 2:
                    # Not a reply to the final dot, so it cannot mean "delivered".
                    raise SessionFailure(
                        False, "4.5.0",
                        f"host {self.server.name} said {one_line(resp.code, resp.message)} "
                        "before the end of data was sent",
                    )
                return resp
            finally:
                if not reply.done():
                    reply.cancel()
        except Exception as e:
            self.close()
            raise _failure(self.server, stage, e) from e

    def quit(self) -> None:
        """Say QUIT and hang up without waiting for the reply (smtp_skip_quit_response)."""
        proto = self._smtp.protocol
        if proto is not None and proto.is_connected:
            proto.write(b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        self._smtp.close()


async def _connect(server: Server, settings: ClientSettings) -> socket.socket:
    """TCP connect under smtp_connect_timeout, bound to smtp_bind_address if set.

    Done here rather than by aiosmtplib so that the connect and greeting timeouts
    are separate and the reason names the exact socket error.
    """
    family = socket.AF_INET6 if ":" in server.ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if settings.bind_address:
            sock.bind((settings.bind_address, 0))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.sock_connect(sock, (server.ip, server.port)), settings.connect_timeout
        )
    except OSError as e:
        sock.close()
        raise SessionFailure(
            False, "4.4.1", f"connect to {server.name}:{server.port}: {_strerror(e)}",
            greeted=False, connected=False,
        ) from e
    except BaseException:
        sock.close()
        raise
    return sock


def _failure(server: Server, stage: str, err: BaseException) -> SessionFailure:
    """Postfix's reason text for a session that broke during ``stage``."""
    name = server.name
    if isinstance(err, SessionFailure):
        return err
    if isinstance(err, TimeoutError):  # aiosmtplib's timeouts are TimeoutErrors too
        return SessionFailure(False, "4.4.2", f"conversation with {name} timed out while {stage}")
    if isinstance(err, aiosmtplib.SMTPResponseException) and err.code < 0:
        return SessionFailure(False, "4.5.0", f"host {name} sent a malformed reply while {stage}")
    if isinstance(err, (ConnectionError, OSError, aiosmtplib.SMTPServerDisconnected)):
        return SessionFailure(False, "4.4.2", f"lost connection with {name} while {stage}")
    return SessionFailure(
        False, "4.3.0", f"conversation with {name} failed while {stage}: {err!r}"
    )


FRESH = 1.0  # seconds a pooled session is trusted without an RSET


class ConnectionPool:
    """Idle sessions per (ip, port), kept a few seconds for the next message.

    Postfix's connection cache does the same job: a burst of queued mail for the
    primary goes over one session instead of one per message.  A session is reused
    only under the ClientSettings it was opened with, so after a reload the next
    delivery opens a new one with the new TLS level, HELO name, bind address...
    """

    def __init__(self, idle_time: float = 5.0, max_age: float = 300.0) -> None:
        self.idle_time = idle_time
        self.max_age = max_age
        self._idle: dict[tuple[str, int], list[tuple[Connection, asyncio.TimerHandle]]] = {}
        self._parked: dict[int, float] = {}  # id(conn) -> when it was put back

    async def get(self, server: Server, settings: ClientSettings) -> Connection | None:
        """An idle session to this server, opened with ``settings``, that still answers
        RSET; or None.

        A session put back less than FRESH seconds ago is taken without the RSET
        round trip: during a drain that RSET was a visible share of the work, and
        a server that dropped the session meanwhile only defers that attempt.
        """
        entries = self._idle.get((server.ip, server.port), [])
        while entries:
            conn, timer = entries.pop()
            timer.cancel()
            parked = self._parked.pop(id(conn), 0.0)
            if not conn.connected:
                continue
            if conn.settings is not settings and conn.settings != settings:
                conn.quit()  # made under another configuration
                continue
            if time.monotonic() - parked < FRESH:
                return conn
            try:
                resp = await conn.rset()
            except SessionFailure:
                continue
            if resp.code == 250:
                return conn
            conn.quit()
        return None

    def put(self, conn: Connection) -> None:
        """Keep a session whose last transaction ended cleanly, or QUIT it."""
        if not conn.connected or time.monotonic() - conn.opened > self.max_age:
            conn.quit()
            return
        key = (conn.server.ip, conn.server.port)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.idle_time, self._expire, key, conn)
        self._parked[id(conn)] = time.monotonic()
        self._idle.setdefault(key, []).append((conn, timer))

    def _expire(self, key: tuple[str, int], conn: Connection) -> None:
        entries = self._idle.get(key, [])
        self._idle[key] = [(c, t) for c, t in entries if c is not conn]
        self._parked.pop(id(conn), None)
        conn.quit()

    async def close_all(self) -> None:
        """QUIT every idle session (at shutdown or reload)."""
        for entries in self._idle.values():
            for conn, timer in entries:
                timer.cancel()
                conn.quit()
        self._idle.clear()
        self._parked.clear()
