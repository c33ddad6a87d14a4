"""Two backupmx nodes sharing their verify cache and greylist store in a real redis-server.

Node a is mx1.tachtler.net on 127.0.0.3:P; node b listens on 127.0.0.7 with its own
ports and counts 127.0.0.3 as its own address (``proxy_interfaces``), as two nodes
behind one published address would, so both are the backup MX of nausch.org.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tests.e2e.util import GREYLISTED, NOBODY_577, message, node_b_lines, send
from tests.peers.backupmx import BackupMX

VERIFY = """
address_verify_map = {url}
unverified_recipient_reject_code = 577
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unverified_recipient,
    permit_mx_backup,
    reject_unauth_destination
"""

GREYLIST = """
greylist_store = {url}
greylist_delay = 2s
smtpd_recipient_restrictions =
    permit_mynetworks,
    check_policy_service builtin:greylist,
    permit_mx_backup,
    reject_unauth_destination
"""



def probe_rcpts(primary, address: str) -> int:
    """RCPT commands for ``address`` in all of the primary's sessions."""
    want = f"RCPT TO:<{address}>".encode()
    return sum(1 for s in primary.sessions for c in s.commands if c == want)


def two_nodes(factory: Callable[..., BackupMX], config: str) -> tuple[BackupMX, BackupMX]:
    return factory(config, name="a"), factory(config + node_b_lines(), name="b")


@pytest.fixture
def known(primary):
    primary.users = {"alice@nausch.org", "bob@nausch.org"}
    return primary


def test_a_probe_through_node_a_answers_node_b(backupmx_factory, known, redis_server):
    a, b = two_nodes(backupmx_factory, VERIFY.format(url=redis_server.url))
    out = send(a, "sender@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    assert out.rcpt_line(0) == "250 2.1.5 Ok"
    assert out.rcpt_line(1) == NOBODY_577
    assert (probe_rcpts(known, "alice@nausch.org"), probe_rcpts(known, "nobody@nausch.org")) \
        == (1, 1)
    out = send(b, "sender@sender.example", ["alice@nausch.org", "nobody@nausch.org"],
               message())
    assert out.rcpt_line(0) == "250 2.1.5 Ok"
    assert out.rcpt_line(1) == NOBODY_577
    assert (probe_rcpts(known, "alice@nausch.org"), probe_rcpts(known, "nobody@nausch.org")) \
        == (1, 1)
    assert [m.rcpts for m in known.wait_for(1, timeout=30)] == [["alice@nausch.org"]]
    r = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    assert sorted(r.keys("backupmx:verify:*")) == [
        "backupmx:verify:alice@nausch.org", "backupmx:verify:nobody@nausch.org"]
    assert r.hget("backupmx:verify:nobody@nausch.org", "status") == "2"
    assert "verify[" not in b.log_text()  # node b never probed


def test_greylisted_at_node_a_accepted_at_node_b_after_the_delay(
    backupmx_factory, primary, redis_server
):
    a, b = two_nodes(backupmx_factory, GREYLIST.format(url=redis_server.url))
    assert send(a, "sender@sender.example", ["alice@nausch.org"]).rcpt_line() == GREYLISTED
    time.sleep(2.5)  # past greylist_delay; node b has not seen this triplet itself
    out = send(b, "sender@sender.example", ["alice@nausch.org"], message("grey"))
    assert out.rcpt_line() == "250 2.1.5 Ok"
    b.wait_log(r"greylist\[\d+\]: action=pass, reason=triplet found, delay=\d+, "
               r"client_name=client\.example\.net, client_address=127\.0\.0\.5, "
               r"sender=sender@sender\.example, recipient=alice@nausch\.org")
    got = primary.wait_for(1, timeout=30)
    assert got[0].data.startswith(b"X-Greylist: delayed ")
    r = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    assert r.keys("backupmx:greylist:triplet:*") == [
        "backupmx:greylist:triplet:127.0.0.0/sender@sender.example/alice@nausch.org"]


def test_redis_down_is_a_450_for_verification_then_it_recovers(
    backupmx_factory, known, redis_server
):
    mx = backupmx_factory(VERIFY.format(url=redis_server.url))
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpt_line() == "250 2.1.5 Ok"
    redis_server.stop()
    for _ in range(3):  # the first attempt connects and fails, the next fail at once
        out = send(mx, "s@sender.example", ["bob@nausch.org", "nobody@nausch.org"])
        assert out.rcpt_line(0) == ("450 4.1.1 <bob@nausch.org>: Recipient address rejected: "
                                    "address verification problem")
        assert out.rcpt_line(1) == ("450 4.1.1 <nobody@nausch.org>: Recipient address "
                                    "rejected: address verification problem")
    assert probe_rcpts(known, "bob@nausch.org") == 0
    mx.wait_log(r"verify\[\d+\]: warning: <bob@nausch\.org>: address verification problem: "
                r"StoreUnavailable\('redis://127\.0\.0\.1:\d+/0: Error 111 connecting to "
                r"127\.0\.0\.1:\d+\. Connection refused\. \(not retried for 2s\)'\)")
    # a user this node itself verified before is answered from its own mirror
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpt_line() == "250 2.1.5 Ok"
    redis_server.start()  # empty again: nothing was saved
    deadline = time.monotonic() + 20
    while True:
        line = send(mx, "s@sender.example", ["bob@nausch.org"]).rcpt_line()
        if line == "250 2.1.5 Ok" or time.monotonic() > deadline:
            break
        assert line.startswith("450 4.1.1 <bob@nausch.org>: "), line
        time.sleep(0.5)
    assert line == "250 2.1.5 Ok"
    assert probe_rcpts(known, "bob@nausch.org") == 1


def test_redis_down_is_the_policy_default_action_for_greylisting(
    backupmx_factory, primary, redis_server
):
    mx = backupmx_factory(GREYLIST.format(url=redis_server.url))
    assert send(mx, "sender@sender.example", ["alice@nausch.org"]).rcpt_line() == GREYLISTED
    redis_server.stop()
    time.sleep(2.5)
    for _ in range(2):
        out = send(mx, "sender@sender.example", ["alice@nausch.org"])
        assert out.rcpt_line() == ("451 4.3.5 <alice@nausch.org>: Recipient address rejected: "
                                   "Server configuration problem")
    mx.wait_log(r"smtpd\[\d+\]: warning: builtin:greylist: greylist store: "
                r"redis://127\.0\.0\.1:\d+/0: Error 111 connecting to 127\.0\.0\.1:\d+\. "
                r"Connection refused\.$")


def test_check_reports_a_bad_redis_url_with_file_and_line(backupmx_factory):
    mx = backupmx_factory("address_verify_map = redis://127.0.0.1:6379/x\n", start=False)
    res = mx.cli("check")
    assert res.returncode == 2
    line = mx.config_text.splitlines().index("address_verify_map = redis://127.0.0.1:6379/x") + 1
    assert (f"{mx.config_file}:{line}: address_verify_map: redis://127.0.0.1:6379/x: bad "
            "database number 'x': 0, 1, 2, ... (expected redis://HOST:PORT/DB)") in res.stderr


def test_check_accepts_redis_urls_for_both_stores(backupmx_factory):
    mx = backupmx_factory(GREYLIST.format(url="redis://127.0.0.1:6379/1")
                          + "address_verify_map = redis://[::1]:6380/2\n", start=False)
    res = mx.cli("check")
    assert res.returncode == 0, res.stderr
