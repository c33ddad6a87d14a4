"""Recipient verification against the primary over TCP (real unbound, recording primary)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.util import message, metric, reload, send

# The seed's verification lines as they are (the cache path under the test's data_directory);
# its RBL, policy and access-map lines belong to other features and are left out here.
SEED = """
address_verify_map = btree:$data_directory/verify
unverified_recipient_reject_code = 577
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unverified_recipient,
    permit_mx_backup,
    reject_unauth_destination
"""

NOBODY_577 = (
    "577 5.1.1 <nobody@nausch.org>: Recipient address rejected: undeliverable address: "
    "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <nobody@nausch.org>: Recipient address "
    "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)"
)


def probe_rcpts(primary, address: str) -> int:
    """RCPT commands for ``address`` in all of the primary's sessions."""
    want = f"RCPT TO:<{address}>".encode()
    return sum(1 for s in primary.sessions for c in s.commands if c == want)


def verify(mx, address: str, *extra: str) -> dict:
    res = mx.cli("verify", address, "--json", *extra)
    assert res.returncode in (0, 1), res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def known(primary):
    primary.users = {"alice@nausch.org", "bob@nausch.org"}
    return primary


@pytest.fixture
def mx(backupmx_factory, known):
    return backupmx_factory(SEED)


def test_known_user_accepted_unknown_refused_with_the_primarys_text(mx, known):
    out = send(mx, "sender@sender.example", ["alice@nausch.org", "nobody@nausch.org"], message())
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == NOBODY_577
    qid = out.queue_id
    msgs = known.wait_for(1, timeout=20)
    assert [m.rcpts for m in msgs] == [["alice@nausch.org"]]
    mx.wait_log(rf"{qid}: to=<alice@nausch.org>, relay=mx1\.nausch\.org\[127\.0\.0\.2\]")
    assert f"{qid}: to=<nobody@nausch.org>" not in mx.log_text()
    line = mx.wait_log(r"verify\[\d+\]: to=<nobody@nausch\.org>.*").group(0)
    assert "dsn=5.1.1, status=undeliverable (host mx1.nausch.org[127.0.0.2] said: 550" in line


def test_probes_never_send_data(mx, known):
    send(mx, "sender@sender.example", ["bob@nausch.org", "nobody@nausch.org"])
    mx.wait_log(r"verify\[\d+\]: to=<nobody@nausch\.org>")
    time.sleep(0.5)
    assert known.messages == []
    assert known.sessions, "no probe reached the primary"
    for s in known.sessions:
        verbs = [c.split(b" ")[0].split(b":")[0].upper() for c in s.commands]
        assert b"DATA" not in verbs
        assert verbs[:2] == [b"EHLO", b"MAIL"]
        assert s.commands[1] == b"MAIL FROM:<double-bounce@mx1.tachtler.net>"
        assert b"RCPT" in verbs and b"RSET" in verbs


