"""``backupmx policy-server`` greylisting for a real Postfix (a private instance from Debian)."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.backupmx import command
from tests.peers.ports import free_port
from tests.peers.postfix import POSTFIX, Postfix

pytestmark = pytest.mark.skipif(not Path(POSTFIX).exists(), reason="postfix not installed")

PF_HOST = "127.0.0.6"


@pytest.fixture
def policy_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``backupmx policy-server`` on 127.0.0.1:PORT with a 2 s delay; (port, log file)."""
    port = free_port()
    cfg = tmp_path / "policy.cf"
    log = tmp_path / "policy.log"
    cfg.write_text(f"""\
queue_directory = {tmp_path / 'spool'}
data_directory = {tmp_path / 'data'}
maillog_file = {log}
myhostname = policy.test.example
greylist_delay = 2s
""")
    with open(tmp_path / "policy.stderr", "wb") as err:
        proc = subprocess.Popen([*command(), "-c", str(cfg), "policy-server",
                                 "--listen", f"inet:127.0.0.1:{port}"],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "policy.stderr").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "policy-server did not listen"
                time.sleep(0.1)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def postfix(policy_server: tuple[int, Path]) -> Iterator[Postfix]:
    port, _ = policy_server
    pf = Postfix(PF_HOST, free_port((PF_HOST,)), f"""\
relay_domains = nausch.org
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,
    check_policy_service inet:127.0.0.1:{port}
""")
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()


def rcpt(pf: Postfix) -> tuple[int, str]:
    s = smtplib.SMTP(pf.host, pf.port, source_address=("127.0.0.5", 0), timeout=60)
    try:
        s.ehlo("client.example.net")
        s.mail("sender@sender.example")
        code, text = s.rcpt("alice@nausch.org")
        s.rset()
        s.quit()
    finally:
        s.close()
    return code, text.decode()


def wait_text(path, text: str, timeout: float = 10.0) -> None:
    """Log lines reach the file within a fraction of a second (buffered writes)."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in {path}:\n{path.read_text()}"
        time.sleep(0.1)


def test_real_postfix_is_greylisted_by_policy_server(postfix, policy_server):
    _, log = policy_server
    assert rcpt(postfix) == (450, "4.2.0 <alice@nausch.org>: Recipient address rejected: "
                                  "Greylisted, see http://postgrey.schweikert.ch/help/nausch.org.html")
    wait_text(log, "action=greylist, reason=new, client_name=unknown, client_address=127.0.0.5, "
                   "sender=sender@sender.example, recipient=alice@nausch.org")
    deadline = time.monotonic() + 30
    while (result := rcpt(postfix))[0] != 250:
        assert result[0] == 450 and time.monotonic() < deadline, result
        time.sleep(1)
    assert result == (250, "2.1.5 Ok")
    wait_text(log, "action=pass, reason=triplet found")
    assert "NOQUEUE: reject: RCPT from unknown[127.0.0.5]: 450 4.2.0 <alice@nausch.org>" \
        in postfix.log()
