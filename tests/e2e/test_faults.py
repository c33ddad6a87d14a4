"""Faults: full disk, DNS failures, broken primaries, damaged queue, signals under load.

Whatever fails, a message acknowledged with 250 is delivered in the end, and a
message that was not acknowledged leaves nothing behind.
"""

from __future__ import annotations

import email
import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.util import OUTSIDE, message, queue, send, strip_received, wait_queue

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""


def subjects(messages) -> list[str]:
    return [
        str(email.message_from_bytes(strip_received(m.data)[1])["Subject"]) for m in messages
    ]


# --- disk full ---------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 2 MB tmpfs (mounted as root), unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(d)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)


def fill(directory: Path, leave: int) -> Path:
    """A file that leaves about ``leave`` bytes free on the file system."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def raw_session(mx) -> tuple[socket.socket, object]:
    s = socket.create_connection((mx.host, mx.port), timeout=30, source_address=(OUTSIDE, 0))
    return s, s.makefile("rb")


def read_reply(f) -> bytes:
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line.rstrip(b"\r\n")


def test_disk_full_gives_452_leaves_nothing_and_recovers(tmpfs, backupmx_factory, primary):
    spool = tmpfs / "spool"
    mx = backupmx_factory(SEED + f"queue_directory = {spool}\nmessage_size_limit = 100000\n")
    primary.stop()
    assert send(mx, "s@sender.example", ["alice@nausch.org"], message("before")).data[0] == 250
    # 1. Too little room at MAIL time (less than 1.5 x message_size_limit).
    filler = fill(tmpfs, 50_000)
    time.sleep(1.2)  # the free-space check is cached for a second
    out = send(mx, "s@sender.example", ["alice@nausch.org"], message("refused at mail"))
    assert out.mail == (452, b"4.3.1 Insufficient system storage")
    # 2. Room at MAIL, none left when the content is stored.
    filler.unlink()
    time.sleep(1.2)
    s, f = raw_session(mx)
    read_reply(f)
    for cmd in (b"EHLO client.example.net", b"MAIL FROM:<s@sender.example>",
                b"RCPT TO:<alice@nausch.org>", b"DATA"):
        s.sendall(cmd + b"\r\n")
        assert read_reply(f)[:1] in (b"2", b"3"), cmd
    filler = fill(tmpfs, 0)
    body = message("refused at dot", body=("x" * 76 + "\r\n") * 1000)  # about 78 kB
    s.sendall(body + b".\r\n")
    assert read_reply(f) == b"452 4.3.1 Insufficient system storage"
    s.sendall(b"QUIT\r\n")
    read_reply(f)
    s.close()
    mx.wait_log(r"queue file write error")
    ids = [e["id"] for e in queue(mx)]
    assert len(ids) == 1  # only "before": nothing half-written
    # 3. Space again: accepted, and everything acknowledged is delivered exactly once.
    filler.unlink()
    time.sleep(1.2)
    assert send(mx, "s@sender.example", ["alice@nausch.org"], message("after")).data[0] == 250
    primary.start()
    mx.cli("queue", "flush", "--wait")
    primary.wait_for(2, timeout=60)
    time.sleep(1.0)
    assert sorted(subjects(primary.messages)) == ["after", "before"]
    wait_queue(mx, lambda q: q == [])
    mx.stop()


def test_a_dsn_that_cannot_be_stored_keeps_the_original_queued(tmpfs, backupmx_factory,
                                                               primary, sender_mx):
    """The original leaves the queue only once its DSN is durable: with the disk full
    when the bounce is decided, both wait, and the DSN goes out once there is room."""
    spool = tmpfs / "spool"
    mx = backupmx_factory(SEED + f"queue_directory = {spool}\nmessage_size_limit = 200000\n"
                          "primary_reject_action = bounce\n")
    primary.stop()
    body = message("bounces", body=("x" * 76 + "\r\n") * 1000)  # about 78 kB
    out = send(mx, "s@sender.example", ["nobody@nausch.org"], body)
    qid = out.queue_id
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["state"] == "deferred")
    primary.users = {"alice@nausch.org"}  # nobody@ now gets 550 5.1.1
    filler = fill(tmpfs, 0)
    primary.start()
    mx.cli("queue", "flush")
    mx.wait_log(rf"{qid}: (cannot queue the non-delivery notification|delivery attempt failed)",
                timeout=20)
    assert [m["id"] for m in queue(mx)] == [qid]
    time.sleep(3)  # a retry or two (minimal_backoff_time = 2s) while the disk is still full
    assert [m["id"] for m in queue(mx)] == [qid]
    assert sender_mx.messages == []
    filler.unlink()
    notice = sender_mx.wait_for(1, timeout=30)[0]
    assert notice.mail_from == ""
    assert b"Final-Recipient: rfc822; nobody@nausch.org" in notice.data
    assert b"Status: 5.1.1" in notice.data
    wait_queue(mx, lambda q: q == [])
    assert len(mx.log_text().split(f"{qid}: sender non-delivery notification: ")) == 2
    assert primary.messages == []
    mx.stop()


# --- DNS -----------------------------------------------------------------------------------


def test_servfail_at_rcpt_is_a_4xx(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    out = send(mx, "sender@sender.example", ["x@mail.broken.example"])
    assert out.rcpts[0][0] == 450, out.rcpts


def test_servfail_at_delivery_defers_and_never_bounces(backupmx_factory, primary, sender_mx):
    mx = backupmx_factory(SEED + "relay_domains = broken.example\n")
    out = send(mx, "sender@sender.example", ["x@broken.example"], message("dns"),
               source="127.0.0.1")
    assert out.data is not None and out.data[0] == 250
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"), timeout=60)
    reply = q[0]["recipients"][0]["last_reply"]
    assert reply == (
        "Host or domain name not found. Name service error for name=broken.example "
        "type=MX: Host not found, try again"
    )
    assert q[0]["recipients"][0]["state"] == "deferred"
    time.sleep(1.0)
    assert sender_mx.messages == []


# --- a broken primary -------------------------------------------------------------------------


def test_primary_drops_the_connection_in_data(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.drop_in_data = True
    out = send(mx, "s@sender.example", ["alice@nausch.org"], message("dropped"))
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"), timeout=60)
    assert q[0]["id"] == out.queue_id
    assert q[0]["recipients"][0]["state"] == "deferred"
    assert "lost connection" in q[0]["recipients"][0]["last_reply"]
    assert primary.messages == []
    primary.drop_in_data = False
    mx.cli("queue", "flush", "--wait")
    primary.wait_for(1, timeout=60)
    wait_queue(mx, lambda q: q == [])
    assert subjects(primary.messages) == ["dropped"]


def test_primary_stalls_after_the_dot(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtp_data_done_timeout = 2s\n")
    primary.stall_seconds = 30
    out = send(mx, "s@sender.example", ["alice@nausch.org"], message("stalled"))
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"), timeout=60)
    assert q[0]["id"] == out.queue_id  # not marked delivered: the reply never came
    assert q[0]["recipients"][0]["state"] == "deferred"
    assert q[0]["recipients"][0]["last_reply"] == (
        "conversation with mx1.nausch.org[127.0.0.2] timed out while sending end of data "
        "-- message may be sent more than once"
    )
    primary.stall_seconds = 0
    mx.cli("queue", "flush", "--wait")
    wait_queue(mx, lambda q: q == [], timeout=60)
    # Each timed-out attempt left a copy at the primary, which had taken it before
    # stalling (RFC 1047; no SMTP client can avoid that), and one attempt succeeded.
    timeouts = mx.log_text().count("status=deferred (conversation with mx1.nausch.org"
                                   "[127.0.0.2] timed out while sending end of data")
    assert timeouts >= 1
    assert subjects(primary.messages) == ["stalled"] * (timeouts + 1)


class GarbagePrimary:
    """An SMTP peer that greets and then answers every command with nonsense."""

    def __init__(self, host: str, port: int, greeting: bytes) -> None:
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.sock.settimeout(0.2)
        self.greeting = greeting
        self.connections = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            conn.sendall(self.greeting)
            while conn.recv(4096):
                conn.sendall(b"\x00\xffgarbage \x1b[31m not smtp\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("greeting", [b"220 mx1.nausch.org ESMTP\r\n", b"HTTP/1.0 200 OK\r\n\r\n"])
def test_primary_answers_garbage(backupmx_factory, smtp_port, greeting, sender_mx):
    garbage = GarbagePrimary("127.0.0.2", smtp_port, greeting)
    try:
        mx = backupmx_factory(SEED)
        out = send(mx, "s@sender.example", ["alice@nausch.org"], message("garbage"))
        q = wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"), timeout=60)
        assert q[0]["id"] == out.queue_id
        rcpt = q[0]["recipients"][0]
        malformed = "host mx1.nausch.org[127.0.0.2] sent a malformed reply"
        assert rcpt["last_reply"].startswith(malformed)
        assert rcpt["state"] == "deferred"
        assert garbage.connections >= 1
        time.sleep(1.0)
        assert sender_mx.messages == []  # retried later, not bounced
    finally:
        garbage.close()


# --- the queue itself ----------------------------------------------------------------------


def test_damaged_queue_entry_is_moved_aside_on_restart(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.stop()
    good = send(mx, "s@sender.example", ["alice@nausch.org"], message("good")).queue_id
    bad = send(mx, "s@sender.example", ["alice@nausch.org"], message("bad")).queue_id
    mx.stop()
    db = sqlite3.connect(mx.dir / "spool" / "queue.db")
    db.execute("UPDATE content SET data = ? WHERE id = ?", (b"damaged", bad))
    db.commit()
    db.close()
    mx.start()
    mx.wait_log(rf"{bad}: corrupt queue entry")
    assert [e["id"] for e in queue(mx)] == [good]
    assert any(p.name.startswith(bad) for p in (mx.dir / "spool" / "corrupt").iterdir())
    primary.start()
    mx.cli("queue", "flush", "--wait")
    primary.wait_for(1, timeout=60)
    assert subjects(primary.messages) == ["good"]


# --- signals under load -----------------------------------------------------------------------


def transaction(mx, subject: str) -> str:
    """One raw transaction: 'acked', 'refused' (an SMTP reply said no, e.g. 421) or 'lost'
    (the connection broke with no reply, which must never happen after the dot)."""
    try:
        s = socket.create_connection((mx.host, mx.port), timeout=30, source_address=(OUTSIDE, 0))
    except OSError:
        return "refused"
    f = s.makefile("rb")
    try:
        if not read_reply(f).startswith(b"220"):
            return "refused"
        for cmd in (b"EHLO client.example.net", b"MAIL FROM:<s@sender.example>",
                    b"RCPT TO:<alice@nausch.org>", b"DATA"):
            s.sendall(cmd + b"\r\n")
            r = read_reply(f)
            if not r:
                return "refused"  # closed between commands: nothing was promised
            if r[:1] not in (b"2", b"3"):
                return "refused"
        s.sendall(message(subject) + b".\r\n")
        r = read_reply(f)
        if r.startswith(b"250"):
            return "acked"
        return "refused" if r else "lost"
    except OSError:
        return "lost"
    finally:
        f.close()
        s.close()


def load(mx, threads: int, per_thread: int, on_result) -> list[threading.Thread]:
    def run(n: int) -> None:
        for i in range(per_thread):
            subject = f"load {n}-{i}"
            on_result(subject, transaction(mx, subject))

    ts = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    return ts


def test_sighup_under_load_drops_nothing(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    results: dict[str, str] = {}
    lock = threading.Lock()

    def record(subject: str, result: str) -> None:
        with lock:
            results[subject] = result

    ts = load(mx, 6, 25, record)
    for n in range(1, 9):
        time.sleep(0.3)
        mx.sighup()  # the next one only after this one was applied: signals coalesce
        deadline = time.monotonic() + 20
        while mx.log_text().count("reload -- configuration") < n:
            assert time.monotonic() < deadline, "reload not logged"
            time.sleep(0.05)
    for t in ts:
        t.join(120)
    assert set(results.values()) == {"acked"}, {k: v for k, v in results.items() if v != "acked"}
    primary.wait_for(len(results), timeout=90)
    assert sorted(subjects(primary.messages)) == sorted(results)
    assert mx.log_text().count("reload -- configuration") == 8


def test_sigterm_under_load_loses_nothing(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.stop()
    results: dict[str, str] = {}
    lock = threading.Lock()

    def record(subject: str, result: str) -> None:
        with lock:
            results[subject] = result

    ts = load(mx, 6, 40, record)
    time.sleep(1.5)
    status = mx.stop()
    for t in ts:
        t.join(120)
    assert status == 0
    acked = sorted(s for s, r in results.items() if r == "acked")
    assert len(acked) >= 6
    assert "lost" not in results.values(), [s for s, r in results.items() if r == "lost"]
    mx.start()
    primary.start()
    mx.cli("queue", "flush", "--wait")
    primary.wait_for(len(acked), timeout=90)
    time.sleep(1.0)
    assert sorted(subjects(primary.messages)) == acked  # every one, once


def test_a_bounce_of_a_quarantined_message_waits_for_room(tmpfs, backupmx_factory, primary,
                                                          sender_mx):
    """`queue bounce` with the disk full: the command fails and nothing changes; the
    message stays quarantined until the DSN can be stored."""
    spool = tmpfs / "spool"
    primary.users = {"alice@nausch.org"}  # nobody@ gets 550 5.1.1: quarantined
    mx = backupmx_factory(SEED + f"queue_directory = {spool}\nmessage_size_limit = 200000\n")
    body = message("held", body=("x" * 76 + "\r\n") * 1000)  # about 78 kB
    qid = send(mx, "s@sender.example", ["nobody@nausch.org"], body).queue_id
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["state"] == "held", timeout=30)
    filler = fill(tmpfs, 0)
    res = mx.cli("queue", "bounce", qid)
    assert res.returncode == 1
    assert res.stderr.startswith(
        f"backupmx: {qid}: cannot queue the non-delivery notification: ")
    [entry] = queue(mx)
    assert (entry["id"], entry["state"], entry["recipients"][0]["state"]) == (qid, "hold", "held")
    filler.unlink()
    assert mx.cli("queue", "bounce", qid).returncode == 0
    notice = sender_mx.wait_for(1, timeout=30)[0]
    assert b"Final-Recipient: rfc822; nobody@nausch.org" in notice.data
    assert b"Status: 5.1.1" in notice.data
    wait_queue(mx, lambda q: q == [], timeout=30)