def test_primary_down_keeps_known_users_and_defers_new_ones(mx, known, smtp_port):
    out = send(mx, "sender@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    assert out.rcpts[0][0] == 250 and out.rcpts[1][0] == 577
    known.stop()
    out = send(mx, "sender@sender.example",
               ["alice@nausch.org", "carol@nausch.org", "nobody@nausch.org"], message())
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == (
        "450 4.1.1 <carol@nausch.org>: Recipient address rejected: unverified address: "
        f"connect to mx1.nausch.org[127.0.0.2]:{smtp_port}: Connection refused"
    )
    assert out.rcpt_line(2) == NOBODY_577
    assert out.data is not None and out.data[0] == 250
    assert verify(mx, "carol@nausch.org")["status"] == "deferred"


EXPIRING = SEED + """
address_verify_positive_refresh_time = 2s
address_verify_positive_expire_time = 4s
address_verify_negative_refresh_time = 2s
address_verify_negative_expire_time = 4s
"""


def test_expired_positive_entry_is_used_while_the_primary_is_down(backupmx_factory, known):
    mx = backupmx_factory(EXPIRING)
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    first = verify(mx, "alice@nausch.org")
    known.stop()
    time.sleep(5)  # past the positive expire time
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    mx.wait_log(r"<alice@nausch\.org>: using the expired deliverable result of \d+s ago: "
                r"the primary gave no answer \(connect to mx1\.nausch\.org\[127\.0\.0\.2\]")
    assert verify(mx, "alice@nausch.org")["updated"] == first["updated"]
    known.start()
    known.clear()
    time.sleep(2.5)  # the failed refresh may be retried after the negative refresh time
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    assert probe_rcpts(known, "alice@nausch.org") == 1
    after = verify(mx, "alice@nausch.org")
    assert after["status"] == "deliverable"
    assert after["updated"] != first["updated"] and after["age"] <= 2


def test_background_refresh_and_expiry(backupmx_factory, known):
    mx = backupmx_factory(EXPIRING + "address_verify_poll_count = 1\n")
    # poll_count = 1: a new address answers "in progress" at once, the probe runs on.
    out = send(mx, "s@sender.example", ["bob@nausch.org"])
    assert out.rcpt_line() == (
        "450 4.1.1 <bob@nausch.org>: Recipient address rejected: unverified address: "
        "Address verification in progress"
    )
    mx.wait_log(r"verify\[\d+\]: to=<bob@nausch\.org>.*status=deliverable")
    assert send(mx, "s@sender.example", ["bob@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    assert probe_rcpts(known, "bob@nausch.org") == 1
    time.sleep(2.5)  # past refresh, before expiry: cached answer now, probe in the background
    known.users = {"alice@nausch.org"}  # bob has left
    assert send(mx, "s@sender.example", ["bob@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    deadline = time.monotonic() + 10
    while probe_rcpts(known, "bob@nausch.org") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert probe_rcpts(known, "bob@nausch.org") == 2
    # The refresh said 550, but an unexpired OK is not downgraded (Postfix's optimism) ...
    assert send(mx, "s@sender.example", ["bob@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    time.sleep(4.5)
    # ... once expired it is re-probed; with poll_count = 1 nothing waits for the probe, so
    # this RCPT still gets the old OK, and the probe's 550 replaces the expired entry.
    assert send(mx, "s@sender.example", ["bob@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    mx.wait_log(r"verify\[\d+\]: to=<bob@nausch\.org>.*status=undeliverable")
    out = send(mx, "s@sender.example", ["bob@nausch.org"])
    assert out.rcpt_line().startswith(
        "577 5.1.1 <bob@nausch.org>: Recipient address rejected: undeliverable address: "
        "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1"
    )


def test_cache_survives_a_restart(mx, known, tmp_path):
    send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    assert (mx.dir / "data" / "verify").exists()
    mx.restart()
    known.stop()
    out = send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == NOBODY_577


def test_parallel_rcpts_for_one_address_share_one_probe(backupmx_factory, known):
    mx = backupmx_factory(SEED + "smtpd_client_connection_count_limit = 0\n"
                          "smtpd_client_connection_rate_limit = 0\n")

    def one(_: int) -> int:
        return send(mx, "s@sender.example", ["nobody@nausch.org"]).rcpts[0][0]

    with ThreadPoolExecutor(max_workers=100) as pool:
        codes = list(pool.map(one, range(100)))
    assert codes == [577] * 100
    assert probe_rcpts(known, "nobody@nausch.org") == 1


def test_a_burst_of_different_addresses_uses_a_handful_of_connections(mx, known):
    addrs = [f"user{i}@nausch.org" for i in range(50)]
    known.users = set(addrs)

    def one(a: str) -> int:
        return send(mx, "s@sender.example", [a]).rcpts[0][0]

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(one, addrs))
    assert codes == [250] * 50
    assert sum(probe_rcpts(known, a) for a in addrs) == 50
    assert 1 <= len(known.sessions) <= 5, len(known.sessions)
    assert metric(mx, "backupmx_verify_probes_total") == 50
    assert metric(mx, "backupmx_verify_probe_results_total", result="deliverable") == 50
    assert metric(mx, "backupmx_verify_cache_lookups_total", result="miss") == 50
    assert metric(mx, "backupmx_verify_connections_total") == len(known.sessions)


def test_foreign_domain_causes_no_probe_and_gets_the_relay_denial(mx, known, unbound):
    out = send(mx, "s@sender.example", ["x@foreign.example", "y@evil.example"])
    assert out.rcpt_line(0) == "554 5.7.1 <x@foreign.example>: Relay access denied"
    assert out.rcpt_line(1) == "554 5.7.1 <y@evil.example>: Relay access denied"
    time.sleep(0.5)
    assert known.sessions == []
    assert "verify[" not in mx.log_text()


def test_dns_failure_never_gives_a_5xx(mx, known):
    out = send(mx, "s@sender.example", ["x@broken.example"])
    assert out.rcpts[0][0] == 450
    assert known.sessions == []


def test_probe_sender_is_accepted_without_restrictions(mx, known):
    out = send(mx, "s@sender.example", ["double-bounce@mx1.tachtler.net"])
    assert out.rcpts == [(250, b"2.1.5 Ok")]


def test_verify_command_text_and_json(mx, known):
    send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    d = verify(mx, "nobody@nausch.org")
    assert d["status"] == "undeliverable"
    assert d["reply"] == NOBODY_577.split("undeliverable address: ", 1)[1]
    assert d["age"] <= 5
    assert set(d) == {"address", "status", "reply", "updated", "age", "next_refresh", "expires"}
    res = mx.cli("verify", "alice@nausch.org")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "alice@nausch.org: deliverable"
    assert lines[1] == "  reply: 250 2.1.5 Ok"
    assert lines[2].startswith("  updated: ") and lines[2].endswith(" s ago)")
    res = mx.cli("verify", "carol@nausch.org")
    assert res.returncode == 1
    assert res.stdout == "carol@nausch.org: unknown (no verification result cached)\n"
    # --probe asks the primary now, through the running server
    d = verify(mx, "carol@nausch.org", "--probe")
    assert d["status"] == "undeliverable"
    assert probe_rcpts(known, "carol@nausch.org") == 1
    # with the server stopped the command reads the cache file itself
    mx.stop()
    assert verify(mx, "nobody@nausch.org")["status"] == "undeliverable"
    assert verify(mx, "carol@nausch.org")["status"] == "undeliverable"
    # ... and with --probe it probes in-process and updates the file
    res = mx.cli("verify", "alice@nausch.org", "--probe", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["age"] <= 2, res.stderr
    assert probe_rcpts(known, "alice@nausch.org") == 2
    assert "/verify[" in res.stderr and "to=<alice@nausch.org>" in res.stderr


def test_check_warns_about_the_seed_order_with_the_recipient_list_first(backupmx_factory, known):
    warning = (
        "warning: smtpd_recipient_restrictions: reject_unverified_recipient comes before "
        "permit_mx_backup/reject_unauth_destination; Postfix would then probe the mail servers "
        "of any domain a client names, backupmx probes only destinations it relays to"
    )
    # The relay list first (the default): it refuses foreign domains before any probe.
    res = backupmx_factory(SEED, start=False).cli("check")
    assert res.returncode == 0, res.stderr
    assert warning not in res.stderr
    res = backupmx_factory(SEED + "smtpd_relay_before_recipient_restrictions = no\n",
                           start=False, name="recipient-first").cli("check")
    assert res.returncode == 0, res.stderr
    assert warning in res.stderr


def test_negative_cache_off_still_refuses_but_stores_nothing(backupmx_factory, known):
    mx = backupmx_factory(SEED + "address_verify_negative_cache = no\n")
    for _ in range(2):
        out = send(mx, "s@sender.example", ["nobody@nausch.org"])
        assert out.rcpt_line() == NOBODY_577
    assert probe_rcpts(known, "nobody@nausch.org") == 2
    assert verify(mx, "nobody@nausch.org")["status"] == "unknown"
    mx.wait_log(r"to=<nobody@nausch\.org>.*status=undeliverable-but-not-cached")


RELAY_RECIPIENTS = """
relay_domains = nausch.org
relay_recipient_maps = inline:{ alice@nausch.org=ok }
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unlisted_recipient,
    reject_unauth_destination
"""


def test_relay_recipient_maps_with_reject_unlisted_recipient(backupmx_factory, known):
    mx = backupmx_factory(RELAY_RECIPIENTS)
    out = send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == (
        "550 5.1.1 <nobody@nausch.org>: Recipient address rejected: "
        "User unknown in relay recipient table"
    )
    assert known.sessions == []


def test_memory_cache_and_probe_state_survive_a_reload(backupmx_factory, known):
    mx = backupmx_factory(SEED.replace("btree:$data_directory/verify", ""))
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    known.stop()
    mx.sighup()
    mx.wait_log(r"reload -- configuration")
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]


SENDER_CHECK = SEED + """
smtpd_sender_restrictions = reject_unverified_sender
"""


def test_reject_unverified_sender(backupmx_factory, known, sender_mx):
    sender_mx.users = {"sender@sender.example"}
    mx = backupmx_factory(SENDER_CHECK)
    assert send(mx, "sender@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    forged = (
        "<forged@sender.example>: Sender address rejected: {what}: host "
        "mx.sender.example[127.0.0.4] said: 550 5.1.1 <forged@sender.example>: Recipient "
        "address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)"
    )
    out = send(mx, "forged@sender.example", ["alice@nausch.org"])
    assert out.rcpt_line() == "450 4.1.7 " + forged.format(what="unverified address")
    assert send(mx, "<>", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    mx.stop()
    mx2 = backupmx_factory(SENDER_CHECK + "unverified_sender_reject_code = 550\n", name="mx2")
    out = send(mx2, "forged@sender.example", ["alice@nausch.org"])
    assert out.rcpt_line() == "550 5.1.7 " + forged.format(what="undeliverable address")
    assert all(b"DATA" not in c for s in sender_mx.sessions for c in s.commands)


def test_relay_recipient_maps_apply_without_naming_the_restriction(backupmx_factory, known):
    # smtpd_reject_unlisted_recipient = yes (the default) runs the check after the lists.
    mx = backupmx_factory(RELAY_RECIPIENTS.replace("    reject_unlisted_recipient,\n", ""))
    out = send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == (
        "550 5.1.1 <nobody@nausch.org>: Recipient address rejected: "
        "User unknown in relay recipient table"
    )


def test_a_probe_after_a_reload_does_not_use_the_session_kept_from_before(mx, known):
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    reload(mx, "smtp_helo_name = relay.tachtler.net\n")
    assert send(mx, "s@sender.example", ["bob@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]
    probes = [(s.commands[0], rcpts) for s in known.sessions  # the catch-all check aside
              if (rcpts := [c for c in s.commands if c.startswith(b"RCPT")
                            and not c.startswith(b"RCPT TO:<backupmx-catchall-check-")])]
    assert probes == [(b"EHLO mx1.tachtler.net", [b"RCPT TO:<alice@nausch.org>"]),
                      (b"EHLO relay.tachtler.net", [b"RCPT TO:<bob@nausch.org>"])]


def test_soft_bounce_sends_the_verification_refusal_as_4xx(backupmx_factory, known):
    mx = backupmx_factory(SEED + "soft_bounce = yes\n")
    out = send(mx, "s@sender.example", ["nobody@nausch.org"])
    assert out.rcpt_line() == "477 4.1.1" + NOBODY_577.removeprefix("577 5.1.1")
    mx.wait_log(r"NOQUEUE: reject: RCPT from client\.example\.net\[127\.0\.0\.5\]: 477 4\.1\.1 "
                r"<nobody@nausch\.org>: Recipient address rejected: undeliverable address: ")
