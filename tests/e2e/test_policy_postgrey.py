"""check_policy_service against the real postgrey from Debian, over TCP and a unix socket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.util import message, send
from tests.peers.backupmx import BackupMX
from tests.peers.ports import free_port
from tests.peers.postgrey import POSTGREY, Postgrey

pytestmark = pytest.mark.skipif(not Path(POSTGREY).exists(), reason="postgrey not installed")

GREYLISTED = (
    "450 4.2.0 <alice@nausch.org>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/nausch.org.html"
)


def seed_config(service: str) -> str:
    return f"""
smtpd_recipient_restrictions =
    permit_mynetworks,
    check_policy_service {service},
    permit_mx_backup,
    reject_unauth_destination
"""


@pytest.fixture
def postgrey_inet(tmp_path: Path) -> Iterator[Postgrey]:
    pg = Postgrey(tmp_path / "postgrey", delay=2, inet=("127.0.0.1", free_port()))
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


def accepted_after_delay(mx: BackupMX, timeout: float = 30.0) -> tuple[str, float]:
    """Retry like an MTA, once a second, until the recipient is accepted; (reply, waited)."""
    start = time.monotonic()
    while True:
        out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("greylist"))
        if out.rcpts[0][0] == 250 or time.monotonic() - start > timeout:
            return out.rcpt_line(), time.monotonic() - start
        assert out.rcpt_line() == GREYLISTED
        time.sleep(1)


def test_postgrey_greylists_first_attempt_and_accepts_after_delay(
    backupmx_factory, primary, postgrey_inet
):
    host, port = postgrey_inet.inet  # type: ignore[misc]
    mx = backupmx_factory(seed_config(f"inet:{host}:{port}"))
    first = send(mx, "sender@sender.example", ["alice@nausch.org"], message("greylist"))
    assert first.rcpt_line() == GREYLISTED
    mx.wait_log(r"NOQUEUE: reject: RCPT from client\.example\.net\[127\.0\.0\.5\]: 450 4\.2\.0 ")
    reply, waited = accepted_after_delay(mx)
    assert reply == "250 2.1.5 Ok"
    assert waited >= 0.9  # postgrey counts whole seconds: the retry came after its delay
    got = primary.wait_for(1, timeout=30)
    headers = got[0].data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Greylist: delayed " in b"\r\n" + headers
    assert b" seconds by postgrey-1.37 at greylist.test; " in headers
    # X-Greylist (PREPEND) sits above our Received: header.
    assert headers.index(b"X-Greylist:") < headers.index(b"Received:")
    assert "action=greylist, reason=new, client_name=client.example.net, " \
           "client_address=127.0.0.5, sender=sender@sender.example, " \
           "recipient=alice@nausch.org" in postgrey_inet.log_text()


def test_postgrey_receives_every_postfix_attribute(backupmx_factory, primary, postgrey_inet):
    """postgrey prefixes 4.2.0 only because etrn_domain is present, as Postfix always sends it."""
    host, port = postgrey_inet.inet  # type: ignore[misc]
    mx = backupmx_factory(seed_config(f"inet:{host}:{port}"))
    out = send(mx, "sender@sender.example", ["alice@nausch.org"])
    assert out.rcpt_line().startswith("450 4.2.0 ")


def test_postgrey_over_unix_socket_relative_to_queue_directory(
    backupmx_factory, primary, tmp_path
):
    mx = backupmx_factory(seed_config("unix:postgrey/socket"), start=False)
    sock_dir = mx.dir / "spool" / "postgrey"
    sock_dir.mkdir(parents=True)
    sock = sock_dir / "socket"
    if len(str(sock)) > 100:
        pytest.skip(f"unix socket path too long for AF_UNIX: {sock}")
    pg = Postgrey(tmp_path / "pg-unix", delay=2, unix=sock)
    pg.start()
    try:
        mx.start()
        assert send(mx, "sender@sender.example", ["alice@nausch.org"]).rcpt_line() == GREYLISTED
        reply, _ = accepted_after_delay(mx)
        assert reply == "250 2.1.5 Ok"
    finally:
        pg.stop()


def test_postgrey_down_gives_default_action_451(backupmx_factory, primary):
    port = free_port()
    mx = backupmx_factory(seed_config(f"inet:127.0.0.1:{port}") + """
smtpd_policy_service_retry_delay = 0s
""")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"])
    assert out.rcpt_line() == (
        "451 4.3.5 <alice@nausch.org>: Recipient address rejected: Server configuration problem"
    )
    mx.wait_log(rf"warning: problem talking to server inet:127\.0\.0\.1:{port}: ")
