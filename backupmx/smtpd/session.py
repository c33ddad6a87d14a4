"""The SMTP server side: protocol, session state and replies; nothing about policy.

Replies follow Postfix (spec/smtp-protocol-limits.md §3).  Policy decisions are
delegated to the restriction engine; the complete message, with the actions the
restrictions asked for, to cleanup.  A message gets ``250`` only after the spool
reports it durable.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backupmx import addr, tls
from backupmx.cleanup.actions import NO_ACTIONS, MessageActions
from backupmx.cleanup.headers import Arrival
from backupmx.cleanup.message import DISCARDED, QUEUED, REFUSED, Cleanup, Message
from backupmx.cleanup.rewrite import canonical
from backupmx.envelope import Recipient
from backupmx.log import log
from backupmx.metrics import instruments
from backupmx.policy.request import new_instance
from backupmx.queue.ids import new_id
from backupmx.reply import Reply, soft_bounced, soft_bounced_line
from backupmx.restrictions import dnsbl
from backupmx.restrictions.addresses import unverified_name
from backupmx.restrictions.engine import Context, EvalState, Verdict, evaluate
from backupmx.restrictions.rcpt import decide
from backupmx.smtp import wire
from backupmx.smtpd.conn import Closed, Conn, Interrupted, SessionExpired

if TYPE_CHECKING:
    from backupmx.services import Services
    from backupmx.smtpd.host import SmtpdHost

_XTEXT = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})+$")
_NOTIFY = {"SUCCESS", "FAILURE", "DELAY"}
_FORBIDDEN = {"CONNECT", "GET", "POST"}
_HEADER_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:")
_HEADER_START = re.compile(rb"^[!-9;-~]+[ \t]*:")
_COMMANDS = {
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "HELP",
    "ETRN", "STARTTLS", "AUTH", "BDAT", "EXPN",
}
#: commands that may only come last in a PIPELINING group (RFC 2920)
_GROUP_LAST = {"HELO", "EHLO", "DATA", "NOOP", "VRFY"}
#: commands that count towards smtpd_junk_command_limit
_JUNK = {"HELO", "EHLO", "RSET", "NOOP", "VRFY", "ETRN"}
_TOO_MANY_RCPTS = "452 4.5.3 Error: too many recipients"
_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r",
            92: "\\\\"}
_SYNC_ERROR = "554 5.5.0 Error: SMTP protocol synchronization"
#: anvil's request rates (anvil.REQUESTS): limit parameter, what the log says, reply text
_RATES = {
    "mail": ("smtpd_client_message_rate_limit", "Message delivery request",
             "too much mail from"),
    "rcpt": ("smtpd_client_recipient_rate_limit", "Recipient address",
             "too many recipients from"),
}


def _escape(data: bytes) -> str:
    """Client bytes for a log line as Postfix's escape() writes them: C escapes, else octal."""
    return "".join(_ESCAPES.get(b) or (chr(b) if 32 <= b < 127 else f"\\{b:03o}") for b in data)


class Disconnect(Exception):
    """End the session after the reply already queued."""


@dataclass
class Transaction:
    sender: str
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    recipients: list[Recipient] = field(default_factory=list)  # accepted, duplicates too
    queue_id: str | None = None
    rcpt_count: int = 0  # RCPT commands seen, accepted or not
    actions: MessageActions = NO_ACTIONS  # what the restrictions asked of the message
    overshoot: int = 0  # of them beyond smtpd_recipient_limit



def ceiling_reply(session: Session, ceiling: int) -> str:
    """The 421 for a client beyond smtpd_max_sessions (logged)."""
    log.warning("smtpd", f"too many sessions ({ceiling}): refusing {session.ctx.client_ip}")
    return f"421 4.3.2 {session.host} Error: too many sessions, try again later"


def anvil_reply(session: Session, refusal: str) -> str:
    """The 421 for a client over its connection count or rate (logged)."""
    log.warning("smtpd", f"{refusal} for {session.ctx.client}")
    return f"421 4.7.0 {session.host} Error: {refusal}"


