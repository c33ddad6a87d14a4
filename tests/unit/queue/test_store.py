"""The durable spool: persistence, group commit, recovery and failure handling."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupmx.envelope import DEFERRED, Envelope, Recipient
from backupmx.log import log
from backupmx.queue.ids import new_id
from backupmx.queue.store import Spool, SpoolError, encode_envelope

CONTENT = b"Subject: test\r\n\r\nbody\r\n"


def make_env(entry_id: str | None = None, rcpts: int = 1) -> Envelope:
    return Envelope(
        id=entry_id or new_id(),
        sender="alice@sender.example",
        recipients=[Recipient(f"u{i}@nausch.org", orcpt=f"rfc822;u{i}@nausch.org")
                    for i in range(rcpts)],
        arrival=1710234000.5,
        size=len(CONTENT),
        body="8BITMIME",
        client="client.example[192.0.2.1]",
    )


@pytest.fixture
def qdir(tmp_path: Path) -> str:
    return str(tmp_path / "queue")


@pytest.fixture
def spool(qdir: str) -> Iterator[Spool]:
    s = Spool(qdir)
    s.open()
    yield s
    s.close()


def raw_db(qdir: str) -> sqlite3.Connection:
    return sqlite3.connect(os.path.join(qdir, "queue.db"), isolation_level=None)


async def test_commit_survives_reopen(qdir: str) -> None:
    env = make_env("AAAAAAAAA1", rcpts=2)
    env.history.append({"time": 1710234001.0, "event": "queued"})
    s = Spool(qdir)
    report = s.open()
    assert (report.messages, report.moved_aside) == (0, 0)
    await s.commit(env, CONTENT)
    s.close()

    again = Spool(qdir)
    report = again.open()
    try:
        assert (report.messages, report.moved_aside, report.ids) == (1, 0, [])
        assert again.envelopes() == [env]
        assert again.envelope("AAAAAAAAA1") == env
        assert again.content("AAAAAAAAA1") == CONTENT
        assert again.envelope("NOSUCH") is None
        with pytest.raises(KeyError):
            again.content("NOSUCH")
    finally:
        again.close()


def test_permissions(spool: Spool, qdir: str) -> None:
    assert stat.S_IMODE(os.stat(qdir).st_mode) == 0o700
    for name in ("queue.db", "queue.db-wal", "queue.db-shm"):
        assert stat.S_IMODE(os.stat(os.path.join(qdir, name)).st_mode) == 0o600, name


async def test_concurrent_commits_share_transactions(spool: Spool) -> None:
    before = spool.commits
    envs = [make_env() for _ in range(200)]
    await asyncio.gather(*(spool.commit(env, CONTENT) for env in envs))
    batches = spool.commits - before
    print(f"200 concurrent commits used {batches} transactions")
    assert 1 <= batches <= 20
    assert sorted(e.id for e in spool.envelopes()) == sorted(e.id for e in envs)


def test_commit_sync_from_threads(spool: Spool) -> None:
    envs = [make_env() for _ in range(20)]
    threads = [threading.Thread(target=spool.commit_sync, args=(e, CONTENT)) for e in envs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spool.envelopes()) == 20


async def test_duplicate_id_fails_alone(spool: Spool) -> None:
    await spool.commit(make_env("DUP0000001"), CONTENT)
    other = make_env()
    results = await asyncio.gather(
        spool.commit(make_env("DUP0000001"), b"other"),
        spool.commit(other, CONTENT),
        return_exceptions=True,
    )
    assert isinstance(results[0], SpoolError)
    assert results[0].disk_full is False  # a duplicate is no lack of space
    assert results[1] == encode_envelope(other)  # the envelope as stored
    assert spool.content("DUP0000001") == CONTENT  # never overwritten
    assert spool.envelope(other.id) == other


async def test_update_and_remove(spool: Spool) -> None:
    env = make_env(rcpts=2)
    await spool.commit(env, CONTENT)
    env.recipients[0].state = DEFERRED
    env.recipients[0].attempts = 1
    env.recipients[0].last_reply = "451 4.3.0 try later"
    env.recipients[0].next_attempt = 1710234300.0
    env.history.append({"time": 1710234001.0, "status": "deferred"})
    assert await spool.update(env) is True
    assert spool.envelope(env.id) == env
    assert spool.content(env.id) == CONTENT
    await spool.remove(env.id)
    assert spool.envelope(env.id) is None
    assert spool.envelopes() == []
    assert await spool.update(env) is False  # a removed entry is not resurrected
    assert spool.envelope(env.id) is None


async def test_hold_release_delete(spool: Spool) -> None:
    a, b, c = make_env(), make_env(), make_env()
    for env in (a, b, c):
        await spool.commit(env, CONTENT)
    assert await spool.set_hold(a.id, True) is True
    assert spool.envelope(a.id).hold is True
    assert await spool.set_hold(a.id, False) is True
    assert spool.envelope(a.id).hold is False
    assert await spool.set_hold("NOSUCH", True) is False
    assert await spool.delete(a.id) is True
    assert await spool.delete(a.id) is False
    before = spool.commits
    assert sorted(await spool.delete_all()) == sorted([b.id, c.id])
    assert spool.commits == before + 1  # one transaction, one fsync
    assert spool.envelopes() == []


async def test_active_marker_is_reset_at_open(qdir: str) -> None:
    s = Spool(qdir)
    s.open()
    env = make_env()
    await s.commit(env, CONTENT)
    await s.mark_active(env.id, True)
    assert s.active_ids() == {env.id}
    s.close()  # as if the server died during the attempt
    again = Spool(qdir)
    report = again.open()
    try:
        assert report.active_reset == 1
        assert str(report) == "1 messages, 0 moved to corrupt/, 1 active markers reset"
        assert again.active_ids() == set()
    finally:
        again.close()


async def test_corrupt_entries_are_moved_aside(
    qdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = io.StringIO()
    monkeypatch.setattr(log, "stderr", logged)
    s = Spool(qdir)
    s.open()
    good, bad_content, bad_env = make_env("GOOD000001"), make_env("BADC000001"), make_env(
        "BADE000001")
    for env in (good, bad_content, bad_env):
        await s.commit(env, CONTENT)
    s.close()
    db = raw_db(qdir)
    db.execute("UPDATE content SET data = ? WHERE id = 'BADC000001'", (b"tampered",))
    db.execute("UPDATE envelope SET data = '{\"id\": broken' WHERE id = 'BADE000001'")
    db.execute("INSERT INTO content VALUES ('ORPHAN0001', x'00', 'x')")
    db.close()

    again = Spool(qdir)
    report = again.open()
    try:
        assert (report.messages, report.moved_aside) == (1, 3)
        assert sorted(report.ids) == ["BADC000001", "BADE000001", "ORPHAN0001"]
        assert [e.id for e in again.envelopes()] == ["GOOD000001"]
        corrupt = Path(qdir) / "corrupt"
        assert sorted(p.name for p in corrupt.iterdir()) == [
            "BADC000001.eml", "BADC000001.json", "BADE000001.eml", "BADE000001.json",
            "ORPHAN0001.eml",
        ]
        assert (corrupt / "BADC000001.eml").read_bytes() == b"tampered"
        assert (corrupt / "BADE000001.json").read_text() == '{"id": broken'
        assert stat.S_IMODE(os.stat(corrupt / "BADC000001.eml").st_mode) == 0o600
        assert (
            "/qmgr[" in logged.getvalue()
            and 'warning: BADC000001: corrupt queue entry (content checksum) saved as '
            '"corrupt/BADC000001.eml" and "corrupt/BADC000001.json"\n' in logged.getvalue()
        )
    finally:
        again.close()


async def test_content_checksum_checked_on_read(spool: Spool, qdir: str) -> None:
    env = make_env("READ000001")
    await spool.commit(env, CONTENT)
    db = raw_db(qdir)
    db.execute("UPDATE content SET data = ? WHERE id = 'READ000001'", (b"bit rot",))
    db.close()
    with pytest.raises(KeyError):
        spool.content("READ000001")
    assert spool.envelope("READ000001") is None
    assert (Path(qdir) / "corrupt" / "READ000001.eml").read_bytes() == b"bit rot"


async def test_malformed_database_is_moved_aside(qdir: str) -> None:
    s = Spool(qdir)
    s.open()
    await asyncio.gather(*(s.commit(make_env(), CONTENT * 50) for _ in range(50)))
    s.close()
    path = Path(qdir, "queue.db")
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[2 * 4096:6 * 4096] = b"\xa5" * (4 * 4096)  # wreck b-tree pages, keep the header
    path.write_bytes(bytes(data))
    again = Spool(qdir)
    report = again.open()
    try:
        assert report.database_moved_to is not None
        assert Path(report.database_moved_to).read_bytes() == bytes(data)
        assert report.messages == 0
    finally:
        again.close()


def test_unreadable_database_is_moved_aside(qdir: str) -> None:
    os.makedirs(qdir)
    junk = b"this is not a database at all" * 200
    Path(qdir, "queue.db").write_bytes(junk)
    s = Spool(qdir)
    report = s.open()
    try:
        assert report.database_moved_to is not None
        assert Path(report.database_moved_to).read_bytes() == junk
        assert os.path.dirname(report.database_moved_to) == os.path.join(qdir, "corrupt")
        assert os.path.basename(report.database_moved_to).startswith("queue.db.")
        assert report.messages == 0
        env = make_env()
        s.commit_sync(env, CONTENT)
        assert s.envelope(env.id) == env
    finally:
        s.close()


async def test_full_disk_raises_spool_error_and_writes_nothing(spool: Spool) -> None:
    pages = spool._call_sync(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
    spool._call_sync(lambda db: db.execute(f"PRAGMA max_page_count = {pages + 2}"))
    big = make_env("BIG0000001")
    with pytest.raises(SpoolError) as failure:
        await spool.commit(big, b"x" * 200_000)
    assert failure.value.disk_full is True  # SQLITE_FULL, whatever its wording
    assert spool.envelope("BIG0000001") is None
    with pytest.raises(KeyError):
        spool.content("BIG0000001")
    spool._call_sync(lambda db: db.execute("PRAGMA max_page_count = 1073741823"))
    small = make_env()
    await spool.commit(small, CONTENT)  # the writer carries on after the failure
    assert [e.id for e in spool.envelopes()] == [small.id]


async def test_closed_spool_refuses_writes(qdir: str) -> None:
    s = Spool(qdir)
    s.open()
    s.close()
    with pytest.raises(SpoolError):
        await s.commit(make_env(), CONTENT)
    with pytest.raises(SpoolError):
        s.envelopes()


async def test_load_100k_envelopes(qdir: str) -> None:
    s = Spool(qdir)
    s.open()
    envs = [make_env(f"{i:010X}", rcpts=2) for i in range(100_000)]
    for start in range(0, len(envs), 5000):
        await asyncio.gather(*(s.commit(e, CONTENT) for e in envs[start:start + 5000]))
    s.close()
    again = Spool(qdir)
    started = time.perf_counter()
    report = again.open()
    opened = time.perf_counter() - started
    started = time.perf_counter()
    loaded = again.envelopes()
    took = time.perf_counter() - started
    again.close()
    print(f"open+verify of 100000 entries: {opened:.2f}s; envelopes(): {took:.2f}s")
    assert report.messages == 100_000
    assert len(loaded) == 100_000
    assert loaded[12345] == envs[12345]
