"""A reload reaches delivery: the concurrency limit and the client settings of the next
delivery are those of the new configuration (see test_tls.py for the TLS level)."""

from __future__ import annotations

import pytest

from tests.e2e.util import connect, message, reload, send, wait_queue
from tests.peers.backupmx import BackupMX
from tests.peers.primary import RecordingPrimary

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""


def burst(mx: BackupMX, primary: RecordingPrimary, n: int) -> int:
    """Queue ``n`` messages while the primary is down, bring it back, flush; the most
    deliveries the primary saw at once."""
    primary.stop()
    s = connect(mx)
    try:
        for i in range(n):
            assert s.sendmail("sender@sender.example", ["alice@nausch.org"],
                              message(f"burst {i}")) == {}
    finally:
        s.quit()
    wait_queue(mx, lambda q: len(q) == n
               and all(m["recipients"][0].get("last_reply") for m in q), timeout=60)
    primary.clear()
    primary.stall_seconds = 0.5  # deliveries overlap: each holds its slot that long
    primary.start()
    assert mx.cli("queue", "flush").returncode == 0
    primary.wait_for(n, timeout=60)
    wait_queue(mx, lambda q: q == [], timeout=30)
    return primary.peak_in_data


@pytest.mark.parametrize(("before", "after"), [(1, 4), (4, 1)])
def test_a_reload_changes_the_destination_concurrency(backupmx_factory, primary, before, after):
    mx = backupmx_factory(SEED + f"default_destination_concurrency_limit = {before}\n")
    assert burst(mx, primary, 8) == before
    reload(mx, f"default_destination_concurrency_limit = {after}\n")
    assert burst(mx, primary, 8) == after


def test_a_reload_changes_the_helo_name_of_the_next_delivery(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("first"))
    primary.wait_for(1, timeout=30)
    reload(mx, "smtp_helo_name = relay.tachtler.net\n")
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("second"))
    primary.wait_for(2, timeout=30)
    carried = [(s.commands[0], s.commands.count(b"DATA")) for s in primary.sessions
               if b"DATA" in s.commands]
    # a new session for the second message, not the pooled one of the first
    assert carried == [(b"EHLO mx1.tachtler.net", 1), (b"EHLO relay.tachtler.net", 1)]
