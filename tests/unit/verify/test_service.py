"""The verify service with a scripted prober: shared probes, waiting, the stale-OK rule."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from backupmx.verify.decide import BOUNCE, DEFER, OK, TODO, Entry
from backupmx.verify.probe import ProbeResult
from backupmx.verify.service import IN_PROGRESS, Answer
from tests.unit.verify.kit import build

GONE = ProbeResult(BOUNCE, "host mx[1.2.3.4] said: 550 5.1.1 no (in reply to RCPT TO command)",
                   "5.1.1")
DOWN = ProbeResult(DEFER, "connect to mx[1.2.3.4]:25: Connection refused", "4.4.1")


async def test_concurrent_queries_for_one_address_share_one_probe(tmp_path: Path) -> None:
    svc, prober = build("", tmp_path, delay=0.05)
    prober.answers["nobody@nausch.org"] = GONE
    v = svc.verifier
    answers = await asyncio.gather(
        *(v.query("nobody@nausch.org", "nobody@nausch.org", svc, 5) for _ in range(100))
    )
    assert answers == [Answer(BOUNCE, GONE.text)] * 100
    assert prober.calls == ["nobody@nausch.org"]
    assert v.probes == 1


async def test_results_are_cached_and_answered_without_a_probe(tmp_path: Path) -> None:
    svc, prober = build("", tmp_path)
    v = svc.verifier
    assert await v.query("alice@nausch.org", "alice@nausch.org", svc, 5) == Answer(
        OK, "250 2.1.5 Ok")
    assert await v.query("alice@nausch.org", "alice@nausch.org", svc, 5) == Answer(
        OK, "250 2.1.5 Ok")
    assert prober.calls == ["alice@nausch.org"]
    entry = v.entry("alice@nausch.org")
    assert entry is not None and entry.status == OK and entry.probed == 0


async def test_a_slow_probe_answers_in_progress_and_is_stored_later(tmp_path: Path) -> None:
    svc, prober = build("", tmp_path, delay=0.3)
    v = svc.verifier
    assert await v.query("bob@nausch.org", "bob@nausch.org", svc, 0.05) == Answer(
        TODO, IN_PROGRESS)
    await asyncio.sleep(0.5)
    assert await v.query("bob@nausch.org", "bob@nausch.org", svc, 0) == Answer(
        OK, "250 2.1.5 Ok")
    assert prober.calls == ["bob@nausch.org"]


async def test_expired_ok_is_used_while_the_probe_cannot_get_an_answer(tmp_path: Path) -> None:
    svc, prober = build("address_verify_positive_expire_time = 10s\n", tmp_path)
    v = svc.verifier
    old = time.time() - 60
    v.store.put("alice@nausch.org", Entry(OK, 0, old, "250 2.1.5 Ok"))
    prober.answers["alice@nausch.org"] = DOWN
    assert await v.query("alice@nausch.org", "alice@nausch.org", svc, 5) == Answer(
        OK, "250 2.1.5 Ok")
    entry = v.entry("alice@nausch.org")
    assert entry is not None and (entry.status, entry.updated) == (OK, old)
    # the next query within the retry interval does not probe again
    assert await v.query("alice@nausch.org", "alice@nausch.org", svc, 5) == Answer(
        OK, "250 2.1.5 Ok")
    assert prober.calls == ["alice@nausch.org"]


async def test_expired_ok_is_replaced_when_the_primary_says_no(tmp_path: Path) -> None:
    svc, prober = build("address_verify_positive_expire_time = 10s\n", tmp_path)
    v = svc.verifier
    v.store.put("bob@nausch.org", Entry(OK, 0, time.time() - 60, "250 2.1.5 Ok"))
    prober.answers["bob@nausch.org"] = GONE
    assert await v.query("bob@nausch.org", "bob@nausch.org", svc, 5) == Answer(BOUNCE, GONE.text)
    entry = v.entry("bob@nausch.org")
    assert entry is not None and entry.status == BOUNCE


async def test_probe_now_probes_even_a_fresh_entry(tmp_path: Path) -> None:
    svc, prober = build("", tmp_path)
    v = svc.verifier
    v.store.put("alice@nausch.org", Entry(OK, 0, time.time(), "250 2.1.5 Ok"))
    prober.answers["alice@nausch.org"] = ProbeResult(OK, "250 2.1.5 Fine", "2.1.5")
    entry = await v.probe_now("alice@nausch.org", "alice@nausch.org", svc)
    assert entry is not None and entry.text == "250 2.1.5 Fine"
    assert prober.calls == ["alice@nausch.org"]


async def test_results_persist_in_the_file(tmp_path: Path) -> None:
    svc, prober = build("", tmp_path)
    prober.answers["nobody@nausch.org"] = GONE
    await svc.verifier.query("nobody@nausch.org", "nobody@nausch.org", svc, 5)
    await svc.verifier.close()
    svc2, prober2 = build("", tmp_path)
    assert await svc2.verifier.query("nobody@nausch.org", "nobody@nausch.org", svc2, 5) == (
        Answer(BOUNCE, GONE.text))
    assert prober2.calls == []
