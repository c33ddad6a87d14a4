"""The admin endpoint: health, metrics and queue actions, on a Unix socket and on loopback TCP.

A deliberately tiny HTTP/1.0 server (one request per connection, a handful of
routes) so that the queue commands can tell a running server what to do.  The
same routes are served on ``$queue_directory/public/admin.sock``, where the kernel
names the peer, and on ``admin_listen`` for HTTP clients; who may do what is
decided per request before the route runs (backupmx/adminauth.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from backupmx import adminauth
from backupmx.adminauth import Level
from backupmx.log import log
from backupmx.queue import listing
from backupmx.verify import report as verify_report
from backupmx.verify.decide import Timing

if TYPE_CHECKING:
    from backupmx.server import Server

#: what the peer of one connection may do, given the request's headers
Grant = Callable[[asyncio.StreamWriter, dict[str, str]], tuple[Level, str]]


def parse_admin_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"admin_listen must be a loopback address, not {host}")
    return host, int(port)


@dataclass
class Endpoint:
    """The listening sockets; closing removes the Unix socket's file."""

    servers: list[asyncio.base_events.Server] = field(default_factory=list)
    socket_path: str | None = None

    def close(self) -> None:
        for srv in self.servers:
            srv.close()
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass


async def start(server: Server, token: str | None) -> Endpoint:
    """Serve the Unix socket (always) and admin_listen (when set), as the mail owner."""
    cfg = server.svc.cfg
    endpoint = Endpoint()
    problem = adminauth.group_problem(cfg)
    if problem:
        log.warning("master", problem)
    owner = os.geteuid()

    def local(writer: asyncio.StreamWriter, headers: dict[str, str]) -> tuple[Level, str]:
        try:
            uid, gid = adminauth.peer_ids(writer.get_extra_info("socket"))
        except (OSError, AttributeError):
            return Level.READ, "an unknown peer"
        return adminauth.local_level(server.svc.cfg, uid, gid, owner), f"uid {uid}"

    def remote(writer: asyncio.StreamWriter, headers: dict[str, str]) -> tuple[Level, str]:
        peer = writer.get_extra_info("peername")
        who = f"[{peer[0]}]:{peer[1]}" if peer else "an unknown peer"
        if adminauth.bearer_ok(headers.get("authorization", ""), token):
            return Level.CHANGE, who
        return Level.READ, who

    path = adminauth.socket_path(cfg)
    try:
        endpoint.servers.append(await _serve_unix(server, path, local))
        endpoint.socket_path = path
        log.info("master", f"admin endpoint on {path}")
    except OSError as e:  # mail still flows; the queue commands work on the files
        log.error("master", f"cannot serve the admin socket {path}: {e}")
    value = cfg.str("admin_listen")
    if value:
        host, port = parse_admin_listen(value)
        endpoint.servers.append(await asyncio.start_server(
            _handler(server, remote), host, port, reuse_address=True))
        log.info("master", f"admin endpoint on {host}:{port}")
    return endpoint


async def _serve_unix(server: Server, path: str, grant: Grant) -> asyncio.base_events.Server:
    """Listen on ``path``, reachable by every local user, as Postfix's public/ sockets are.

    The queue directory is made traversable (not listable) and public/ 0711; the
    spool below stays the owner's alone.
    """
    queue_directory = os.path.dirname(os.path.dirname(path))
    mode = stat.S_IMODE(os.stat(queue_directory).st_mode)
    os.chmod(queue_directory, mode | 0o111)
    public = os.path.dirname(path)
    os.makedirs(public, exist_ok=True)
    os.chmod(public, 0o711)
    if os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
        os.unlink(path)  # left by a server that did not stop cleanly
    srv = await asyncio.start_unix_server(_handler(server, grant), path)
    os.chmod(path, 0o666)
    return srv


