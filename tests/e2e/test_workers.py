"""smtpd worker processes: they share the limits, the verify cache and the spool, and die
and are replaced without losing a message.

A connection is steered to one worker by stopping (SIGSTOP) the others while it is
accepted and greeted: whoever can run accepts it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backupmx.envelope import Envelope, Recipient
from backupmx.queue import ids
from backupmx.queue.store import Spool
from tests.e2e.util import OUTSIDE, Raw, message
from tests.peers.backupmx import BackupMX, command

SEED = """
smtpd_worker_processes = 2
smtpd_recipient_restrictions = permit_mynetworks, permit_mx_backup, reject_unauth_destination
"""
SLOTS = 3  # the master and two workers


def workers(mx: BackupMX) -> dict[int, int]:
    """pid → worker index, for the workers of ``mx`` that are running now."""
    assert mx.proc is not None
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().split()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[3]) == mx.proc.pid and b"backupmx.smtpd.worker" in argv:
            out[int(entry)] = int(argv[argv.index(b"--index") + 1])
    return out


def wait_workers(mx: BackupMX, n: int, timeout: float = 15) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        found = workers(mx)
        if len(found) == n:
            return found
        assert time.monotonic() < deadline, f"workers: {found}"
        time.sleep(0.1)


def transaction(c: Raw, rcpt: str, data: bytes) -> str:
    """One transaction to ``rcpt`` on a greeted connection; the reply to the final dot."""
    assert c.cmd("EHLO client.example.net").startswith("250")
    assert c.cmd("MAIL FROM:<sender@sender.example>").startswith("250")
    assert c.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354")
    return c.cmd(data + b".\r\n")


@contextmanager
def only(mx: BackupMX, pid: int) -> Iterator[None]:
    """While inside, only worker ``pid`` can accept connections."""
    others = [p for p in workers(mx) if p != pid]
    for p in others:
        os.kill(p, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in others:
            os.kill(p, signal.SIGCONT)


def on(mx: BackupMX, pid: int) -> tuple[Raw, str]:
    """A connection accepted by worker ``pid``, and its banner."""
    with only(mx, pid):
        c = Raw(mx, timeout=20)
        return c, c.reply()


@pytest.fixture
def mx(backupmx_factory: Callable[..., BackupMX]) -> BackupMX:
    server = backupmx_factory(SEED)
    wait_workers(server, 2)
    return server


def test_each_worker_queues_with_its_own_ids_and_the_master_delivers(mx, primary):
    got = []
    for pid, index in sorted(workers(mx).items()):
        c, banner = on(mx, pid)
        assert banner.startswith("220 ")
        reply = transaction(c, "alice@nausch.org", message(f"via worker {index}"))
        c.close()
        assert reply.startswith("250 2.0.0 Ok: queued as "), reply
        qid = reply.rsplit(" ", 1)[1]
        assert ids.slot_of(qid, SLOTS) == index
        got.append((index, qid))
    msgs = primary.wait_for(2, timeout=20)
    assert sorted(m.data.split(b"\r\n\r\n", 1)[1] for m in msgs) == [b"Hello.\r\n"] * 2
    subjects = sorted(line for m in msgs for line in m.data.split(b"\r\n")
                      if line.startswith(b"Subject:"))
    assert subjects == [b"Subject: via worker 1", b"Subject: via worker 2"]
    for _index, qid in got:
        mx.wait_log(rf"smtp\[{mx.proc.pid}\]: {qid}: to=<alice@nausch\.org>.*status=sent")


def one_on_each(server: BackupMX) -> tuple[int, int, str]:
    """A client on the first worker, then one on the second; their pids, the second's banner."""
    (a, _), (b, _) = sorted(wait_workers(server, 2).items())
    first, first_banner = on(server, a)
    second, second_banner = on(server, b)
    assert first_banner.startswith("220 ")
    first.close()
    second.close()
    return a, b, second_banner


