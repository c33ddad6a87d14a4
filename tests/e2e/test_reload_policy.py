"""A SIGHUP while a RCPT is on its way to its policy checks: the old configuration's
greylist store and policy connections are closed once that RCPT is done with them,
and nothing of them stays open."""

from __future__ import annotations

import os
import socketserver
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.util import connect
from tests.peers.backupmx import BackupMX
from tests.peers.ports import free_port

GREYLISTED = (
    "450 4.2.0 <alice@nausch.org>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/nausch.org.html"
)


class GatedPolicy(socketserver.ThreadingTCPServer):
    """A policy server that holds its answer (DUNNO) until ``gate`` is set."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.asked = threading.Event()
        self.gate = threading.Event()
        self.hung_up = threading.Event()  # backupmx closed its connection


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, GatedPolicy)
        while True:
            line = self.rfile.readline()
            if not line:
                server.hung_up.set()
                return
            if line == b"\n":
                server.asked.set()
                server.gate.wait(30)
                self.wfile.write(b"action=DUNNO\n\n")
                self.wfile.flush()


def open_files(pid: int, under: Path) -> list[str]:
    """The files under ``under`` that process ``pid`` has open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)):
            found.append(target)
    return found


def test_sighup_during_a_rcpt_closes_the_old_store_after_it(backupmx_factory, primary, tmp_path):
    port = free_port(("127.0.0.1",))
    policy = GatedPolicy(port)
    threading.Thread(target=policy.serve_forever, daemon=True).start()
    store = tmp_path / "grey"
    mx: BackupMX = backupmx_factory(
        "smtpd_worker_processes = 0\n"
        f"greylist_store = sqlite:{store}/greylist.db\n"
        "smtpd_recipient_restrictions =\n"
        f"    check_policy_service inet:127.0.0.1:{port},\n"
        "    check_policy_service builtin:greylist,\n"
        "    permit_mx_backup, reject_unauth_destination\n")
    assert mx.proc is not None
    try:
        with ThreadPoolExecutor(1) as pool:
            s = connect(mx)
            s.mail("sender@sender.example")
            reply = pool.submit(s.rcpt, "alice@nausch.org")
            assert policy.asked.wait(30)
            mx.sighup()
            mx.wait_log(r"reload -- configuration")
            policy.gate.set()
            code, text = reply.result(30)
            s.quit()
        # The RCPT that began before the reload ends as it would have without it ...
        assert f"{code} {text.decode()}" == GREYLISTED
        mx.wait_log(r"greylist\[\d+\]: action=greylist, reason=new, .*"
                    r"recipient=alice@nausch\.org")
        # ... and the store and policy connection it used are closed after it.
        assert policy.hung_up.wait(10)
        assert open_files(mx.proc.pid, store) == []
        # The new configuration opens its own store at its first check, and works.
        policy.gate.set()
        s = connect(mx)
        s.mail("sender@sender.example")
        code, text = s.rcpt("alice@nausch.org")
        s.quit()
        assert f"{code} {text.decode()}" == GREYLISTED
        assert open_files(mx.proc.pid, store) != []
    finally:
        policy.gate.set()
        policy.shutdown()
        policy.server_close()
