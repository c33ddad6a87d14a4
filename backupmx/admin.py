"""The admin endpoint: health, metrics, queue actions and the status page, over aiohttp.

One aiohttp application is served on ``$queue_directory/public/admin.sock``, where
the kernel names the peer, and on ``admin_listen`` for HTTP clients.  The JSON API
is dispatched in :func:`route` (one line per route); who may call it is decided per
request before the route runs (backupmx/adminauth.py).  The page (backupmx/page/)
has its own handlers and its own credentials: a login session and form tokens.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from backupmx import adminauth
from backupmx.adminauth import Level
from backupmx.log import log
from backupmx.metrics import scrape
from backupmx.page import views
from backupmx.queue import listing
from backupmx.verify import report as verify_report
from backupmx.verify.decide import Timing

if TYPE_CHECKING:
    from backupmx.server import Server

#: the largest request body read (the page's forms are a few hundred bytes)
MAX_BODY = 64 * 1024


def parse_admin_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"admin_listen must be a loopback address, not {host}")
    return host, int(port)


@dataclass
class Endpoint:
    """The running application; closing stops its sites and removes the socket file."""

    runner: web.AppRunner
    socket_path: str | None = None

    async def close(self) -> None:
        await self.runner.cleanup()
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass


class Api:
    """The JSON API handler: the caller's level against the request's, then :func:`route`."""

    def __init__(self, server: Server, token: str | None) -> None:
        self.server = server
        self.token = token
        self.owner = os.geteuid()

    def grant(self, request: web.Request) -> tuple[Level, str]:
        """What the peer may do: by its credentials on the socket, by the token on TCP."""
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None and sock.family == socket.AF_UNIX:
            try:
                uid, gid = adminauth.peer_ids(sock)
            except OSError:
                return Level.READ, "an unknown peer"
            return adminauth.local_level(self.server.svc.cfg, uid, gid, self.owner), f"uid {uid}"
        peer = request.transport.get_extra_info("peername") if request.transport else None
        who = f"[{peer[0]}]:{peer[1]}" if peer else "an unknown peer"
        if adminauth.bearer_ok(request.headers.get("Authorization", ""), self.token):
            return Level.CHANGE, who
        return Level.READ, who

    async def __call__(self, request: web.Request) -> web.Response:
        method, path = request.method, request.path
        needed = adminauth.required(method, path, parse_qs(request.query_string))
        level, who = self.grant(request)
        if level < needed:
            log.warning("master", f"admin: permission denied: {method} {path} from {who}")
            return web.json_response(
                {"ok": False, "denied": True, "error": "permission denied"}, status=403)
        try:
            status, ctype, body = await route(self.server, method, request.path_qs)
        except Exception as e:
            status, ctype, body = 400, "text/plain", f"bad request: {e}\n"
        return web.Response(status=status, body=body.encode(), headers={"Content-Type": ctype})


async def start(server: Server, token: str | None) -> Endpoint:
    """Serve the Unix socket (always) and admin_listen (when set), as the mail owner."""
    cfg = server.svc.cfg
    problem = adminauth.group_problem(cfg)
    if problem:
        log.warning("master", problem)
    app = web.Application(client_max_size=MAX_BODY)
    views.add_routes(app, server, token, route)
    app.router.add_route("*", "/{tail:.*}", Api(server, token))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    endpoint = Endpoint(runner)
    path = adminauth.socket_path(cfg)
    try:
        await _serve_unix(runner, path)
        endpoint.socket_path = path
        log.info("master", f"admin endpoint on {path}")
    except OSError as e:  # mail still flows; the queue commands work on the files
        log.error("master", f"cannot serve the admin socket {path}: {e}")
    value = cfg.str("admin_listen")
    if value:
        host, port = parse_admin_listen(value)
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        log.info("master", f"admin endpoint on {host}:{port}")
    return endpoint


async def _serve_unix(runner: web.AppRunner, path: str) -> None:
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
    await web.UnixSite(runner, path).start()
    os.chmod(path, 0o666)


async def route(server: Server, method: str, target: str) -> tuple[int, str, str]:
    url = urlsplit(target)
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    qm = server.qmgr
    path = url.path
    if method == "GET" and path == "/healthz":
        return 200, "text/plain", "ok\n"
    if method == "GET" and path == "/metrics":
        return 200, scrape.CONTENT_TYPE, await scrape.exposition(server)
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
    if path == "/queue/bounce":
        return await _bounce(server, qid)
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


async def _bounce(server: Server, qid: str) -> tuple[int, str, str]:
    """``queue bounce ID|ALL``: a quarantined message returned to its sender now."""
    qm = server.qmgr
    try:
        n = await qm.bounce_all() if qid == "ALL" else int(await qm.bounce(qid))
    except Exception as e:  # the notice could not be stored: nothing has changed
        return 503, "application/json", json.dumps(
            {"ok": False, "error": f"{qid}: cannot queue the non-delivery notification: {e}"})
    if qid == "ALL":
        return 200, "application/json", json.dumps({"ok": True, "bounced": n})
    if n:
        return 200, "application/json", json.dumps({"ok": True})
    return 404, "application/json", json.dumps(
        {"ok": False, "error": f"{qid}: no such quarantined message"})


def _result(ok: bool, qid: str) -> tuple[int, str, str]:
    if ok:
        return 200, "application/json", json.dumps({"ok": True})
    return 404, "application/json", json.dumps({"ok": False, "error": f"{qid}: no such message"})
