"""``backupmx policy-server``: built-in greylisting served over the policy protocol.

A drop-in for postgrey: a Postfix (or another backupmx) points
``check_policy_service`` at it.  Per protocol, a request that is not an
``smtpd_access_policy`` request, or that we cannot read, gets no reply and
the connection is closed.
"""

from __future__ import annotations

import asyncio
import os
import signal

from backupmx.config import Config
from backupmx.log import log
from backupmx.policy.client import Endpoint, parse_endpoint
from backupmx.policy.greylist import Greylister
from backupmx.policy.request import decode
from backupmx.policy.runtime import open_greylister

MAX_REQUEST_BYTES = 65536
IDLE_TIMEOUT = 3600.0  # a silent client connection is closed after this


def parse_listen(text: str) -> Endpoint:
    """``inet:HOST:PORT`` or ``unix:PATH`` (absolute, or relative to the working directory)."""
    endpoint = parse_endpoint(text, os.getcwd())
    if endpoint.kind == "builtin":
        raise ValueError(f"{text}: expected inet:HOST:PORT or unix:PATH")
    return endpoint


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request block without its empty line; None at end of input."""
    block = b""
    while True:  # bounded by MAX_REQUEST_BYTES
        line = await reader.readline()
        if not line:
            return None
        if line == b"\n":
            return block
        block += line
        if len(block) > MAX_REQUEST_BYTES:
            raise ValueError("request too long")


def answer(greylister: Greylister, block: bytes) -> str | None:
    """The reply block for one request, or None: send nothing and close."""
    attrs = decode(block)
    if attrs.get("request") != "smtpd_access_policy":
        log.warning("policy", f"unrecognized request type: {attrs.get('request', '')!r}")
        return None
    decision = greylister.check(attrs)
    log.info("policy", decision.log_line(attrs))
    return f"action={decision.action}\n\n"


async def _serve_client(
    greylister: Greylister, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:  # one request after another until the client closes
            block = await asyncio.wait_for(_read_request(reader), IDLE_TIMEOUT)
            if block is None:
                break
            reply = answer(greylister, block)
            if reply is None:
                break
            writer.write(reply.encode("utf-8", "surrogateescape"))
            await writer.drain()
    except (TimeoutError, ValueError, OSError) as e:
        log.warning("policy", f"closing connection: {type(e).__name__}: {e}")
    finally:
        writer.close()


async def serve(cfg: Config, listen: str, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    endpoint = parse_listen(listen)
    greylister = open_greylister(cfg)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _serve_client(greylister, r, w)

    if endpoint.kind == "unix":
        if os.path.exists(endpoint.host):
            os.unlink(endpoint.host)
        server = await asyncio.start_unix_server(handle, endpoint.host, limit=MAX_REQUEST_BYTES)
        os.chmod(endpoint.host, 0o666)
    else:
        server = await asyncio.start_server(handle, endpoint.host, endpoint.port,
                                            limit=MAX_REQUEST_BYTES)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("policy", f"greylisting policy server listening on {endpoint}")
    if ready is not None:
        ready.set()
    await stop.wait()
    server.close()
    greylister.store.close()
    log.info("policy", "stopped")


def run(cfg: Config, listen: str) -> int:
    try:
        parse_listen(listen)
    except ValueError as e:
        log.error("policy", str(e))
        return 2
    try:
        asyncio.run(serve(cfg, listen))
    except OSError as e:
        log.error("policy", f"cannot listen on {listen}: {e}")
        return 1
    return 0