def _handler(server: Server, grant: Grant) -> Callable[
        [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            first, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = first.split(" ", 2)
            headers = {k.strip().lower(): v.strip()
                       for k, sep, v in (line.partition(":") for line in lines) if sep}
            url = urlsplit(target)
            needed = adminauth.required(method, url.path, parse_qs(url.query))
            level, who = grant(writer, headers)
            if level < needed:
                log.warning("master", f"admin: permission denied: {method} {url.path} "
                            f"from {who}")
                status, ctype, body = 403, "application/json", json.dumps(
                    {"ok": False, "denied": True, "error": "permission denied"})
            else:
                status, ctype, body = await route(server, method, target)
        except Exception as e:
            status, ctype, body = 400, "text/plain", f"bad request: {e}\n"
        data = body.encode()
        writer.write(
            f"HTTP/1.0 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    return handle


async def route(server: Server, method: str, target: str) -> tuple[int, str, str]:
    url = urlsplit(target)
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    qm = server.qmgr
    path = url.path
    if method == "GET" and path == "/healthz":
        return 200, "text/plain", "ok\n"
    if method == "GET" and path == "/metrics":
        return 200, "text/plain; version=0.0.4", metrics(server)
    if method == "GET" and path == "/queue":
        envs = sorted(qm.msgs.values(), key=lambda e: e.arrival)
        return 200, "application/json", json.dumps(listing.as_json(envs, active=qm.active))
    if method == "GET" and path.startswith("/queue/"):
        env = qm.msgs.get(path.rsplit("/", 1)[1])
        if env is None:
            return 404, "application/json", json.dumps({"ok": False, "error": "no such message"})
        try:
            content = server.spool.content(env.id)
        except KeyError:
            content = b""
        return 200, "application/json", json.dumps({
            "ok": True,
            "json": listing.as_json([env], active=qm.active)[0],
            "text": listing.show_text(env, content, active=qm.active),
        })
    if method == "GET" and path == "/status":
        return 200, "application/json", json.dumps(server.watch.status())
    if method == "GET" and path == "/verify":
        return await verify_entry(server, q.get("address", ""), bool(q.get("probe")))
    if method != "POST":
        return 404, "text/plain", "not found\n"
    if path == "/queue/flush":
        fut = qm.flush(q.get("domain") or None)
        if q.get("wait"):
            await fut
        return 200, "application/json", json.dumps({"ok": True})
    qid = q.get("id", "")
    if path == "/queue/delete":
        if qid == "ALL":
            n = await qm.delete_all()
            return 200, "application/json", json.dumps({"ok": True, "deleted": n})
        return _result(await qm.delete(qid), qid)
    if path == "/queue/hold":
        return _result(await qm.hold(qid), qid)
    if path == "/queue/release":
        return _result(await qm.release(qid), qid)
    return 404, "text/plain", "not found\n"


async def verify_entry(server: Server, address: str, probe: bool) -> tuple[int, str, str]:
    """The verify cache record of ``address`` (``backupmx verify``), probing first if asked."""
    svc = server.svc
    if not address:
        return 400, "application/json", json.dumps({"error": "address= is missing"})
    if probe:
        entry = await svc.verifier.probe_now(address, svc.resolve(address).address, svc)
    else:
        entry = svc.verifier.entry(address)
    d = verify_report.describe(address, entry, Timing.from_cfg(svc.cfg), time.time())
    return 200, "application/json", json.dumps(d)


def _result(ok: bool, qid: str) -> tuple[int, str, str]:
    if ok:
        return 200, "application/json", json.dumps({"ok": True})
    return 404, "application/json", json.dumps({"ok": False, "error": f"{qid}: no such message"})


def metrics(server: Server) -> str:
    qm = server.qmgr
    lines = [
        "# HELP backupmx_queue_messages Messages in the queue.",
        "# TYPE backupmx_queue_messages gauge",
        f"backupmx_queue_messages {len(qm.msgs)}",
        "# HELP backupmx_queue_active Messages being delivered.",
        "# TYPE backupmx_queue_active gauge",
        f"backupmx_queue_active {len(qm.active)}",
        "# HELP backupmx_queue_transactions_total Spool transactions the master committed "
        "(one fsync each).",
        "# TYPE backupmx_queue_transactions_total counter",
        f"backupmx_queue_transactions_total {server.spool.commits}",
        "# HELP backupmx_smtpd_sessions Open SMTP sessions.",
        "# TYPE backupmx_smtpd_sessions gauge",
        f"backupmx_smtpd_sessions {server.session_count()}",
        "# HELP backupmx_delivery_results_total Recipient delivery results.",
        "# TYPE backupmx_delivery_results_total counter",
    ]
    for kind in ("delivered", "deferred", "bounced"):
        lines.append(f'backupmx_delivery_results_total{{result="{kind}"}} {qm.stats[kind]}')
    verifier = server.svc.verifier
    lines += [
        "# HELP backupmx_verify_probes_total Address-verification probes sent.",
        "# TYPE backupmx_verify_probes_total counter",
        f"backupmx_verify_probes_total {verifier.probes}",
        "# HELP backupmx_verify_connections_total Sessions opened for probes.",
        "# TYPE backupmx_verify_connections_total counter",
        f"backupmx_verify_connections_total {verifier.prober.connections}",
    ]
    lines.append(f"backupmx_uptime_seconds {time.time() - server.started:.0f}")
    return "\n".join(lines) + "\n"
