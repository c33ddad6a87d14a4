"""PolicyServices across a reload: closed only once no policy check uses it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backupmx import config
from backupmx.policy.runtime import PolicyServices


def policy(tmp_path: Path) -> PolicyServices:
    cfg = config.parse(f"queue_directory = {tmp_path}/spool\n"
                       f"greylist_store = sqlite:{tmp_path}/greylist.db\n")
    return PolicyServices(cfg)


def closed(store: object) -> bool:
    try:
        store.triplet("k")  # type: ignore[attr-defined]
    except sqlite3.ProgrammingError:
        return True
    return False


def test_a_check_under_way_keeps_the_store_open_until_it_ends(tmp_path: Path) -> None:
    p = policy(tmp_path)
    with p.using():
        store = p.greylist().store
        p.close()  # the reload
        assert not closed(store)
        assert p.greylist().store is store  # the same store, still usable
    assert closed(store) and p.greylister is None


def test_a_check_that_starts_after_close_leaves_nothing_open(tmp_path: Path) -> None:
    p = policy(tmp_path)
    p.close()
    with p.using():
        store = p.greylist().store  # reopened for a RCPT that began before the reload
    assert closed(store) and p.greylister is None


def test_close_without_checks_is_immediate(tmp_path: Path) -> None:
    p = policy(tmp_path)
    with p.using():
        store = p.greylist().store
    assert not closed(store)
    p.close()
    assert closed(store)


def test_a_failing_check_still_releases(tmp_path: Path) -> None:
    p = policy(tmp_path)
    with pytest.raises(RuntimeError), p.using():
        store = p.greylist().store
        p.close()
        raise RuntimeError("check failed")
    assert closed(store) and p.users == 0
