"""``GET /metrics`` with real traffic: two smtpd workers and the master summed into one
scrape, parsed by prometheus-client's own parser (unbound answers the DNS list, the
recording primary takes the mail and then goes down)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tests.e2e.test_workers import wait_workers
from tests.e2e.util import message, metric, scrape, send
from tests.peers.ports import free_port

INSIDE = "127.0.0.1"  # mynetworks
LISTED = "127.0.0.66"  # in zen.spamhaus.org, by the test's DNS record
GREY = "450 4.2.0 <alice@nausch.org>: Recipient address rejected: Greylisted, see " \
       "http://postgrey.schweikert.ch/help/nausch.org.html"


def config(policy_port: int) -> str:
    return f"""
smtpd_worker_processes = 2
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_rbl_client zen.spamhaus.org,
    check_policy_service inet:127.0.0.4:{policy_port},
    check_policy_service builtin:greylist,
    permit_mx_backup,
    reject_unauth_destination
smtpd_policy_service_default_action = DUNNO
smtpd_policy_service_try_limit = 1
greylist_delay = 300s
minimal_backoff_time = 300s
maximal_backoff_time = 600s
"""


def wait_metric(mx: Any, name: str, want: float, timeout: float = 20.0,
                **labels: str) -> None:
    deadline = time.monotonic() + timeout
    while (got := metric(mx, name, **labels)) != want:
        assert time.monotonic() < deadline, f"{name}{labels} = {got}, not {want}"
        time.sleep(0.1)


def test_the_numbers_move_with_real_traffic(backupmx_factory, primary, dns_records):
    dns_records("66.0.0.127.zen.spamhaus.org. 300 IN A 127.0.0.2")
    policy_port = free_port(("127.0.0.4",))  # nothing listens: every request fails
    mx = backupmx_factory(config(policy_port))
    wait_workers(mx, 2)
    before = scrape(mx)
    assert ("backupmx_smtpd_messages_accepted_total", frozenset()) in before
    assert metric(mx, "backupmx_smtpd_messages_accepted_total") == 0
    assert metric(mx, "backupmx_queue_messages") == 0

    # Refused at RCPT: the DNS list (5xx), the greylist (4xx), the relay check (5xx).
    out = send(mx, "s@sender.example", ["alice@nausch.org"], source=LISTED)
    assert out.rcpt_line() == ("554 5.7.1 Service unavailable; Client host [127.0.0.66] "
                               "blocked using zen.spamhaus.org")
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpt_line() == GREY
    assert send(mx, "s@sender.example", ["victim@foreign.example"]).rcpt_line() == (
        "554 5.7.1 <victim@foreign.example>: Relay access denied")
    rejects = {(dict(ls)["restriction"], dict(ls)["class"]): v for (n, ls), v in scrape(mx).items()
               if n == "backupmx_smtpd_rejects_total" and dict(ls)["stage"] == "RCPT"}
    assert rejects == {("reject_rbl_client", "5xx"): 1, ("check_policy_service", "4xx"): 1,
                       ("reject_unauth_destination", "5xx"): 1}
    assert metric(mx, "backupmx_dnsbl_hits_total", list="zen.spamhaus.org") == 1
    assert metric(mx, "backupmx_greylist_decisions_total", decision="greylist") == 1
    assert metric(mx, "backupmx_policy_errors_total",
                  service=f"inet:127.0.0.4:{policy_port}") == 1  # the greylisted RCPT

    # Accepted and delivered: bytes as received, the primary up.
    body = message("counted")
    out = send(mx, "s@sender.example", ["carol@nausch.org"], body, source=INSIDE)
    assert out.data is not None and out.data[0] == 250
    assert [m.rcpts for m in primary.wait_for(1, timeout=20)] == [["carol@nausch.org"]]
    wait_metric(mx, "backupmx_delivery_results_total", 1, result="delivered",
                destination="nausch.org")
    m = scrape(mx)
    assert m[("backupmx_smtpd_messages_accepted_total", frozenset())] == 1
    assert m[("backupmx_smtpd_message_bytes_accepted_total", frozenset())] >= len(body)
    assert m[("backupmx_delivery_attempt_seconds_count",
              frozenset({("destination", "nausch.org")}))] == 1
    assert m[("backupmx_delivery_delay_seconds_count", frozenset())] == 1
    assert m[("backupmx_destination_up", frozenset({("destination", "nausch.org")}))] == 1
    assert m[("backupmx_destination_state", frozenset({("destination", "nausch.org"),
                                                       ("state", "up")}))] == 1
    assert m[("backupmx_spool_commit_seconds_count", frozenset())] >= 2  # worker and master
    served = ("backupmx_smtpd_connections_total", frozenset({("outcome", "served")}))
    quit_ = ("backupmx_smtpd_sessions_ended_total", frozenset({("end", "quit")}))
    assert m[served] == before[served] + 4  # the start-up check's session came before
    assert m[quit_] == before[quit_] + 4

    # The primary goes down: the message waits, and the metrics say for how long.
    primary.stop()
    out = send(mx, "s@sender.example", ["carol@nausch.org"], message("waits"), source=INSIDE)
    assert out.data is not None and out.data[0] == 250
    wait_metric(mx, "backupmx_delivery_results_total", 1, result="deferred",
                destination="nausch.org")
    m = scrape(mx)
    assert m[("backupmx_queue_messages", frozenset())] == 1
    dest = frozenset({("destination", "nausch.org")})
    assert m[("backupmx_queue_destination_messages", dest)] == 1
    assert m[("backupmx_queue_oldest_message_age_seconds", dest)] >= 0
    assert m[("backupmx_destination_up", dest)] == 0
    assert m[("backupmx_destination_state", dest | {("state", "down")})] == 1
    assert m[("backupmx_destination_state_since_seconds", dest)] <= time.time()


def test_a_worker_that_dies_takes_no_count_with_it(backupmx_factory, primary):
    mx = backupmx_factory("smtpd_worker_processes = 2\n")
    pids = wait_workers(mx, 2)
    for i in range(4):
        out = send(mx, "s@sender.example", ["carol@nausch.org"], message(f"m{i}"),
                   source=INSIDE)
        assert out.data is not None and out.data[0] == 250
    assert metric(mx, "backupmx_smtpd_messages_accepted_total") == 4  # each worker answered
    ended = metric(mx, "backupmx_smtpd_sessions_ended_total", end="quit")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_workers(mx, 2)
    deadline = time.monotonic() + 20
    while set(wait_workers(mx, 2)) & set(pids):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = send(mx, "s@sender.example", ["carol@nausch.org"], message("after"), source=INSIDE)
    assert out.data is not None and out.data[0] == 250
    assert metric(mx, "backupmx_smtpd_messages_accepted_total") == 5
    assert metric(mx, "backupmx_smtpd_sessions_ended_total", end="quit") == ended + 1
