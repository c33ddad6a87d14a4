"""The cache decisions: query (answer, probe, stale fallback) and update (never downgrade OK)."""

from __future__ import annotations

from backupmx.verify.decide import (
    BOUNCE,
    DEFER,
    OK,
    PROBE_TTL,
    TODO,
    Decision,
    Entry,
    Timing,
    probing,
    purgeable,
    query,
    update,
)

T = Timing(positive_expire=31 * 86400, positive_refresh=7 * 86400,
           negative_expire=3 * 86400, negative_refresh=3 * 3600, negative_cache=True)
NOW = 1_000_000_000.0
DAY = 86400.0


def test_unknown_address_is_probed_and_answered_by_the_probe() -> None:
    assert query(None, NOW, T) == Decision(None, True)


def test_a_todo_record_counts_as_unknown() -> None:
    assert query(Entry(TODO, 0, 0, "x"), NOW, T) == Decision(None, True)


def test_fresh_ok_is_answered_without_a_probe() -> None:
    e = Entry(OK, 0, NOW - DAY, "250 2.1.5 Ok")
    assert query(e, NOW, T) == Decision(e, False)


def test_ok_past_refresh_is_answered_and_refreshed_in_the_background() -> None:
    e = Entry(OK, 0, NOW - 8 * DAY, "250 2.1.5 Ok")
    assert query(e, NOW, T) == Decision(e, True)


def test_refresh_is_not_repeated_within_the_probe_ttl() -> None:
    e = Entry(OK, NOW - PROBE_TTL + 1, NOW - 8 * DAY, "250 2.1.5 Ok")
    assert query(e, NOW, T) == Decision(e, False)


def test_expired_ok_waits_for_the_probe_with_the_old_ok_as_fallback() -> None:
    e = Entry(OK, 0, NOW - 32 * DAY, "250 2.1.5 Ok")
    assert query(e, NOW, T) == Decision(None, True, stale=e)


def test_expired_ok_with_a_recent_failed_probe_uses_the_fallback_without_probing() -> None:
    e = Entry(OK, NOW - 10, NOW - 32 * DAY, "250 2.1.5 Ok")
    assert query(e, NOW, T) == Decision(None, False, stale=e)


def test_negative_entries_refresh_after_three_hours_and_expire_after_three_days() -> None:
    fresh = Entry(BOUNCE, 0, NOW - 3600, "550 no")
    assert query(fresh, NOW, T) == Decision(fresh, False)
    old = Entry(DEFER, 0, NOW - 4 * 3600, "connect refused")
    assert query(old, NOW, T) == Decision(old, True)
    gone = Entry(BOUNCE, 0, NOW - 4 * DAY, "550 no")
    assert query(gone, NOW, T) == Decision(None, True, drop=True)


def test_negative_records_are_dropped_when_the_negative_cache_is_off() -> None:
    t = Timing(T.positive_expire, T.positive_refresh, T.negative_expire, T.negative_refresh,
               negative_cache=False)
    assert query(Entry(BOUNCE, 0, NOW - 60, "550"), NOW, t) == Decision(None, True, drop=True)


def test_retry_interval_is_the_negative_refresh_time_at_most_the_probe_ttl() -> None:
    assert T.retry == PROBE_TTL
    assert Timing(4, 2, 4, 2, True).retry == 2


def test_probing_marks_the_record_and_stores_nothing_new() -> None:
    assert probing(None, NOW) is None
    assert probing(Entry(OK, 0, 5, "ok"), NOW) == Entry(OK, NOW, 5, "ok")


def test_update_stores_results() -> None:
    assert update(None, OK, "250 ok", NOW, T) == Entry(OK, 0, NOW, "250 ok")
    assert update(None, BOUNCE, "550 no", NOW, T) == Entry(BOUNCE, 0, NOW, "550 no")
    assert update(Entry(DEFER, 1, 2, "x"), OK, "250", NOW, T) == Entry(OK, 0, NOW, "250")


def test_a_failed_probe_never_overwrites_ok_even_when_expired() -> None:
    fresh = Entry(OK, NOW - 1, NOW - DAY, "250 ok")
    assert update(fresh, DEFER, "refused", NOW, T) == fresh
    expired = Entry(OK, NOW - 1, NOW - 40 * DAY, "250 ok")
    assert update(expired, DEFER, "refused", NOW, T) == expired


def test_undeliverable_replaces_ok_only_once_the_ok_has_expired() -> None:
    fresh = Entry(OK, NOW - 1, NOW - DAY, "250 ok")
    assert update(fresh, BOUNCE, "550 gone", NOW, T) == fresh
    expired = Entry(OK, NOW - 1, NOW - 40 * DAY, "250 ok")
    assert update(expired, BOUNCE, "550 gone", NOW, T) == Entry(BOUNCE, 0, NOW, "550 gone")


def test_negative_cache_off_stores_no_negative_result() -> None:
    t = Timing(T.positive_expire, T.positive_refresh, T.negative_expire, T.negative_refresh,
               negative_cache=False)
    assert update(None, BOUNCE, "550", NOW, t) is None
    assert update(None, DEFER, "refused", NOW, t) is None
    assert update(None, OK, "250", NOW, t) == Entry(OK, 0, NOW, "250")


def test_cleanup_keeps_expired_ok_records_that_are_still_asked_for() -> None:
    asked = Entry(OK, NOW - 5 * DAY, NOW - 40 * DAY, "250")
    assert purgeable(asked, NOW, T) is False
    forgotten = Entry(OK, NOW - 35 * DAY, NOW - 40 * DAY, "250")
    assert purgeable(forgotten, NOW, T) is True
    assert purgeable(Entry(BOUNCE, 0, NOW - 4 * DAY, "550"), NOW, T) is True
    assert purgeable(Entry(BOUNCE, 0, NOW - 2 * DAY, "550"), NOW, T) is False
    assert purgeable(Entry(BOUNCE, NOW - 10, NOW - 4 * DAY, "550"), NOW, T) is False
