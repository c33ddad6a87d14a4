"""The page's login session and form tokens, derived from the admin token by HMAC.

Both are stateless: a session cookie is ``expiry.mac`` and a form's CSRF token is a
MAC of that cookie, so the server keeps no session table, a token rotation (a new
admin_token_file, read at start) ends every session, and a form token is worth
nothing without the cookie it was made for (which a cross-site page cannot read).
"""

from __future__ import annotations

import hashlib
import hmac

#: how long a login lasts
LIFETIME = 8 * 3600
COOKIE = "backupmx_session"


def _mac(key: str, purpose: str, value: str) -> str:
    return hmac.new(key.encode(), f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()


def issue(key: str, now: float, lifetime: float = LIFETIME) -> str:
    """A session cookie value valid until ``now + lifetime``."""
    expiry = str(int(now + lifetime))
    return f"{expiry}.{_mac(key, 'session', expiry)}"


def valid(key: str | None, cookie: str, now: float) -> bool:
    """Whether ``cookie`` is a session this key issued and that has not expired."""
    if key is None:
        return False
    expiry, _, mac = cookie.partition(".")
    if not expiry.isdigit() or int(expiry) <= now:
        return False
    return hmac.compare_digest(mac.encode(), _mac(key, "session", expiry).encode())


def csrf(key: str, cookie: str) -> str:
    """The form token that goes with the session ``cookie``."""
    return _mac(key, "csrf", cookie)


def csrf_ok(key: str | None, cookie: str, given: str) -> bool:
    """Whether ``given`` is the form token of a valid-looking ``cookie`` (checked apart)."""
    if key is None or not given:
        return False
    return hmac.compare_digest(given.encode(), csrf(key, cookie).encode())


def authorized(key: str | None, cookie: str, given: str, now: float) -> bool:
    """A changing request from the page: a live session and its own form token."""
    return valid(key, cookie, now) and csrf_ok(key, cookie, given)