def test_connection_count_limit_counts_every_worker(backupmx_factory):
    server = backupmx_factory(SEED + "smtpd_client_connection_count_limit = 1\n")
    _a, b, banner = one_on_each(server)
    assert banner == f"421 4.7.0 mx1.tachtler.net Error: too many connections from {OUTSIDE}"
    server.wait_log(rf"smtpd\[{b}\]: warning: too many connections from {OUTSIDE} for ")
    deadline = time.monotonic() + 10
    while True:  # the first client's release reaches the master a moment after its close
        third, third_banner = on(server, b)
        if third_banner.startswith("220 ") or time.monotonic() > deadline:
            break
        third.close()
        time.sleep(0.2)
    assert third_banner.startswith("220 ")
    third.close()


def test_message_rate_limit_counts_every_worker(backupmx_factory):
    server = backupmx_factory(SEED + "smtpd_client_message_rate_limit = 1\n")
    (a, _), (b, _) = sorted(wait_workers(server, 2).items())
    replies = []
    for pid in (a, b):
        c, banner = on(server, pid)
        assert banner.startswith("220 ")
        assert c.cmd("EHLO client.example.net").startswith("250")
        replies.append(c.cmd("MAIL FROM:<sender@sender.example>"))
        c.close()
    assert replies == ["250 2.1.0 Ok", f"450 4.7.1 Error: too much mail from {OUTSIDE}"]
    server.wait_log(rf"smtpd\[{b}\]: warning: Message delivery request rate limit exceeded: 2 "
                    rf"from client\.example\.net\[{OUTSIDE}\] for service smtp")


def test_session_ceiling_counts_every_worker(backupmx_factory):
    server = backupmx_factory(SEED + "smtpd_max_sessions = 1\n")
    _a, _b, banner = one_on_each(server)
    assert banner == "421 4.3.2 mx1.tachtler.net Error: too many sessions, try again later"


def test_verification_is_one_probe_for_all_workers(backupmx_factory, primary):
    primary.users = {"alice@nausch.org"}
    server = backupmx_factory(SEED.replace(
        "permit_mynetworks,", "permit_mynetworks, reject_unverified_recipient,")
        + "address_verify_map = btree:$data_directory/verify\n"
        + "unverified_recipient_reject_code = 550\n")
    for pid in sorted(wait_workers(server, 2)):
        c, _banner = on(server, pid)
        assert c.cmd("EHLO client.example.net").startswith("250")
        assert c.cmd("MAIL FROM:<sender@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<alice@nausch.org>") == "250 2.1.5 Ok"
        assert c.cmd("RCPT TO:<nobody@nausch.org>").startswith("550 5.1.1 <nobody@nausch.org>")
        c.close()
    want = [b"RCPT TO:<alice@nausch.org>", b"RCPT TO:<nobody@nausch.org>"]
    probes = [c for s in primary.sessions for c in s.commands if c in want]
    assert sorted(probes) == want  # each address asked once, by the master


def test_a_dead_worker_is_replaced_and_its_unannounced_mail_delivered(mx, primary):
    (a, index_a), (b, _) = sorted(workers(mx).items())
    # What worker a would leave behind had it died between its commit and its announcement.
    ids.configure(index_a, SLOTS)
    try:
        qid = ids.new_id()
    finally:
        ids.configure(0, 1)
    spool = Spool(str(mx.dir / "spool"))
    spool.attach()
    try:
        env = Envelope(id=qid, sender="sender@sender.example", arrival=time.time(),
                       recipients=[Recipient("alice@nausch.org")], client="x[127.0.0.5]")
        content = message("left behind")
        env.size = len(content)
        spool.commit_sync(env, content)
    finally:
        spool.close()
    assert primary.messages == []
    os.kill(a, signal.SIGKILL)
    mx.wait_log(rf"master\[{mx.proc.pid}\]: warning: smtpd worker {index_a} \(pid {a}\) "
                r"exited with status -9; starting a new one")
    mx.wait_log(rf"1 messages of smtpd worker {index_a} taken over")
    (msg,) = primary.wait_for(1, timeout=20)
    assert msg.data.endswith(content)
    now = wait_workers(mx, 2)
    assert b in now and a not in now
    new = next(p for p in now if p != b)
    c, _banner = on(mx, new)
    assert transaction(c, "alice@nausch.org", message("after")).startswith(
        "250 2.0.0 Ok: queued as ")
    c.close()
    primary.wait_for(2, timeout=20)


