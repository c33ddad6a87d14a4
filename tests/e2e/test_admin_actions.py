"""Queue actions (`queue hold`, `release`, `delete`): durable, one transaction for ALL, and
never a pause for the sessions and deliveries of the running server."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

import pytest

from tests.e2e.util import Raw, connect, message, metric, queue, send, wait_queue
from tests.peers.backupmx import BackupMX, command

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
# Long backoff: once deferred, the queue is left alone, so every spool write is ours.
QUIET = SEED + "minimal_backoff_time = 300s\nmaximal_backoff_time = 600s\n"


def transactions(mx: BackupMX) -> int:
    """The master's spool commits so far (``backupmx_queue_transactions_total``)."""
    return int(metric(mx, "backupmx_queue_transactions_total"))


def queue_many(mx: BackupMX, n: int) -> None:
    s = connect(mx)
    try:
        for i in range(n):
            assert s.sendmail("sender@sender.example", ["alice@nausch.org"],
                              message(f"m{i}")) == {}
    finally:
        s.quit()


@pytest.fixture
def quiet(backupmx_factory, primary) -> BackupMX:
    """A server whose primary is down and whose queue, once deferred, stays still."""
    primary.stop()
    return backupmx_factory(QUIET)


def test_delete_all_is_one_transaction_and_empties_the_queue(quiet):
    mx = quiet
    queue_many(mx, 60)
    q = wait_queue(mx, lambda q: len(q) == 60
                   and all(m["recipients"][0].get("last_reply") for m in q), timeout=60)
    before = transactions(mx)
    res = mx.cli("queue", "delete", "ALL")
    assert res.returncode == 0, res.stderr
    assert transactions(mx) == before + 1
    assert queue(mx) == []
    log = mx.log_text()
    for m in q:
        assert f"{m['id']}: removed (deleted by the administrator)" in log
    mx.restart()
    assert queue(mx) == []


def test_actions_work_on_the_files_without_a_server(quiet):
    mx = quiet
    a = send(mx, "sender@sender.example", ["alice@nausch.org"], message("a")).queue_id
    b = send(mx, "sender@sender.example", ["alice@nausch.org"], message("b")).queue_id
    c = send(mx, "sender@sender.example", ["alice@nausch.org"], message("c")).queue_id
    wait_queue(mx, lambda q: len(q) == 3)
    mx.stop()
    assert mx.cli("queue", "hold", a).returncode == 0
    assert {m["id"]: m["state"] for m in queue(mx)}[a] == "hold"
    assert mx.cli("queue", "release", a).returncode == 0
    assert {m["id"]: m["state"] for m in queue(mx)}[a] != "hold"
    assert mx.cli("queue", "delete", b).returncode == 0
    assert sorted(m["id"] for m in queue(mx)) == sorted([a, c])
    bad = mx.cli("queue", "hold", "NOSUCHID")
    assert (bad.returncode, bad.stderr) == (1, "backupmx: NOSUCHID: no such message\n")
    assert mx.cli("queue", "delete", "ALL").returncode == 0
    assert queue(mx) == []


@pytest.mark.parametrize("action", ["hold", "release", "delete"])
def test_sessions_are_answered_while_an_action_waits_for_the_disk(quiet, action):
    """The spool's writers' lock held by someone else: the action waits, the server not."""
    mx = quiet
    qid = send(mx, "sender@sender.example", ["alice@nausch.org"], message("x")).queue_id
    wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"))
    if action == "release":
        assert mx.cli("queue", "hold", qid).returncode == 0
    fd = os.open(os.path.join(mx.dir, "spool", "queue.lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    pending = subprocess.Popen([*command(), "-c", str(mx.config_file), "queue", action, qid],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The action is applied in memory at once, though not on disk yet...
        expected = {"hold": lambda m: m["state"] == "hold",
                    "release": lambda m: m["state"] != "hold",
                    "delete": lambda m: False}[action]
        wait_queue(mx, lambda q: all(m["id"] != qid or expected(m) for m in q)
                   and (action != "delete" or q == []), timeout=10)
        # ...and SMTP sessions are answered meanwhile.
        s = Raw(mx, timeout=10)
        assert s.reply().startswith("220 ")
        assert s.cmd("EHLO client.example.net").startswith("250-")
        assert s.cmd("MAIL FROM:<s@sender.example>") == "250 2.1.0 Ok"
        assert s.cmd("RCPT TO:<alice@nausch.org>") == "250 2.1.5 Ok"
        assert s.cmd("QUIT").startswith("221 ")
        s.close()
        assert pending.poll() is None  # the action still waits for the disk
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert pending.wait(timeout=30) == 0, pending.stderr.read() if pending.stderr else ""
    mx.restart()  # and it is durable
    after = {m["id"]: m["state"] for m in queue(mx)}
    if action == "delete":
        assert after == {}
    else:
        assert (after[qid] == "hold") is (action == "hold")


def test_a_message_deleted_during_its_delivery_does_not_come_back(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.data_reply = "451 4.3.0 try again later"
    primary.stall_seconds = 2.0  # the attempt is in flight while ALL is deleted
    qid = send(mx, "sender@sender.example", ["alice@nausch.org"], message("x")).queue_id
    deadline = time.monotonic() + 15
    while not any(kind == "D" for s in primary.sessions for kind, _ in s.transcript):
        assert time.monotonic() < deadline, "no delivery began"
        time.sleep(0.05)
    assert mx.cli("queue", "delete", "ALL").returncode == 0
    mx.wait_log(rf"{qid}: to=<alice@nausch\.org>, .*status=deferred")
    primary.data_reply = None
    primary.stall_seconds = 0.0
    assert mx.cli("queue", "flush", "--wait").returncode == 0
    assert queue(mx) == []
    mx.restart()
    assert queue(mx) == []
    assert primary.messages == []
