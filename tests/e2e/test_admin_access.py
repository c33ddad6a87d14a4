"""Who may change the queue: root and admin_group, through the CLI, the socket or HTTP.

The server runs as root and switches to ``nobody``; real system accounts (a plain
user, and a member of the admin group) run the real CLI with ``runuser``.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.util import message, send, strip_received, wait_queue
from tests.peers.backupmx import BackupMX, command

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create accounts")

USER = "backupmx-test-user"
ADMIN = "backupmx-test-admin"
GROUP = "backupmx-test-admins"
SEED = f"""
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
mail_owner = nobody
admin_group = {GROUP}
minimal_backoff_time = 1h
maximal_backoff_time = 1h
"""


def _ensure_accounts() -> None:
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True)
    for name, extra in ((USER, []), (ADMIN, ["-G", GROUP])):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home",
                            "--shell", "/usr/sbin/nologin", *extra, name], check=True)
    subprocess.run(["usermod", "-a", "-G", GROUP, ADMIN], check=True)


@pytest.fixture(scope="module")
def accounts() -> None:
    _ensure_accounts()
    res = subprocess.run(["runuser", "-u", USER, "--", *command(), "--version"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"{USER} cannot run {command()[0]} (a directory on its path is "
                    f"closed to other users): {res.stderr.strip()}")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "BACKUPMX_CONFIG"}


def as_user(user: str, mx: BackupMX, *args: str) -> subprocess.CompletedProcess[str]:
    """``backupmx -c FILE ARGS`` run by ``user``."""
    return subprocess.run(["runuser", "-u", user, "--", *command(), "-c", str(mx.config_file),
                           *args], capture_output=True, text=True, timeout=60, env=_env())


@pytest.fixture
def make_mx(open_dir: Path, unbound, smtp_port, accounts):
    servers: list[BackupMX] = []

    def make(extra: str = "") -> BackupMX:
        mx = BackupMX(open_dir, SEED + extra, unbound, smtp_port)
        servers.append(mx)
        mx.start()
        return mx

    yield make
    for mx in servers:
        mx.stop()


def queued(mx: BackupMX, primary, count: int) -> list[str]:
    """``count`` messages for alice@nausch.org, deferred while the primary is down."""
    primary.stop()
    for i in range(count):
        out = send(mx, "s@sender.example", ["alice@nausch.org"], message(f"held back {i}"))
        assert out.data is not None and out.data[0] == 250
    q = wait_queue(mx, lambda q: len(q) == count and all(
        m["recipients"][0]["attempts"] == 1 and m["state"] == "deferred" for m in q))
    return [m["id"] for m in q]


def states(mx: BackupMX) -> dict[str, str]:
    res = mx.cli("queue", "list", "--json")
    assert res.returncode == 0, res.stderr
    return {m["id"]: m["state"] for m in json.loads(res.stdout)}


def test_local_user_lists_and_flushes_but_may_not_change(make_mx, primary):
    mx = make_mx()
    a, b = queued(mx, primary, 2)
    assert mx.cli("queue", "hold", b).returncode == 0
    before = {a: "deferred", b: "hold"}
    assert states(mx) == before
    for args in (("delete", a), ("delete", "ALL"), ("hold", a), ("release", b)):
        res = as_user(USER, mx, "queue", *args)
        assert (res.returncode, res.stdout, res.stderr) == (
            1, "", f"backupmx: queue {args[0]}: permission denied\n"), args
        assert states(mx) == before
    uid = pwd.getpwnam(USER).pw_uid
    mx.wait_log(rf"admin: permission denied: POST /queue/release from uid {uid}$")

    listing = as_user(USER, mx, "queue", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert {m["id"]: m["state"] for m in json.loads(listing.stdout)} == before
    show = as_user(USER, mx, "queue", "show", a)
    assert show.returncode == 0, show.stderr
    assert "alice@nausch.org" in show.stdout

    primary.start()  # the next attempt is an hour away: only the flush delivers now
    res = as_user(USER, mx, "queue", "flush", "--wait")
    assert (res.returncode, res.stderr) == (0, "")
    got = primary.wait_for(1)
    assert got[0].rcpts == ["alice@nausch.org"]
    assert strip_received(got[0].data)[1] == message("held back 0")
    wait_queue(mx, lambda q: [m["id"] for m in q] == [b])


def test_admin_group_member_and_root_may_change(make_mx, primary):
    mx = make_mx()
    a, b, c = queued(mx, primary, 3)
    for args in (("hold", a), ("release", a), ("hold", b), ("delete", c)):
        res = as_user(ADMIN, mx, "queue", *args)
        assert (res.returncode, res.stderr) == (0, ""), args
    assert states(mx) == {a: "deferred", b: "hold"}
    res = mx.cli("queue", "delete", "ALL")
    assert (res.returncode, res.stderr) == (0, "")
    assert states(mx) == {}


def _over_socket(user: str, path: str, request: str) -> str:
    """What the admin socket answers ``request`` sent by ``user``'s own client."""
    client = ("import socket, sys\n"
              "s = socket.socket(socket.AF_UNIX)\n"
              "s.connect(sys.argv[1])\n"
              "s.sendall(sys.argv[2].encode())\n"
              "sys.stdout.write(s.makefile('rb').read().decode())\n")
    res = subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", client, path,
                          request], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.decode()


