"""The policy delegation client: endpoints, settings, and reused connections.

Postfix keeps one connection per endpoint in each smtpd process.  backupmx runs
every session in one process, so each endpoint has a small pool instead: a
request takes an idle connection (or opens one) and gives it back afterwards;
with one request at a time that is exactly one reused connection.  Connections
are dropped after ``max_idle`` unused, ``max_ttl`` after they were opened, and
after ``request_limit`` requests (spec/policy-protocol.md §1.2).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, replace

from backupmx.config import Config, parse_time, split_list
from backupmx.log import log
from backupmx.policy.request import decode, encode

MAX_REPLY_BYTES = 65536  # a reply larger than this is junk, not a policy answer


class ServiceSyntaxError(ValueError):
    """A malformed check_policy_service argument."""


@dataclass(frozen=True)
class Endpoint:
    kind: str  # inet | unix | builtin
    host: str = ""  # inet host, unix path or builtin name
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "inet":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"inet:{host}:{self.port}"
        return f"{self.kind}:{self.host}"


@dataclass(frozen=True)
class Settings:
    timeout: float = 100
    max_idle: float = 300
    max_ttl: float = 1000
    request_limit: int = 0
    try_limit: int = 2
    retry_delay: float = 1
    default_action: str = "451 4.3.5 Server configuration problem"
    policy_context: str = ""


_TIMES = {"timeout", "max_idle", "max_ttl", "retry_delay"}
_INTS = {"request_limit", "try_limit"}
_TEXTS = {"default_action", "policy_context"}


def settings_from(cfg: Config) -> Settings:
    """The ``smtpd_policy_service_*`` parameters."""
    return Settings(
        timeout=cfg.time("smtpd_policy_service_timeout"),
        max_idle=cfg.time("smtpd_policy_service_max_idle"),
        max_ttl=cfg.time("smtpd_policy_service_max_ttl"),
        request_limit=cfg.int("smtpd_policy_service_request_limit"),
        try_limit=cfg.int("smtpd_policy_service_try_limit"),
        retry_delay=cfg.time("smtpd_policy_service_retry_delay"),
        default_action=cfg.str("smtpd_policy_service_default_action"),
        policy_context=cfg.str("smtpd_policy_service_policy_context"),
    )


def parse_endpoint(text: str, queue_directory: str) -> Endpoint:
    """``inet:host:port``, ``unix:path`` / ``local:path`` (relative to the queue directory)."""
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if not sep or not rest:
        raise ServiceSyntaxError(f"policy service {text!r}: expected inet:HOST:PORT or unix:PATH")
    if kind in ("unix", "local"):
        return Endpoint("unix", os.path.join(queue_directory, rest))
    if kind == "builtin":
        return Endpoint("builtin", rest.lower())
    if kind != "inet":
        raise ServiceSyntaxError(f"policy service {text!r}: unknown transport {kind!r}")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServiceSyntaxError(f"policy service {text!r}: expected inet:HOST:PORT")
    return Endpoint("inet", host, int(port))


def parse_service(arg: str, base: Settings, queue_directory: str) -> tuple[Endpoint, Settings]:
    """The argument of check_policy_service, with 3.0+ ``{ endpoint, name=value ... }`` overrides.

    The list parser has already removed the outer braces; an override whose value
    has spaces is written in braces of its own, as in Postfix.
    """
    try:
        items = split_list(arg)
    except ValueError as e:
        raise ServiceSyntaxError(f"policy service {arg!r}: {e}") from None
    if not items:
        raise ServiceSyntaxError("check_policy_service needs an endpoint")
    endpoint = parse_endpoint(items[0], queue_directory)
    changes: dict[str, float | int | str] = {}
    for item in items[1:]:
        name, sep, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            raise ServiceSyntaxError(f"policy service {arg!r}: expected name=value, got {item!r}")
        try:
            if name in _TIMES:
                changes[name] = parse_time(value, "s")
            elif name in _INTS:
                changes[name] = int(value)
            elif name in _TEXTS:
                changes[name] = value
            else:
                raise ServiceSyntaxError(f"policy service {arg!r}: unknown attribute {name!r}")
        except ValueError as e:
            raise ServiceSyntaxError(f"policy service {arg!r}: {name}: {e}") from None
    return endpoint, replace(base, **changes)  # type: ignore[arg-type]


class PolicyTalkError(Exception):
    """One attempt failed: the connection is unusable and must be dropped."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float
    last_used: float
    requests: int = 0

    def usable(self, now: float, s: Settings) -> bool:
        """Fresh enough, not closed or talked to by the server while idle."""
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and now - self.last_used < s.max_idle
            and now - self.opened < s.max_ttl
            and not (s.request_limit and self.requests >= s.request_limit)
        )

    def close(self) -> None:
        self.writer.close()


@dataclass
class PolicyClient:
    endpoint: Endpoint
    settings: Settings
    idle: list[_Conn] = field(default_factory=list)

    async def _connect(self) -> _Conn:
        s = self.settings
        try:
            if self.endpoint.kind == "unix":
                coro = asyncio.open_unix_connection(self.endpoint.host, limit=MAX_REPLY_BYTES)
            else:
                coro = asyncio.open_connection(
                    self.endpoint.host, self.endpoint.port, limit=MAX_REPLY_BYTES
                )
            reader, writer = await asyncio.wait_for(coro, s.timeout)
        except TimeoutError:
            raise PolicyTalkError("timeout while connecting") from None
        except OSError as e:
            raise PolicyTalkError(e.strerror or str(e)) from None
        now = time.monotonic()
        return _Conn(reader, writer, now, now)

    def _take(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.usable(now, self.settings):
                return conn
            conn.close()
        return None

    async def _attempt(self, request: bytes) -> dict[str, str]:
        conn = self._take() or await self._connect()
        try:
            reply = await asyncio.wait_for(self._exchange(conn, request), self.settings.timeout)
        except TimeoutError:
            conn.close()
            raise PolicyTalkError("timeout while talking to the server") from None
        except (OSError, ValueError, asyncio.IncompleteReadError, PolicyTalkError) as e:
            conn.close()
            raise PolicyTalkError(str(e) or type(e).__name__) from None
        conn.requests += 1
        conn.last_used = time.monotonic()
        self.idle.append(conn)
        return reply

    @staticmethod
    async def _exchange(conn: _Conn, request: bytes) -> dict[str, str]:
        conn.writer.write(request)
        await conn.writer.drain()
        block = b""
        while True:  # bounded: readline is limited, and so is the block
            line = await conn.reader.readline()
            if not line:
                raise PolicyTalkError("lost connection")
            if line == b"\n":
                break
            block += line
            if len(block) > MAX_REPLY_BYTES:
                raise PolicyTalkError("reply too long")
        return decode(block)

    async def query(self, attrs: dict[str, str]) -> str | None:
        """The action for one request, or None when every attempt failed (use the default)."""
        request = encode(attrs)
        s = self.settings
        for attempt in range(1, max(1, s.try_limit) + 1):
            if attempt > 1:
                await asyncio.sleep(s.retry_delay)
            try:
                reply = await self._attempt(request)
            except PolicyTalkError as e:
                log.warning("smtpd", f"problem talking to server {self.endpoint}: {e}")
                continue
            if not reply:
                log.warning("smtpd", f"{self.endpoint}: empty reply from policy server")
                continue
            action = reply.get("action")
            if action is None:
                log.warning("smtpd", f"{self.endpoint}: policy server reply has no action")
                continue
            return action
        log.warning("smtpd", f"problem talking to server {self.endpoint}: giving up after "
                    f"{max(1, s.try_limit)} attempts")
        return None

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