class Session:
    def __init__(self, server: SmtpdHost, conn: Conn) -> None:
        self.server = server
        self.conn = conn
        peer, local = conn.endpoints()  # a PROXY header's, when a balancer sent one
        self.ctx = Context(
            client_ip=peer[0], client_port=peer[1],
            server_address=local[0], server_port=local[1],
        )
        self.tx: Transaction | None = None
        self.errors = 0
        self.junk = 0  # HELO, NOOP, RSET ... since the last message (smtpd_junk_command_limit)
        self.counts: dict[str, list[int]] = {}
        self.last_cmd = "CONNECT"
        self.in_data = False
        mode = server.svc.cfg.str("smtpd_forbid_bare_newline")
        #: no, normalize or reject (smtpd_forbid_bare_newline; yes means normalize)
        self.bare_mode = "normalize" if mode == "yes" else mode
        #: "TLSv1.3 with cipher ... (256/256 bits)" once STARTTLS succeeded
        self.tls_info: str | None = None
        #: how the session ended, for the metrics (instruments.SESSIONS)
        self.end = "quit"

    # --- helpers ---------------------------------------------------------------
    @property
    def svc(self) -> Services:
        return self.server.svc

    @property
    def host(self) -> str:
        return self.svc.cfg.str("myhostname")

    def _count(self, cmd: str, ok: bool) -> None:
        c = self.counts.setdefault(cmd.lower(), [0, 0])
        c[1] += 1
        if ok:
            c[0] += 1

    async def send(self, reply: Reply | str) -> None:
        """Queue a reply; count errors and tarpit once the soft limit is reached."""
        line = self._outgoing(reply.line() if isinstance(reply, Reply) else reply)
        code = line[:1]
        if code in ("4", "5"):
            self.errors += 1
            if self.errors >= self.svc.cfg.int("smtpd_soft_error_limit"):
                await self.conn.flush()
                await asyncio.sleep(self.svc.cfg.time("smtpd_error_sleep_time"))
        self.conn.reply(line)

    def _outgoing(self, line: str) -> str:
        """A reply as this server sends and logs it: with ``soft_bounce = yes`` every 5xx,
        a restriction's or a protocol error's, goes out as 4xx (as Postfix's smtpd)."""
        if line[:1] == "5" and self.svc.cfg.bool("soft_bounce"):
            return soft_bounced_line(line)
        return line

    def _reject_log(self, stage: str, reply: Reply, rcpt: str | None = None,
                    by: str = "smtpd") -> None:
        qid = self.tx.queue_id if self.tx and self.tx.queue_id else "NOQUEUE"
        parts = [f"{qid}: reject: {stage} from {self.ctx.client}: {self._outgoing(reply.line())};"]
        if self.tx is not None:
            parts.append(f"from=<{self.tx.sender}>")
        if rcpt is not None:
            parts.append(f"to=<{rcpt}>")
        parts.append(f"proto={self.ctx.protocol}")
        if self.ctx.helo:
            parts.append(f"helo=<{self.ctx.helo}>")
        log.info("smtpd", " ".join(parts))
        sent = soft_bounced(reply) if self.svc.cfg.bool("soft_bounce") else reply
        self.server.rejected(stage, by, sent.code, sent.dsn)
        instruments.REJECTS.labels(stage, by, f"{sent.code // 100}xx").inc()

    async def _refuse(self, stage: str, verdict: Verdict, rcpt: str | None = None) -> bool:
        """Log and send a restriction's reject; a 421 or 521 ends the session, at any stage."""
        assert verdict.reply is not None
        self._reject_log(stage, verdict.reply, rcpt, verdict.by or "smtpd")
        await self.send(verdict.reply)
        if verdict.disconnect:
            raise Disconnect()
        return False

    async def _over_rate(self, kind: str) -> bool:
        """A MAIL or RCPT over its per-client rate limit: log, 450 and True (Postfix's anvil)."""
        param, what, text = _RATES[kind]
        svc = self.svc
        limit = svc.cfg.int(param)
        if not limit or svc.event_limit_exceptions.match(self.ctx.client_ip,
                                                         self.ctx.client_name):
            return False
        rate = await self.server.request_rate(kind, self)
        if rate <= limit:
            return False
        log.warning("smtpd", f"{what} rate limit exceeded: {rate} from {self.ctx.client} "
                    "for service smtp")
        await self.send(f"450 4.7.1 Error: {text} {self.ctx.client_ip}")
        return True

    def _pipelined(self) -> bool:
        """Input waiting where none may be (smtpd_flag_ill_pipelining): flag and log, once.

        The flag is what reject_unauth_pipelining looks at; with
        smtpd_forbid_unauth_pipelining the caller ends the session instead.
        """
        if self.ctx.illegal_pipelining or not self.conn.pending():
            return False
        self.ctx.illegal_pipelining = True
        log.info("smtpd", f"improper command pipelining after {self.last_cmd} from "
                 f"{self.ctx.client}: {_escape(bytes(self.conn.buf[:100]))}")
        return True

    # --- the session loop ----------------------------------------------------------
    async def run(self) -> None:
        svc = self.svc
        cfg = svc.cfg
        ip = self.ctx.client_ip
        ceiling = cfg.int("smtpd_max_sessions")
        if ceiling and len(self.server.sessions) > ceiling:
            instruments.CONNECTIONS.labels("over_session_limit").inc()
            self.conn.reply(ceiling_reply(self, ceiling))
            self.conn.linger = 0.5
            await self.conn.close()
            return
        loop = asyncio.get_running_loop()
        cap = cfg.time("smtpd_session_time_limit")
        self.conn.session_deadline = loop.time() + cap if cap else None
        self.conn.per_record_deadline = cfg.bool("smtpd_per_record_deadline")
        self.conn.write_timeout = cfg.time("smtpd_timeout")
        dnsbl.prefetch(self.ctx, svc)  # every DNS list at once, while the name is looked up
        if cfg.bool("smtpd_peername_lookup"):
            found = svc.resolver.known_reverse_name(ip)  # a returning client: no task
            if found is None:
                try:
                    found = await asyncio.wait_for(svc.resolver.reverse_name(ip), 10)
                except TimeoutError:
                    found = ("unknown", "tempfail")
            name, status = found
            self.ctx.client_name = name
            self.ctx.client_name_status = status
            self.ctx.reverse_name = name
            if status == "nxdomain":
                self.ctx.reverse_name = await unverified_name(svc, ip)
        if self.bare_mode != "no" and svc.bare_newline_exclusions.match(ip, self.ctx.client_name):
            self.bare_mode = "no"
        log.info("smtpd", f"connect from {self.ctx.client}")
        served = False
        try:
            refusal = await self.server.admit(self)
            if refusal:
                instruments.CONNECTIONS.labels("over_client_limit").inc()
                self.conn.reply(refusal)
                return
            if self._pipelined() and cfg.bool("smtpd_forbid_unauth_pipelining"):
                instruments.CONNECTIONS.labels("spoke_first").inc()
                self.conn.reply(_SYNC_ERROR)  # it spoke before the greeting
                return
            instruments.CONNECTIONS.labels("served").inc()
            served = True
            self.conn.reply(f"220 {cfg.str('smtpd_banner')}")
            await self._loop()
        except Interrupted:
            self.end = "shutdown"
            self.conn.reply(f"421 4.3.2 {self.host} Service shutting down, closing connection")
        except Closed:
            self.end = "lost"
            log.info("smtpd", f"lost connection after {self.last_cmd} from {self.ctx.client}")
        except SessionExpired:
            self.end = "time_limit"
            log.info("smtpd", f"session time limit exceeded after {self.last_cmd} "
                     f"from {self.ctx.client}")
            self.conn.reply(f"421 4.4.2 {self.host} Error: timeout exceeded")
        except TimeoutError:
            self.end = "timeout"
            log.info("smtpd", f"timeout after {self.last_cmd} from {self.ctx.client}")
            self.conn.reply(f"421 4.4.2 {self.host} Error: timeout exceeded")
        except Disconnect:
            self.end = "disconnected"
        except Exception as e:  # never let one session take the server down
            self.end = "error"
            log.error("smtpd", f"{type(e).__name__} in session with {self.ctx.client}: {e}")
            self.conn.reply(f"421 4.3.0 {self.host} Error: internal error, try again later")
        finally:
            if served:
                instruments.SESSIONS.labels(self.end).inc()
            dnsbl.cancel(self.ctx)
            try:
                await self.conn.close()
            except Exception:
                pass
            stats = " ".join(
                f"{k}={v[0]}" if v[0] == v[1] else f"{k}={v[0]}/{v[1]}"
                for k, v in self.counts.items()
            )
            total = sum(v[1] for v in self.counts.values())
            ok = sum(v[0] for v in self.counts.values())
            tail = f" commands={ok}" if ok == total else f" commands={ok}/{total}"
            log.info("smtpd", f"disconnect from {self.ctx.client} {stats}{tail}".replace("  ", " "))

    async def _loop(self) -> None:
        while True:
            cfg = self.svc.cfg
            if self.errors >= cfg.int("smtpd_hard_error_limit"):
                log.info("smtpd", f"too many errors after {self.last_cmd} from {self.ctx.client}")
                self.conn.reply(f"421 4.7.0 {self.host} Error: too many errors")
                self.end = "too_many_errors"
                return
            if self.server.stopping:
                self.end = "shutdown"
                self.conn.reply(f"421 4.3.2 {self.host} Service shutting down, closing connection")
                return
            raw, bare = await self.conn.readline(
                cfg.int("line_length_limit"), cfg.time("smtpd_timeout")
            )
            if bare and self.bare_mode == "reject":
                code = cfg.int("smtpd_forbid_bare_newline_reject_code")
                log.info("smtpd", f"bare <LF> received after {self.last_cmd} "
                         f"from {self.ctx.client}")
                await self.send(f"{code} 5.5.2 {self.host} Error: bare <LF> received")
                self.end = "disconnected"
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                await self.send("500 5.5.2 Error: bad UTF-8 syntax")
                continue
            verb, _, arg = line.strip().partition(" ")
            cmd = verb.upper()
            if not cmd:
                await self.send("500 5.5.2 Error: bad syntax")
                continue
            if cmd not in _COMMANDS and (
                cmd in _FORBIDDEN or not verb[0].isalpha() or _HEADER_LIKE.match(line)
            ):
                log.warning("smtpd", f"non-SMTP command from {self.ctx.client}: {line[:100]}")
                self.conn.reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
                self.end = "disconnected"
                return
            handler = getattr(self, "do_" + cmd, None) if cmd in _COMMANDS else None
            if handler is None:
                self._count("unknown", False)
                await self.send("500 5.5.2 Error: command not recognized")
                continue
            self.last_cmd = cmd
            if (self.ctx.protocol != "ESMTP" or cmd in _GROUP_LAST) and self._pipelined() \
                    and cfg.bool("smtpd_forbid_unauth_pipelining"):
                self._count(cmd, False)
                self.conn.reply(_SYNC_ERROR)
                self.end = "disconnected"
                return
            try:
                ok = await handler(arg.strip())
            except Disconnect:
                self._count(cmd, False)  # it ended the session: failed, as Postfix counts it
                raise
            self._count(cmd, bool(ok))
            if cmd in _JUNK:
                if self.junk > cfg.int("smtpd_junk_command_limit"):
                    self.errors += 1
                self.junk += 1
            if cmd == "QUIT":
                return

    # --- commands --------------------------------------------------------------
    async def do_HELO(self, arg: str) -> bool:
        return await self._helo(arg, esmtp=False)

    async def do_EHLO(self, arg: str) -> bool:
        return await self._helo(arg, esmtp=True)

    async def _helo(self, arg: str, esmtp: bool) -> bool:
        if not arg:
            await self.send(f"501 Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
            return False
        cfg = self.svc.cfg
        self.ctx.helo = " ".join(arg.split())
        self.ctx.protocol = "ESMTP" if esmtp else "SMTP"
        self._reset()
        if not esmtp:
            await self.send(f"250 {self.host}")
            return True
        limit = cfg.int("message_size_limit")
        caps = [self.host, "PIPELINING", f"SIZE {limit}" if limit else "SIZE"]
        if not cfg.bool("disable_vrfy_command"):
            caps.append("VRFY")
        caps.append("ETRN")
        if self.conn.tls is None and self._tls_context() is not None:
            caps.append("STARTTLS")
        caps += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if cfg.bool("smtputf8_enable"):
            caps.append("SMTPUTF8")
        for c in caps[:-1]:
            self.conn.reply(f"250-{c}")
        self.conn.reply(f"250 {caps[-1]}")
        return True

    def _reset(self) -> None:
        self.tx = None
        self.ctx.sender = None
        self.ctx.recipient = None
        self.ctx.nrcpt = 0
        self.ctx.queue_id = None
        self.ctx.instance = ""
        self.ctx.size = 0

    async def do_RSET(self, arg: str) -> bool:
        if arg:
            await self.send("501 5.5.4 Syntax: RSET")
            return False
        self._reset()
        await self.send("250 2.0.0 Ok")
        return True

    async def do_NOOP(self, arg: str) -> bool:
        await self.send("250 2.0.0 Ok")
        return True

    async def do_QUIT(self, arg: str) -> bool:
        await self.send("221 2.0.0 Bye")
        return True

    async def do_HELP(self, arg: str) -> bool:
        await self.send(
            "214 2.0.0 Commands: DATA EHLO ETRN HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"
        )
        return True

    def _tls_context(self) -> ssl.SSLContext | None:
        """The STARTTLS context; None (logged) when TLS is off or the certificate is unusable."""
        try:
            return tls.server_context(self.svc.cfg)
        except tls.TlsError as e:
            log.warning("smtpd", f"cannot offer STARTTLS: {e}")
            return None

    async def _tls_missing(self) -> bool:
        """smtpd_tls_security_level = encrypt and no TLS yet: refuse (and say so)."""
        if tls.server_level(self.svc.cfg) != "encrypt" or self.conn.tls is not None:
            return False
        await self.send("530 5.7.0 Must issue a STARTTLS command first")
        return True

    async def do_STARTTLS(self, arg: str) -> bool:
        if arg:
            await self.send("501 5.5.4 Syntax: STARTTLS")
            return False
        if self.conn.tls is not None:
            await self.send("554 5.5.1 Error: TLS already active")
            return False
        context = self._tls_context()
        if context is None:
            if tls.server_level(self.svc.cfg) == "none":
                await self.send("502 5.5.1 Error: command not implemented")
            else:
                await self.send("454 4.7.0 TLS not available due to local problem")
            return False
        self.conn.reply("220 2.0.0 Ready to start TLS")
        try:
            await self.conn.start_tls(context, self.svc.cfg.time("smtpd_starttls_timeout"))
        except (ssl.SSLError, OSError, TimeoutError) as e:
            log.info("smtpd", f"SSL_accept error from {self.ctx.client}: "
                     f"{e or type(e).__name__}")
            raise Disconnect() from e
        # Nothing said before the handshake counts after it (RFC 3207 4.2).
        self.ctx.helo = None
        self.ctx.protocol = "SMTP"
        self._reset()
        obj = self.conn.tls
        self.tls_info = tls.describe(obj) if obj is not None else "TLS"
        log.info("smtpd", f"Anonymous TLS connection established from {self.ctx.client}: "
                 f"{self.tls_info}")
        return True

    async def do_AUTH(self, arg: str) -> bool:
        await self.send("503 5.5.1 Error: authentication not enabled")
        return False

    async def do_BDAT(self, arg: str) -> bool:
        await self.send("500 5.5.2 Error: command not recognized")
        return False

    async def do_EXPN(self, arg: str) -> bool:
        await self.send("502 5.5.1 Error: command not implemented")
        return False

    async def do_MAIL(self, arg: str) -> bool:
        cfg = self.svc.cfg
        if await self._tls_missing():
            return False
        if cfg.bool("smtpd_helo_required") and not self.ctx.helo:
            await self.send("503 5.5.1 Error: send HELO/EHLO first")
            return False
        if self.tx is not None:
            await self.send("503 5.5.1 Error: nested MAIL command")
            return False
        if arg[:5].upper() != "FROM:":
            await self.send("501 5.5.4 Syntax: MAIL FROM:<address>")
            return False
        if await self._over_rate("mail"):
            return False
        try:
            parsed = addr.parse_path(arg[5:], strict=cfg.bool("strict_rfc821_envelopes"))
        except addr.AddressSyntaxError:
            await self.send("501 5.1.7 Bad sender address syntax")
            return False
        sender = canonical(parsed.address)  # as cleanup stores it, before anything sees it
        if sender and not addr.domain_ok(sender):
            await self.send("501 5.1.7 Bad sender address syntax")
            return False
        tx = Transaction(sender=sender)
        esmtp = self.ctx.protocol == "ESMTP"
        for p in parsed.params:
            key, _, val = p.partition("=")
            k = key.upper()
            if not esmtp:
                await self.send(f"555 5.5.4 Unsupported option: {p}")
                return False
            if k == "SIZE":
                if not val.isdigit():
                    await self.send("501 5.5.4 Bad message size syntax")
                    return False
                tx.size = int(val)
                limit = cfg.int("message_size_limit")
                if limit and tx.size > limit:
                    await self.send("552 5.3.4 Message size exceeds fixed limit")
                    return False
            elif k == "BODY" and val.upper() in ("7BIT", "8BITMIME"):
                tx.body = val.upper()
            elif k == "SMTPUTF8" and not val and cfg.bool("smtputf8_enable"):
                tx.smtputf8 = True
            elif k == "RET":
                if tx.ret is not None or val.upper() not in ("FULL", "HDRS"):
                    await self.send("501 5.5.4 Bad RET parameter syntax")
                    return False
                tx.ret = val.upper()
            elif k == "ENVID":
                if tx.envid is not None or not val or not _XTEXT.match(val) or len(val) > 100:
                    await self.send("501 5.5.4 Bad ENVID parameter syntax")
                    return False
                tx.envid = val
            else:
                await self.send(f"555 5.5.4 Unsupported option: {p}")
                return False
        if not tx.smtputf8 and not sender.isascii() and "@" in sender:
            domain = sender.rpartition("@")[2]
            if not domain.isascii():
                await self.send("501 5.1.7 Bad sender address syntax")
                return False
        free = self.server.spool_free_ok()
        if not free:
            await self.send("452 4.3.1 Insufficient system storage")
            return False
        self.tx = tx
        self.ctx.sender = tx.sender
        self.ctx.size = tx.size or 0
        self.ctx.instance = new_instance()
        await self.send("250 2.1.0 Ok")
        return True

    async def do_RCPT(self, arg: str) -> bool:
        svc = self.svc
        cfg = svc.cfg
        tx = self.tx
        if tx is None:
            await self.send("503 5.5.1 Error: need MAIL command")
            return False
        if arg[:3].upper() != "TO:":
            await self.send("501 5.5.4 Syntax: RCPT TO:<address>")
            return False
        if await self._over_rate("rcpt"):
            return False
        try:
            parsed = addr.parse_path(arg[3:], strict=cfg.bool("strict_rfc821_envelopes"))
        except addr.AddressSyntaxError:
            await self.send("501 5.1.3 Bad recipient address syntax")
            return False
        rcpt = canonical(parsed.address)  # as cleanup stores it, before anything sees it
        if not rcpt or not addr.domain_ok(rcpt):
            await self.send("501 5.1.3 Bad recipient address syntax")
            return False
        if not tx.smtputf8 and "@" in rcpt and not rcpt.rpartition("@")[2].isascii():
            await self.send("501 5.1.3 Bad recipient address syntax")
            return False
        notify = orcpt = None
        for p in parsed.params:
            key, _, val = p.partition("=")
            k = key.upper()
            if k == "NOTIFY":
                items = val.upper().split(",")
                if notify is not None or not val or not (
                    items == ["NEVER"] or all(i in _NOTIFY for i in items)
                ):
                    await self.send("501 5.5.4 Error: Bad NOTIFY parameter syntax")
                    return False
                notify = ",".join(items)
            elif k == "ORCPT":
                atype, sep, xtext = val.partition(";")
                if orcpt is not None or not sep or not atype or not xtext:
                    await self.send("501 5.5.4 Error: Bad ORCPT parameter syntax")
                    return False
                orcpt = val
            else:
                await self.send(f"555 5.5.4 Unsupported option: {p}")
                return False
        tx.rcpt_count += 1
        limit = cfg.int("smtpd_recipient_limit")
        if limit and tx.rcpt_count > limit:
            tx.overshoot += 1
            if tx.overshoot <= cfg.int("smtpd_recipient_overshoot_limit"):
                self.conn.reply(_TOO_MANY_RCPTS)  # not an error: a big list is no attack
                return True
            await self.send(_TOO_MANY_RCPTS)
            return False
        self.ctx.recipient = rcpt
        self.ctx.state = "RCPT"
        decision = await decide(self.ctx, svc, actions=tx.actions)
        tx.actions = decision.actions
        if decision.verdict is not None:
            if decision.standby:
                instruments.STANDBY_REFUSALS.labels(svc.resolve(rcpt).domain).inc()
            return await self._refuse("RCPT", decision.verdict, rcpt)
        stored = decision.keep
        if stored is None:  # the probe sender: accepted, nothing kept (mail to it is discarded)
            await self.send("250 2.1.5 Ok")
            return True
        if tx.queue_id is None:
            tx.queue_id = new_id()
            self.ctx.queue_id = tx.queue_id
            log.info("smtpd", f"{tx.queue_id}: client={self.ctx.client}")
        sent = parsed.address  # a rewritten address keeps the original as its ORCPT
        orcpt = orcpt or (f"rfc822;{wire.xtext(sent)}" if stored != sent else None)
        tx.recipients.append(Recipient(stored, orcpt=orcpt, notify=notify))  # cleanup dedups
        self.ctx.nrcpt = len(tx.recipients)
        await self.send("250 2.1.5 Ok")
        return True

    async def do_VRFY(self, arg: str) -> bool:
        cfg = self.svc.cfg
        if await self._tls_missing():
            return False
        if cfg.bool("disable_vrfy_command"):
            await self.send("502 5.5.1 VRFY command is disabled")
            return False
        if not arg:
            await self.send("501 5.5.4 Syntax: VRFY address [SMTPUTF8]")
            return False
        if await self._over_rate("rcpt"):
            return False
        try:
            parsed = addr.parse_path(arg)
        except addr.AddressSyntaxError:
            await self.send("501 5.1.3 Bad recipient address syntax")
            return False
        address = canonical(parsed.address)
        if not address or not addr.domain_ok(address):
            await self.send("501 5.1.3 Bad recipient address syntax")
            return False
        self.ctx.recipient = address
        self.ctx.state = "VRFY"
        verdict = await evaluate(self.svc.rcpt_lists(), self.ctx, self.svc, EvalState())
        if verdict is not None and verdict.reply is not None:
            return await self._refuse("VRFY", verdict, address)
        await self.send(f"252 2.0.0 <{address}>")
        return True

    async def do_ETRN(self, arg: str) -> bool:
        svc = self.svc
        if await self._tls_missing():
            return False
        if svc.cfg.bool("smtpd_helo_required") and not self.ctx.helo:
            await self.send("503 Error: send HELO/EHLO first")
            return False
        if self.tx is not None:
            await self.send("503 Error: MAIL transaction in progress")
            return False
        if len(arg.split()) != 1:
            await self.send("500 Syntax: ETRN domain")
            return False
        domain = arg.lstrip("@#").rstrip(".")
        if not (addr.valid_hostname(domain) or addr.valid_address_literal(domain)):
            await self.send("501 Error: invalid parameter syntax")
            return False
        self.ctx.etrn_domain = domain
        self.ctx.state = "ETRN"
        lists = [(k, svc.lists[k]) for k in ("client", "helo", "etrn")]
        verdict = await evaluate(lists, self.ctx, svc, EvalState())
        if verdict is not None and verdict.reply is not None:
            return await self._refuse("ETRN", verdict)
        if not svc.fast_flush_domains.match(domain):
            await self.send(f"459 <{domain}>: service unavailable")
            return False
        self.server.qmgr.flush(domain)
        await self.send("250 Queuing started")
        return True

    async def do_DATA(self, arg: str) -> bool:
        svc = self.svc
        cfg = svc.cfg
        tx = self.tx
        if arg:
            await self.send("501 5.5.4 Syntax: DATA")
            return False
        if tx is None:
            await self.send("503 5.5.1 Error: need RCPT command")
            return False
        if not tx.recipients:
            await self.send("554 5.5.1 Error: no valid recipients")
            return False
        self.ctx.recipient = tx.recipients[0].address if len(tx.recipients) == 1 else None
        self.ctx.state = "DATA"
        st = EvalState(actions=tx.actions)
        verdict = await evaluate([("data", svc.lists["data"])], self.ctx, svc, st)
        tx.actions = st.actions
        if verdict is not None and verdict.reply is not None:
            return await self._refuse("DATA", verdict)
        self.conn.reply("354 End data with <CR><LF>.<CR><LF>")
        self.in_data = True
        try:
            content, problem = await self._read_data(cfg)
        finally:
            self.in_data = False
        if problem is None and svc.lists["end_of_data"].steps:
            verdict = await self._end_of_data(len(content), tx)
            if verdict is not None:
                try:
                    return await self._refuse("END-OF-MESSAGE", verdict, self.ctx.recipient)
                finally:
                    self._reset()
        message = self._message(tx)
        self._reset()
        if problem:
            self._reject_log("END-OF-MESSAGE", problem)  # size, bare newline: smtpd's own
            await self.send(problem)
            if problem.code == 521:
                raise Disconnect()
            return False
        outcome = await Cleanup(self.server.spool, self.server.qmgr).enqueue(
            message, content, self.host, cfg.int("hopcount_limit"))
        if outcome.kind == REFUSED:
            self._reject_log("END-OF-MESSAGE", outcome.reply, by="cleanup")
        elif outcome.kind == QUEUED:
            self.errors = self.junk = 0
            instruments.MESSAGES.inc()
            instruments.MESSAGE_BYTES.inc(len(content))
        await self.send(outcome.reply)
        return outcome.kind in (QUEUED, DISCARDED)

    def _message(self, tx: Transaction) -> Message:
        """The transaction as cleanup takes it."""
        assert tx.queue_id is not None
        arrival = Arrival(
            helo=self.ctx.helo,
            client_name=self.ctx.client_name,
            client_ip=self.ctx.client_ip,
            client_port=self.ctx.client_port,
            protocol=self._protocol_name(tx),
            tls=f"(using {self.tls_info})" if self.tls_info else None,
        )
        return Message(
            queue_id=tx.queue_id, sender=tx.sender, recipients=tx.recipients, arrival=arrival,
            actions=tx.actions, body=tx.body, smtputf8=tx.smtputf8, ret=tx.ret, envid=tx.envid,
        )

    async def _end_of_data(self, size: int, tx: Transaction) -> Verdict | None:
        """smtpd_end_of_data_restrictions, once the whole message is in and before it is
        stored: the rejecting verdict, else None. The size is the one received."""
        self.ctx.size = size
        self.ctx.state = "END-OF-MESSAGE"
        svc = self.svc
        st = EvalState(actions=tx.actions)
        verdict = await evaluate([("end_of_data", svc.lists["end_of_data"])], self.ctx, svc, st)
        tx.actions = st.actions
        return verdict if verdict is not None and verdict.reply is not None else None

    def _protocol_name(self, tx: Transaction) -> str:
        """SMTP, ESMTP or UTF8SMTP, with an S appended for a TLS session (RFC 3848)."""
        name = "UTF8SMTP" if tx.smtputf8 else self.ctx.protocol
        return name + "S" if self.tls_info else name

    async def _read_data(self, cfg: object) -> tuple[bytes, Reply | None]:
        """Read the message up to the end-of-data line (see DataReader)."""
        c = self.svc.cfg
        reader = DataReader(
            mode=self.bare_mode,
            size_limit=c.int("message_size_limit"),
            header_limit=c.int("header_size_limit"),
        )
        line_limit = c.int("line_length_limit")
        timeout = c.time("smtpd_timeout")
        size_limit = c.int("message_size_limit")
        header_limit = c.int("header_size_limit")
        plain_limit = min(x for x in (size_limit, header_limit, 1 << 20) if x)
        plain = await self.conn.plain_message(plain_limit, timeout)
        if plain is not None:
            return plain, None
        while True:
            records = await self.conn.read_records(line_limit, timeout)
            if reader.feed(records):
                break
        self.conn.unread_records(records[reader.used:])
        if reader.too_big:
            return b"", Reply(552, "5.3.4", "Error: message file too big")
        if reader.bare_lf and self.bare_mode == "reject":
            code = c.int("smtpd_forbid_bare_newline_reject_code")
            return b"", Reply(code, "5.5.2", f"{self.host} Error: bare <LF> received")
        return reader.content(), None


class DataReader:
    """DATA records to message content: end of data, dot-unstuffing, limits.

    Modes of smtpd_forbid_bare_newline (spec §9): ``no`` strips every CR before
    LF and ends the data at any ``.`` line; ``normalize`` and ``reject`` end it
    only at a ``.`` line that, like the line before it, ended in CRLF, and drop
    other ``.`` lines, so no second, smuggled message can follow; ``reject``
    also notes any bare LF (``bare_lf``) for a refusal after the end.
    Outside ``no`` a stray CR inside a line becomes a space, so what is
    passed on has CRLF line ends only.
    A header longer than ``header_limit`` is cut there, the excess (also its
    continuation lines) discarded, as Postfix does; content beyond
    ``size_limit`` is read and dropped (``too_big``).
    """

    def __init__(self, mode: str, size_limit: int, header_limit: int) -> None:
        self.mode = mode
        self.size_limit = size_limit
        self.header_limit = header_limit
        self.parts: list[bytes] = []
        self.size = 0
        self.too_big = False
        self.bare_lf = False
        self._prev_bare = False
        self._line_start = True
        self._in_headers = True
        self._header_len = -1  # bytes kept of the current header; -1 before the first
        self._header_cut = False
        self.used = 0

    def content(self) -> bytes:
        return b"".join(self.parts)

    def feed(self, records: list[tuple[bytes, bool, bool]]) -> bool:
        """Take (content, bare_lf, complete) records; True at the end of data.

        ``used`` tells how many records of this batch belonged to the
        message; the rest are pipelined commands for the caller to hand back.
        """
        for self.used, (content, bare, complete) in enumerate(records, 1):
            if self.mode == "no":
                bare = False
                if complete:
                    content = content.rstrip(b"\r")
            elif b"\r" in content:
                # A stray CR is never passed on: a next hop that took it for a
                # line end could be smuggled a message (cleanup_replace_stray_cr_lf).
                content = content.replace(b"\r", b" ")
            if complete and self._line_start and content == b".":
                if self.mode == "no" or (not bare and not self._prev_bare):
                    return True
                self._prev_bare = bare
                self.bare_lf = True
                continue
            if complete and bare:
                self.bare_lf = True
            if self._line_start and content[:1] == b".":
                content = content[1:]
            line_start = self._line_start
            self._line_start = complete
            if complete:
                self.size += len(content) + 2
                self._prev_bare = bare
            else:
                self.size += len(content)
            if self.too_big:
                continue
            if self.size_limit and self.size > self.size_limit:
                self.too_big = True
                self.parts.clear()
                continue
            piece = self._header(content, line_start, complete)
            if piece is not None:
                self.parts.append(piece)
        return False

    def _header(self, content: bytes, line_start: bool, complete: bool) -> bytes | None:
        """The bytes to store for this record, after header_size_limit; None to drop it."""
        end = b"\r\n" if complete else b""
        if not self._in_headers:
            return content + end
        if line_start:
            if content[:1] in (b" ", b"\t") and self._header_len >= 0:
                self._header_len += 1  # the line break that joins a folded header
            elif _HEADER_START.match(content):
                self._header_len, self._header_cut = 0, False
            else:  # an empty line or body text: the headers are over
                self._in_headers = False
                return content + end
        if self._header_cut:
            return None
        room = self.header_limit - self._header_len if self.header_limit else len(content)
        if len(content) > room:
            self._header_cut = True
            return content[: max(room, 0)] + b"\r\n"
        self._header_len += len(content)
        return content + end
