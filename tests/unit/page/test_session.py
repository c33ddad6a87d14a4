"""The page's session cookie and form tokens."""

from backupmx.page import session

KEY = "k" * 40
NOW = 1_700_000_000.0


def test_issued_session_is_valid_until_it_expires() -> None:
    cookie = session.issue(KEY, NOW, lifetime=60)
    assert session.valid(KEY, cookie, NOW + 59)
    assert not session.valid(KEY, cookie, NOW + 60)


def test_session_from_another_key_or_tampered_is_refused() -> None:
    cookie = session.issue(KEY, NOW)
    assert not session.valid("x" * 40, cookie, NOW)
    expiry, _, mac = cookie.partition(".")
    assert not session.valid(KEY, f"{int(expiry) + 1000}.{mac}", NOW)
    assert not session.valid(KEY, "", NOW)
    assert not session.valid(KEY, "garbage", NOW)
    assert not session.valid(None, cookie, NOW)


def test_form_token_belongs_to_its_session() -> None:
    one = session.issue(KEY, NOW)
    other = session.issue(KEY, NOW + 1)
    token = session.csrf(KEY, one)
    assert session.authorized(KEY, one, token, NOW)
    assert not session.authorized(KEY, other, token, NOW)
    assert not session.authorized(KEY, one, "", NOW)
    flipped = token[:-1] + ("1" if token[-1] == "0" else "0")
    assert not session.authorized(KEY, one, flipped, NOW)


def test_form_token_without_a_live_session_is_refused() -> None:
    cookie = session.issue(KEY, NOW, lifetime=10)
    token = session.csrf(KEY, cookie)
    assert not session.authorized(KEY, cookie, token, NOW + 11)
    assert not session.authorized(None, cookie, token, NOW)
