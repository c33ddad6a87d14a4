"""Redis as the store that several backupmx nodes share: its URL and its connection.

``redis://HOST:PORT/DB`` names it (interface.md); ``:PORT`` defaults to 6379 and
``/DB`` to 0.  Calls are synchronous and made where the SQLite stores read their
file: a Redis on the local network answers in well under a millisecond.  A Redis
that does not answer raises :class:`StoreUnavailable`, an ``OSError`` like an
unreadable store file, so every caller already treats it as a temporary failure.
After a connection failure the link refuses at once for :data:`HOLD` seconds: a
Redis that hangs stalls the event loop once per ``HOLD``, not once per RCPT.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SCHEME = "redis://"
DEFAULT_PORT = 6379
TIMEOUT = 1.0  # seconds for a connect or an answer
HOLD = 2.0  # seconds of failing at once after a connection failure
SCAN_BATCH = 500
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                       r"[A-Za-z0-9])?)*\.?")
_DIGITS = re.compile(r"[0-9]{1,9}")
T = TypeVar("T")


class StoreUnavailable(OSError):
    """Redis did not answer, or answered with an error: try again later."""


@dataclass(frozen=True)
class RedisUrl:
    host: str
    port: int
    db: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}{host}:{self.port}/{self.db}"


def is_redis(spec: str) -> bool:
    return spec.strip().lower().startswith(SCHEME)


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"{spec}: {why} (expected redis://HOST:PORT/DB)")


def parse_url(spec: str) -> RedisUrl:
    """The host, port and database number of a ``redis://`` URL; ValueError says what is wrong."""
    spec = spec.strip()
    if not is_redis(spec):
        raise _bad(spec, "not a redis:// URL")
    rest = spec[len(SCHEME):]
    if any(c in rest for c in "@?#"):
        raise _bad(spec, "user names, passwords and options are not supported")
    hostport, slash, db_text = rest.partition("/")
    if hostport.startswith("["):
        host, close, tail = hostport[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise _bad(spec, "unclosed or malformed [IPv6] address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(spec, f"bad IPv6 address {host!r}") from None
        port_text = tail[1:] if tail else None
    else:
        host, colon, port = hostport.partition(":")
        if ":" in port:
            raise _bad(spec, "an IPv6 address must be written in brackets")
        if not _HOSTNAME.fullmatch(host):
            raise _bad(spec, f"bad host name {host!r}" if host else "the host is missing")
        port_text = port if colon else None
    port_number = DEFAULT_PORT
    if port_text is not None:
        if not _DIGITS.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise _bad(spec, f"bad port {port_text!r}: a number from 1 to 65535")
        port_number = int(port_text)
    db = 0
    if slash:
        if not _DIGITS.fullmatch(db_text):
            raise _bad(spec, f"bad database number {db_text!r}: 0, 1, 2, ...")
        db = int(db_text)
    return RedisUrl(host, port_number, db)


class Link:
    """One client for one Redis URL; it connects on first use, not at construction."""

    def __init__(self, url: RedisUrl) -> None:
        self.url = url
        self.client = redis.Redis(
            host=url.host, port=url.port, db=url.db, socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0),
            decode_responses=True, encoding_errors="surrogateescape",
        )
        self._down_until = 0.0
        self._down_why = ""

    def run(self, op: Callable[[redis.Redis], T]) -> T:
        """``op(client)``; any Redis failure as StoreUnavailable."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"{self.url}: {self._down_why} (not retried for {HOLD:.0f}s)")
        try:
            return op(self.client)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self._down_until = time.monotonic() + HOLD
            self._down_why = str(e)
            raise StoreUnavailable(f"{self.url}: {e}") from e
        except redis.RedisError as e:
            raise StoreUnavailable(f"{self.url}: {e}") from e

    def keys(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (SCAN: Redis goes on serving meanwhile)."""
        pattern = _glob_escape(prefix) + "*"
        return self.run(lambda r: list(r.scan_iter(match=pattern, count=SCAN_BATCH)))

    def hashes(self, prefix: str, fields: tuple[str, ...]) -> Iterator[tuple[str, list[Any]]]:
        """Every key under ``prefix`` (without it) with those fields of its hash, in batches."""
        keys = self.keys(prefix)
        for i in range(0, len(keys), SCAN_BATCH):
            batch = keys[i:i + SCAN_BATCH]

            def fetch(r: redis.Redis, batch: list[str] = batch) -> list[Any]:
                pipe = r.pipeline(transaction=False)
                for key in batch:
                    pipe.hmget(key, list(fields))
                return list(pipe.execute())

            for key, values in zip(batch, self.run(fetch), strict=True):
                yield key[len(prefix):], list(values)

    def close(self) -> None:
        self.client.close()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