def test_the_socket_itself_refuses_a_local_user(make_mx, primary):
    mx = make_mx()
    (a,) = queued(mx, primary, 1)
    path = str(mx.dir / "spool" / "public" / "admin.sock")
    for target in ("/queue/delete?id=ALL", f"/queue/delete?id={a}", f"/queue/hold?id={a}"):
        reply = _over_socket(USER, path, f"POST {target} HTTP/1.0\r\n\r\n")
        head, body = reply.split("\r\n\r\n", 1)
        assert head.startswith("HTTP/1.0 403 "), reply
        assert json.loads(body) == {"ok": False, "denied": True, "error": "permission denied"}
    assert states(mx) == {a: "deferred"}
    reply = _over_socket(USER, path, "GET /queue HTTP/1.0\r\n\r\n")
    assert reply.startswith("HTTP/1.0 200 ")
    assert [m["id"] for m in json.loads(reply.split("\r\n\r\n", 1)[1])] == [a]
    reply = _over_socket(ADMIN, path, f"POST /queue/hold?id={a} HTTP/1.0\r\n\r\n")
    assert reply.startswith("HTTP/1.0 200 ")
    assert states(mx) == {a: "hold"}


def http(mx: BackupMX, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.3:{mx.admin_port}{path}", method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


DENIED = json.dumps({"ok": False, "denied": True, "error": "permission denied"})


def test_http_changes_need_the_token(make_mx, primary, open_dir):
    token = secrets.token_hex(32)
    token_file = open_dir / "admin.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    mx = make_mx(f"admin_token_file = {token_file}\n")
    (a,) = queued(mx, primary, 1)
    assert http(mx, "GET", "/healthz") == (200, "ok\n")
    status, body = http(mx, "GET", "/queue")
    assert (status, [m["id"] for m in json.loads(body)]) == (200, [a])
    assert http(mx, "GET", "/metrics")[0] == 200
    for wrong in (None, "", token[:-1], token + "0", "x" * 64):
        for target in (f"/queue/hold?id={a}", "/queue/delete?id=ALL", "/queue/flush"):
            assert http(mx, "POST", target, wrong) == (403, DENIED), (wrong, target)
    assert http(mx, "GET", "/verify?address=alice@nausch.org&probe=1") == (403, DENIED)
    assert states(mx) == {a: "deferred"}
    assert http(mx, "POST", f"/queue/hold?id={a}", token) == (200, json.dumps({"ok": True}))
    assert states(mx) == {a: "hold"}
    assert http(mx, "POST", "/queue/delete?id=ALL", token) == (
        200, json.dumps({"ok": True, "deleted": 1}))
    assert states(mx) == {}


def test_a_token_file_others_may_read_is_not_used(make_mx, primary, open_dir):
    token = secrets.token_hex(32)
    token_file = open_dir / "admin.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o644)
    mx = make_mx(f"admin_token_file = {token_file}\n")
    mx.wait_log(rf"warning: admin_token_file {token_file} may be read by others than its "
                r"owner \(mode 0644\): chmod 600 it: queue actions over admin_listen are refused")
    (a,) = queued(mx, primary, 1)
    assert http(mx, "POST", f"/queue/hold?id={a}", token) == (403, DENIED)
    assert states(mx) == {a: "deferred"}


def test_without_a_server_the_cli_refuses_before_touching_the_spool(make_mx, primary):
    mx = make_mx()
    (a,) = queued(mx, primary, 1)
    mx.stop()
    db = mx.dir / "spool" / "queue.db"
    before = db.stat()
    for args in (("delete", a), ("delete", "ALL"), ("hold", a), ("release", a)):
        res = as_user(USER, mx, "queue", *args)
        assert (res.returncode, res.stderr) == (
            1, f"backupmx: queue {args[0]}: permission denied\n"), args
    after = db.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert states(mx) == {a: "deferred"}
