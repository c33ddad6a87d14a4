"""The status page's handlers: the page, its login and logout, and its actions.

Reading the page needs nothing, as reading the queue does not.  Every form that
changes something needs a login session (a cookie, HttpOnly and SameSite=Strict, got
by giving the admin token once) and the form token that goes with it; a request
lacking either is refused 403 and changes nothing.  An action runs only after a
confirmation form, and only through POST: no GET changes anything.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from backupmx.log import log
from backupmx.page import model, session

if TYPE_CHECKING:
    from backupmx.server import Server

#: the JSON API's dispatch: (server, method, target) -> (status, content type, body)
Route = Callable[["Server", str, str], Awaitable[tuple[int, str, str]]]

#: the page's actions: the admin route each runs and the field naming its target
ACTIONS = {
    "flush": ("/queue/flush", "domain"),
    "hold": ("/queue/hold", "id"),
    "release": ("/queue/release", "id"),
    "delete": ("/queue/delete", "id"),
    "bounce": ("/queue/bounce", "id"),
}

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("backupmx.page", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)
#: no page of ours loads or frames anything from elsewhere
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self' 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Page:
    def __init__(self, server: Server, token: str | None, run: Route) -> None:
        self.server = server
        self.token = token
        self.run = run

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        html = TEMPLATES.get_template(name).render(**context)
        return web.Response(status=status, text=html, content_type="text/html",
                            headers=HEADERS)

    def cookie(self, request: web.Request) -> str | None:
        """The request's session cookie when it is a live session, else None."""
        value = request.cookies.get(session.COOKIE, "")
        return value if session.valid(self.token, value, time.time()) else None

    def csrf(self, request: web.Request) -> str | None:
        cookie = self.cookie(request)
        return session.csrf(self.token, cookie) if cookie and self.token else None

    async def index(self, request: web.Request) -> web.Response:
        return self.render("index.html", data=model.build(self.server),
                           csrf=self.csrf(request), login_possible=self.token is not None,
                           error=None)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = str(form.get("token", ""))
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            log.warning("master", f"admin page: login refused from {_peer(request)}")
            return self.render("index.html", status=403, data=model.build(self.server),
                               csrf=None, login_possible=self.token is not None,
                               error="wrong token")
        log.info("master", f"admin page: login from {_peer(request)}")
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(session.COOKIE, session.issue(self.token, time.time()),
                        max_age=session.LIFETIME, path="/", httponly=True, samesite="Strict")
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        resp = web.HTTPSeeOther("/")
        resp.del_cookie(session.COOKIE, path="/")
        return resp

    async def action(self, request: web.Request) -> web.StreamResponse:
        """Confirm, then run, one action; refused without session and form token."""
        form = await request.post()
        cookie = request.cookies.get(session.COOKIE, "")
        if not session.authorized(self.token, cookie, str(form.get("csrf", "")), time.time()):
            log.warning("master", f"admin page: action refused from {_peer(request)}: "
                        f"no valid session and form token")
            return web.json_response({"ok": False, "denied": True, "error": "permission denied"},
                                     status=403)
        op = str(form.get("op", ""))
        if op not in ACTIONS:
            return web.json_response({"ok": False, "error": "no such action"}, status=400)
        path, field = ACTIONS[op]
        target = str(form.get(field, ""))
        if form.get("confirm") != "yes":
            return self.render("confirm.html", op=op, field=field, target=target,
                               csrf=session.csrf(self.token or "", cookie))
        query = urlencode({field: target}) if target else ""
        status, _, body = await self.run(self.server, "POST", f"{path}?{query}")
        log.info("master", f"admin page: {op} {target or 'all'} from {_peer(request)}: "
                 f"{status}")
        if status != 200:
            return self.render("index.html", status=status, data=model.build(self.server),
                               csrf=session.csrf(self.token or "", cookie),
                               login_possible=True, error=f"{op} {target}: {body}")
        return web.HTTPSeeOther("/")


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"[{peer[0]}]:{peer[1]}" if isinstance(peer, tuple) else "the admin socket"


def add_routes(app: web.Application, server: Server, token: str | None, run: Route) -> None:
    """The page's routes, added before the JSON API's catch-all; ``run`` is its dispatch."""
    page = Page(server, token, run)
    app.router.add_get("/", page.index)
    app.router.add_post("/login", page.login)
    app.router.add_post("/logout", page.logout)
    app.router.add_post("/action", page.action)