def test_workers_die_with_the_master(mx):
    pids = list(wait_workers(mx, 2))
    mx.kill()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in pids):
        assert time.monotonic() < deadline, "a worker outlived its master"
        time.sleep(0.05)
    mx.start()  # the port is free again
    wait_workers(mx, 2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_sigterm_stops_the_workers_too(mx):
    pids = list(wait_workers(mx, 2))
    assert mx.stop() == 0
    assert not [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]


def test_zero_workers_serve_in_the_master(backupmx_factory, primary):
    server = backupmx_factory(SEED.replace("= 2", "= 0"))
    assert workers(server) == {}
    c = Raw(server)
    assert c.reply().startswith("220 ")
    reply = transaction(c, "alice@nausch.org", message("in the master"))
    c.close()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    primary.wait_for(1, timeout=20)
    server.wait_log(rf"smtpd\[{server.proc.pid}\]: connect from ")


@pytest.mark.parametrize("count", [0, 2])
def test_a_taken_port_is_a_clear_fatal_error(backupmx_factory, count):
    first = backupmx_factory(SEED)
    second = backupmx_factory(SEED.replace("= 2", f"= {count}"), start=False, name="second")
    assert (second.host, second.port) == (first.host, first.port)  # every MX listens on P
    res = subprocess.run([*command(), "-c", str(second.config_file), "serve"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert re.search(rf"backupmx/master\[\d+\]: fatal: cannot listen on {first.host}:"
                     rf"{first.port}: Address already in use", second.log_text())
    assert len(workers(first)) == 2  # the running server is untouched
    c = Raw(first)
    assert c.reply().startswith("220 ")
    c.close()


def test_a_changed_worker_count_waits_for_a_restart(mx):
    before = wait_workers(mx, 2)
    mx.config_file.write_text(mx.config_text.replace("smtpd_worker_processes = 2",
                                                     "smtpd_worker_processes = 0"))
    mx.sighup()
    mx.wait_log(rf"master\[{mx.proc.pid}\]: warning: smtpd_worker_processes changed: "
                "restart backupmx to apply it")
    mx.wait_log(rf"master\[{mx.proc.pid}\]: reload -- configuration ")
    assert workers(mx) == before


def test_the_reload_line_comes_once_every_worker_has_reloaded(mx):
    """The master logs ``reload`` only when both workers confirm: then each relays anew."""
    for pid in workers(mx):
        c, _ = on(mx, pid)
        assert c.cmd("EHLO client.example.net").startswith("250")
        assert c.cmd("MAIL FROM:<sender@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<x@foreign.example>") == \
            "554 5.7.1 <x@foreign.example>: Relay access denied"
        c.close()
    mx.config_file.write_text(mx.config_text + "relay_domains = foreign.example\n")
    mx.sighup()
    mx.wait_log(rf"master\[{mx.proc.pid}\]: reload -- configuration ")
    for pid in workers(mx):
        c, _ = on(mx, pid)
        assert c.cmd("EHLO client.example.net").startswith("250")
        assert c.cmd("MAIL FROM:<sender@sender.example>").startswith("250")
        assert c.cmd("RCPT TO:<x@foreign.example>") == "250 2.1.5 Ok"
        c.close()


def test_a_stopped_worker_delays_the_reload_line_and_is_named(mx):
    """A worker that cannot answer (stopped) holds the line back until the wait runs out."""
    pid, index = next(iter(workers(mx).items()))
    os.kill(pid, signal.SIGSTOP)
    try:
        mx.sighup()
        mx.wait_log(rf"master\[{mx.proc.pid}\]: warning: smtpd worker {index} did not "
                    r"confirm the reload within 10 s", timeout=30)
        mx.wait_log(rf"master\[{mx.proc.pid}\]: reload -- configuration ")
    finally:
        os.kill(pid, signal.SIGCONT)
