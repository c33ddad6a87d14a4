"""Catch-all detection: when a check is due, what its probe's answer concludes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from backupmx.verify import catchall
from backupmx.verify.catchall import NO, RETRY, UNKNOWN, YES, State
from backupmx.verify.decide import BOUNCE, DEFER, OK
from backupmx.verify.probe import ProbeResult
from tests.unit.verify.kit import build

DAY = 86400.0


def test_conclusions_never_come_from_a_temporary_failure() -> None:
    assert catchall.conclusion(ProbeResult(OK, "250 2.1.5 Ok", "2.1.5")) == YES
    assert catchall.conclusion(ProbeResult(BOUNCE, "said: 550 5.1.1", "5.1.1")) == NO
    assert catchall.conclusion(ProbeResult(DEFER, "said: 450 4.7.1", "4.7.1")) == UNKNOWN
    assert catchall.conclusion(ProbeResult(DEFER, "Connection refused", "4.4.1")) == UNKNOWN


def test_due_at_first_then_once_per_interval_unknown_sooner() -> None:
    assert catchall.due(None, 0.0, DAY)
    assert not catchall.due(None, 0.0, 0)  # 0 disables
    assert not catchall.due(State(YES, 100.0, ""), 100.0 + DAY - 1, DAY)
    assert catchall.due(State(NO, 100.0, ""), 100.0 + DAY, DAY)
    assert not catchall.due(State(UNKNOWN, 100.0, ""), 100.0 + RETRY - 1, DAY)
    assert catchall.due(State(UNKNOWN, 100.0, ""), 100.0 + RETRY, DAY)
    assert catchall.due(State(UNKNOWN, 100.0, ""), 160.0, 60.0)


def test_the_probe_address_is_random_and_in_the_domain() -> None:
    a, b = catchall.probe_address("nausch.org"), catchall.probe_address("nausch.org")
    assert a != b
    assert a.startswith("backupmx-catchall-check-") and a.endswith("@nausch.org")


def test_check_warnings_read_the_running_servers_findings() -> None:
    status = {"catchall": [{"domain": "a.example", "catchall": YES},
                           {"domain": "b.example", "catchall": NO},
                           {"domain": "c.example", "catchall": UNKNOWN}]}
    assert catchall.check_warnings(status) == [
        "warning: primary for a.example accepts any recipient (catch-all): recipient "
        "verification cannot reject unknown users"]
    assert catchall.check_warnings(None) == []


async def test_a_recipient_query_checks_its_domain_once(tmp_path: Path) -> None:
    svc, prober = build("", tmp_path)
    v = svc.verifier
    await v.query("alice@nausch.org", "alice@nausch.org", svc, 5, recipient=True)
    await v.query("bob@nausch.org", "bob@nausch.org", svc, 5, recipient=True)
    for _ in range(100):  # the check runs in the background
        if "nausch.org" in v.catchall.states:
            break
        await asyncio.sleep(0.01)
    checks = [a for a in prober.calls if a.startswith(catchall.PREFIX)]
    assert len(checks) == 1 and checks[0].endswith("@nausch.org")
    assert v.catchall.states["nausch.org"].catchall == YES
    assert v.catchall.probes == 1 and v.probes == 2
    assert v.entry(checks[0]) is None  # never stored in the cache
    await v.query("carol@sender.example", "carol@sender.example", svc, 5)  # a sender
    assert "sender.example" not in v.catchall.states
    await v.close()
