"""The permission decision of the admin endpoint, and the token file it trusts."""

from __future__ import annotations

import pytest

from backupmx.adminauth import Level, bearer_ok, may_change, read_token, required

ADMINS = 990


@pytest.mark.parametrize(("uid", "gid", "groups", "admin_gid", "owner", "allowed"), [
    (0, 0, [0], None, None, True),  # root, with no admin_group
    (0, 100, [], ADMINS, 65534, True),
    (65534, 65534, [65534], None, 65534, True),  # the account the server runs as
    (1000, 1000, [1000], None, 65534, False),  # empty admin_group: root only
    (1000, 1000, [1000, 27], ADMINS, 65534, False),  # not a member
    (1000, ADMINS, [ADMINS], ADMINS, 65534, True),  # primary group
    (1000, 1000, [1000, ADMINS], ADMINS, 65534, True),  # supplementary group
    (1000, 1000, [1000, ADMINS], None, None, False),  # admin_group names no group
])
def test_may_change(uid, gid, groups, admin_gid, owner, allowed):
    assert may_change(uid, gid, groups, admin_gid, owner) is allowed


@pytest.mark.parametrize(("method", "path", "query", "level"), [
    ("GET", "/healthz", {}, Level.READ),
    ("GET", "/metrics", {}, Level.READ),
    ("GET", "/queue", {}, Level.READ),
    ("GET", "/queue/ABC", {}, Level.READ),
    ("GET", "/verify", {"address": ["a@b"]}, Level.READ),
    ("GET", "/verify", {"address": ["a@b"], "probe": ["1"]}, Level.OPERATE),
    ("POST", "/queue/flush", {"domain": ["nausch.org"]}, Level.OPERATE),
    ("POST", "/queue/delete", {"id": ["ALL"]}, Level.CHANGE),
    ("POST", "/queue/hold", {"id": ["ABC"]}, Level.CHANGE),
    ("POST", "/queue/release", {"id": ["ABC"]}, Level.CHANGE),
    ("POST", "/queue/bounce", {"id": ["ABC"]}, Level.CHANGE),  # unknown: refused by default
    ("POST", "/queue//flush", {}, Level.CHANGE),
    ("PUT", "/queue/flush", {}, Level.CHANGE),
    ("DELETE", "/queue/ABC", {}, Level.CHANGE),
])
def test_required(method, path, query, level):
    assert required(method, path, query) is level


def test_levels_include_those_below():
    assert Level.READ < Level.OPERATE < Level.CHANGE


TOKEN = "0123456789abcdef" * 4


def test_read_token(tmp_path):
    f = tmp_path / "admin.token"
    f.write_text(f"  {TOKEN}\n")
    f.chmod(0o600)
    assert read_token(str(f)) == (TOKEN, None)
    f.chmod(0o640)
    assert read_token(str(f)) == (None, f"admin_token_file {f} may be read by others than its "
                                  "owner (mode 0640): chmod 600 it")
    f.write_text("short\n")
    f.chmod(0o400)
    assert read_token(str(f)) == (None, f"admin_token_file {f} must hold one word of at least "
                                  "32 characters")
    f.chmod(0o600)
    f.write_text(f"{TOKEN} {TOKEN}\n")
    assert read_token(str(f))[0] is None
    missing = tmp_path / "none"
    assert read_token(str(missing)) == (
        None, f"cannot read admin_token_file {missing}: No such file or directory")
    link = tmp_path / "link"
    link.symlink_to(f)
    assert read_token(str(link))[0] is None  # not followed


def test_bearer_ok():
    assert bearer_ok(f"Bearer {TOKEN}", TOKEN)
    assert bearer_ok(f"bearer  {TOKEN} ", TOKEN)
    assert not bearer_ok(f"Basic {TOKEN}", TOKEN)
    assert not bearer_ok(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not bearer_ok("Bearer ", TOKEN)
    assert not bearer_ok("", TOKEN)
    assert not bearer_ok("Bearer ", None)
    assert not bearer_ok(f"Bearer {TOKEN}", None)
