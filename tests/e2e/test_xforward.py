"""XFORWARD to the primary: a real private Postfix sees and checks the original client.

Postfix (Debian's package) on 127.0.0.6 trusts the backup (127.0.0.3) with
``smtpd_authorized_xforward_hosts``. Postfix applies XFORWARD to its logging (smtpd's
``orig_client=``, cleanup's check results); its access restrictions keep seeing the
connection's peer. The recording primary, which offers no XFORWARD, gets none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.util import message, send, wait_queue
from tests.peers.ports import free_port
from tests.peers.postfix import Postfix
from tests.peers.primary import RecordingPrimary

SEED = """
smtpd_recipient_restrictions = permit_mynetworks, permit_mx_backup, reject_unauth_destination
smtp_send_xforward_command = yes
smtp_bind_address = 127.0.0.3
"""
PF_HOST = "127.0.0.6"
REFUSED = "127.0.0.7"  # an original client the primary refuses


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    pf = Postfix(PF_HOST, free_port((PF_HOST,)), """\
relay_domains = nausch.org
smtpd_authorized_xforward_hosts = 127.0.0.3
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
header_checks = regexp:${config_directory}/header_checks
""")
    # The backup's own Received: line names the original client; the primary's check
    # of it is what content filters do, and its log line names that client too.
    (pf.conf / "header_checks").write_text(
        r"/^Received: from .* \[127\.0\.0\.7\]\)/ REJECT original client refused" "\n")
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()


def wait_log(pf: Postfix, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while (found := re.search(pattern, pf.log())) is None:
        assert time.monotonic() < deadline, f"{pattern!r} not in the Postfix log:\n{pf.log()}"
        time.sleep(0.1)
    return found


def test_the_primary_logs_the_original_client(backupmx_factory, postfix: Postfix):
    mx = backupmx_factory(SEED + f"relayhost = [{PF_HOST}]:{postfix.port}\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("forwarded"))
    qid = out.queue_id
    # Postfix names the connection's peer and, after it, the client XFORWARD named.
    found = wait_log(postfix, r"postfix/smtpd\[\d+\]: ([0-9A-F]+): client=(.*)")
    assert found.group(2) == (f"unknown[127.0.0.3], orig_queue_id={qid}, "
                              "orig_client=client.example.net[127.0.0.5]")
    pf_qid = found.group(1)
    wait_log(postfix, rf"{pf_qid}: message-id=<forwarded@sender.example>")
    mx.wait_log(rf"{qid}: to=<alice@nausch.org>, relay=127\.0\.0\.6\[127\.0\.0\.6\]:"
                rf"{postfix.port}, .*dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as "
                rf"{pf_qid}\)", timeout=20)


def test_the_primary_refuses_by_the_original_address(backupmx_factory, postfix: Postfix):
    mx = backupmx_factory(SEED + f"relayhost = [{PF_HOST}]:{postfix.port}\n"
                          "primary_reject_action = bounce\n")
    out = send(mx, "", ["bob@nausch.org"], message("refused"), source=REFUSED)
    qid = out.queue_id
    mx.wait_log(
        rf"{qid}: to=<bob@nausch.org>, relay=127\.0\.0\.6\[127\.0\.0\.6\]:{postfix.port}, "
        r".*dsn=5\.7\.1, status=bounced \(host 127\.0\.0\.6\[127\.0\.0\.6\] said: 550 5\.7\.1 "
        r"original client refused \(in reply to end of DATA command\)\)", timeout=20)
    wait_log(postfix, r"cleanup\[\d+\]: [0-9A-F]+: reject: header Received: from .* "
                      r"from unknown\[127\.0\.0\.7\]; from=<> to=<bob@nausch\.org> proto=ESMTP "
                      r"helo=<client\.example\.net>: 5\.7\.1 original client refused")
    wait_queue(mx, lambda q: q == [], timeout=20)


def test_no_xforward_without_the_offer(backupmx_factory, primary: RecordingPrimary):
    mx = backupmx_factory(SEED)
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("plain"))
    primary.wait_for(1, timeout=30)
    commands = [c for s in primary.sessions for c in s.commands]
    assert commands[0] == b"EHLO mx1.tachtler.net"
    assert commands[1].startswith(b"MAIL FROM:<sender@sender.example> ")
    assert not any(c.upper().startswith(b"XFORWARD") for c in commands)
