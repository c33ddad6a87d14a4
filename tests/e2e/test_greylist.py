"""check_policy_service builtin:greylist: postgrey's behaviour inside backupmx."""

from __future__ import annotations

import sqlite3
import time

from tests.e2e.util import message, send
from tests.peers.backupmx import BackupMX

GREYLISTED = (
    "450 4.2.0 <alice@nausch.org>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/nausch.org.html"
)

CONFIG = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    check_policy_service builtin:greylist,
    permit_mx_backup,
    reject_unauth_destination
greylist_delay = 2s
"""


def retry_until_accepted(mx: BackupMX, rcpt: str = "alice@nausch.org",
                         timeout: float = 30.0) -> tuple[str, float]:
    start = time.monotonic()
    while True:
        out = send(mx, "sender@sender.example", [rcpt], message("grey"))
        if out.rcpts[0][0] == 250 or time.monotonic() - start > timeout:
            return out.rcpt_line(), time.monotonic() - start
        assert out.rcpts[0][0] == 450, out.rcpt_line()
        time.sleep(1)


def test_builtin_greylist_defers_first_attempt_and_accepts_after_delay(backupmx_factory, primary):
    mx = backupmx_factory(CONFIG)
    first = send(mx, "sender@sender.example", ["alice@nausch.org"], message("grey"))
    assert first.rcpt_line() == GREYLISTED
    mx.wait_log(r"greylist\[\d+\]: action=greylist, reason=new, client_name=client\.example\.net, "
                r"client_address=127\.0\.0\.5, sender=sender@sender\.example, "
                r"recipient=alice@nausch\.org")
    reply, waited = retry_until_accepted(mx)
    assert reply == "250 2.1.5 Ok"
    assert waited >= 0.9
    got = primary.wait_for(1, timeout=30)
    headers = got[0].data.split(b"\r\n\r\n", 1)[0].decode()
    assert headers.startswith("X-Greylist: delayed ")
    assert " seconds by backupmx-" in headers and " at mx1.tachtler.net; " in headers
    # The same triplet later: no delay, no second header.
    again = send(mx, "sender@sender.example", ["alice@nausch.org"], message("again"))
    assert again.rcpt_line() == "250 2.1.5 Ok"
    second = primary.wait_for(2, timeout=30)[1]
    assert b"X-Greylist:" not in second.data


def test_greylist_store_survives_a_restart(backupmx_factory, primary):
    mx = backupmx_factory(CONFIG)
    assert send(mx, "sender@sender.example", ["alice@nausch.org"]).rcpt_line() == GREYLISTED
    mx.restart()
    time.sleep(2.5)
    assert send(mx, "sender@sender.example", ["alice@nausch.org"]).rcpt_line() == "250 2.1.5 Ok"
    db = sqlite3.connect(mx.dir / "data" / "greylist")
    rows = db.execute("SELECT key FROM triplet").fetchall()
    db.close()
    assert rows == [("127.0.0.0/sender@sender.example/alice@nausch.org",)]


def test_whitelisted_recipient_is_not_greylisted(backupmx_factory, primary, tmp_path):
    wl = tmp_path / "whitelist_recipients"
    wl.write_text("# RFC 2142 role accounts\npostmaster@\nabuse@\n")
    mx = backupmx_factory(CONFIG + f"greylist_whitelist_recipients = {wl}\n")
    assert send(mx, "sender@sender.example", ["abuse@nausch.org"]).rcpt_line() == "250 2.1.5 Ok"
    assert send(mx, "sender@sender.example", ["alice@nausch.org"]).rcpt_line() == GREYLISTED


def test_greylist_action_text_and_delay_seconds(backupmx_factory, primary):
    mx = backupmx_factory(CONFIG + "greylist_delay = 60s\ngreylist_action = 451\n"
                          "greylist_text = 4.7.1 come back in %s seconds\n")
    assert send(mx, "sender@sender.example", ["alice@nausch.org"]).rcpt_line() == (
        "451 4.7.1 <alice@nausch.org>: Recipient address rejected: come back in 60 seconds")


def test_bad_greylist_store_is_a_configuration_error(backupmx_factory):
    mx = backupmx_factory(CONFIG + "greylist_store = redis://127.0.0.1:99999/0\n", start=False)
    res = mx.cli("check")
    assert res.returncode == 2
    assert "bad port '99999': a number from 1 to 65535" in res.stderr
