"""Rotating ``maillog_file``: SIGUSR1 reopens it in the master and its smtpd workers.

Also the shipped logrotate snippet, run by the real logrotate against a running server.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.util import message, send
from tests.peers.backupmx import BackupMX

SNIPPET = Path(__file__).resolve().parents[2] / "contrib/logrotate/backupmx"
SEED = """
smtpd_worker_processes = 1
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""


def _usr1(mx: BackupMX) -> None:
    assert mx.proc is not None and mx.proc.poll() is None
    mx.proc.send_signal(signal.SIGUSR1)


def _sessions(mx: BackupMX, primary, count: int, subject: str) -> None:
    """``count`` messages, each in its own session (served by the worker), all delivered."""
    before = len(primary.messages)
    for i in range(count):
        out = send(mx, "sender@sender.example", ["alice@nausch.org"], message(f"{subject} {i}"))
        assert out.data is not None and out.data[0] == 250, out.data
    primary.wait_for(before + count)


def _wait(pred, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def _all_logged(path: Path, count: int) -> bool:
    """``count`` sessions have its worker and delivery lines in ``path``."""
    text = path.read_text() if path.exists() else ""
    return (len(re.findall(r"backupmx/smtpd\[\d+\]: disconnect from client\.example\.net", text))
            >= count and len(re.findall(r"status=sent", text)) >= count)


def test_sigusr1_reopens_the_maillog_in_master_and_worker(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    _sessions(mx, primary, 1, "before")
    _wait(lambda: _all_logged(mx.log_file, 1), "the first session logged")
    rotated = mx.log_file.with_name("maillog.1")
    mx.log_file.rename(rotated)
    _usr1(mx)
    mx.wait_log(r"backupmx/master\[\d+\]: reopened " + re.escape(str(mx.log_file)))
    old = rotated.read_text()
    _sessions(mx, primary, 3, "after")
    _wait(lambda: _all_logged(mx.log_file, 3), "the sessions after the reopen logged")
    new = mx.log_file.read_text()
    assert re.search(r"backupmx/smtpd\[\d+\]: connect from client\.example\.net", new)
    assert re.search(r"backupmx/qmgr\[\d+\]: [0-9A-F]+: from=<sender@sender\.example>", new)
    assert rotated.read_text() == old
    assert mx.proc is not None and mx.proc.poll() is None


def test_a_log_that_cannot_be_reopened_keeps_the_old_file(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    rotated = mx.log_file.with_name("maillog.1")
    mx.log_file.rename(rotated)
    mx.log_file.mkdir()  # in the way: open() fails
    _usr1(mx)
    _wait(lambda: f"warning: cannot reopen maillog_file {mx.log_file}: Is a directory"
          in rotated.read_text(), "the warning in the old file")
    _sessions(mx, primary, 1, "kept")
    _wait(lambda: _all_logged(rotated, 1), "the session logged to the old file")
    assert "reopened" not in rotated.read_text()
    assert mx.proc is not None and mx.proc.poll() is None


def _snippet_for(log_file: Path, owner: str, group: str, pid: int) -> str:
    """The shipped snippet for the test's server: its log path, owner and process.

    Only what names the installed system changes; the postrotate command of the
    snippet signals the service's main process, as ``kill`` does here.
    """
    text = SNIPPET.read_text()
    lines = text.splitlines()
    paths = [ln for ln in lines if ln.endswith("{")]
    assert paths == ["/var/log/backupmx/backupmx.log {"], paths
    assert "    create 0600 backupmx backupmx" in lines
    systemctl = ("systemctl kill --kill-who=main --signal=USR1 backupmx.service "
                 ">/dev/null 2>&1 || true")
    assert f"        {systemctl}" in lines
    return (text.replace("/var/log/backupmx/backupmx.log", str(log_file))
            .replace("create 0600 backupmx backupmx", f"create 0600 {owner} {group}")
            .replace(systemctl, f"kill -USR1 {pid}"))


@pytest.mark.skipif(os.geteuid() != 0, reason="logrotate's create and the switch to "
                    "mail_owner need root")
def test_logrotate_snippet_rotates_a_running_server(open_dir, unbound, smtp_port, primary):
    """Root starts the server, which runs as mail_owner; logrotate, as root, rotates."""
    owner = pwd.getpwnam("nobody")
    group = subprocess.run(["id", "-gn", "nobody"], capture_output=True, text=True,
                           check=True).stdout.strip()
    mx = BackupMX(open_dir, SEED + "mail_owner = nobody\n",
                  unbound, smtp_port)
    try:
        mx.start()
        assert mx.proc is not None
        _sessions(mx, primary, 1, "before")
        _wait(lambda: _all_logged(mx.log_file, 1), "the first session logged")
        conf = open_dir / "logrotate.conf"
        conf.write_text(_snippet_for(mx.log_file, "nobody", group, mx.proc.pid))
        conf.chmod(0o644)
        res = subprocess.run(["logrotate", "-f", "-s", str(open_dir / "logrotate.state"),
                              str(conf)], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        rotated = mx.log_file.with_name(mx.log_file.name + ".1")  # delaycompress: not yet .gz
        assert rotated.exists()
        st = mx.log_file.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (owner.pw_uid, 0o600)
        mx.wait_log(r"backupmx/master\[\d+\]: reopened " + re.escape(str(mx.log_file)))
        old = rotated.read_text()
        _sessions(mx, primary, 2, "after")
        _wait(lambda: _all_logged(mx.log_file, 2), "the sessions after rotation")
        assert rotated.read_text() == old
        # the next rotation compresses the first: nobody writes to it any more
        res = subprocess.run(["logrotate", "-f", "-s", str(open_dir / "logrotate.state"),
                              str(conf)], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        assert mx.log_file.with_name(mx.log_file.name + ".2.gz").exists()
        mx.wait_log(r"backupmx/master\[\d+\]: reopened ")
    finally:
        mx.stop()
