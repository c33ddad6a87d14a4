"""The Redis backends of the verify cache and the greylist store, against a real redis-server."""

from __future__ import annotations

import time

import pytest
import redis

from backupmx.policy.greylist import GreylistSettings, decide, new_recent
from backupmx.policy.store import Client, GreylistStore, Triplet
from backupmx.redisstore import HOLD, StoreUnavailable
from backupmx.verify.cache import Store
from backupmx.verify.decide import BOUNCE, OK, Entry
from tests.peers.redis import RedisServer

T0 = 1_700_000_000
S = GreylistSettings(delay=300, hostname="mx1.tachtler.net", auto_whitelist=2)


def raw(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, db=0, decode_responses=True)


def req(rcpt: str = "bob@nausch.org") -> dict[str, str]:
    return {"request": "smtpd_access_policy", "client_address": "198.51.100.7",
            "client_name": "mail.sender.example", "sender": "alice@sender.example",
            "recipient": rcpt, "instance": "i1"}


def test_verify_records_are_hashes_with_the_sqlite_columns(redis_server: RedisServer) -> None:
    s = Store(redis_server.url)
    s.put("Alice@nausch.org", Entry(OK, 0, 100.5, "250 2.1.5 Ok\x01"))
    assert raw(redis_server).hgetall("backupmx:verify:Alice@nausch.org") == {
        "status": "0", "probed": "0.0", "updated": "100.5", "text": "250 2.1.5 Ok?"}
    other = Store(redis_server.url)
    assert other.get("Alice@nausch.org") == Entry(OK, 0.0, 100.5, "250 2.1.5 Ok?")
    assert other.get("alice@nausch.org") is None  # case-sensitive, as in Postfix
    s.put("nobody@nausch.org", Entry(BOUNCE, 3, 200, "550 no"))
    assert sorted(other.items()) == [
        ("Alice@nausch.org", Entry(OK, 0.0, 100.5, "250 2.1.5 Ok?")),
        ("nobody@nausch.org", Entry(BOUNCE, 3.0, 200.0, "550 no")),
    ]
    other.delete("nobody@nausch.org")
    assert raw(redis_server).exists("backupmx:verify:nobody@nausch.org") == 0
    s.close()
    other.close()


def test_a_miss_is_not_mirrored_so_another_nodes_record_is_seen(redis_server: RedisServer) -> None:
    a, b = Store(redis_server.url), Store(redis_server.url)
    assert b.get("carol@nausch.org") is None
    a.put("carol@nausch.org", Entry(OK, 0, 5, "250 ok"))
    assert b.get("carol@nausch.org") == Entry(OK, 0.0, 5.0, "250 ok")
    # a record b has seen is answered from b's mirror until b refreshes it
    a.put("carol@nausch.org", Entry(BOUNCE, 0, 6, "550 gone"))
    assert b.get("carol@nausch.org") == Entry(OK, 0.0, 5.0, "250 ok")
    assert Store(redis_server.url).get("carol@nausch.org") == Entry(BOUNCE, 0.0, 6.0, "550 gone")


def test_malformed_verify_records_count_as_none(redis_server: RedisServer) -> None:
    r = raw(redis_server)
    r.hset("backupmx:verify:a@x", mapping={"status": "9", "probed": "0", "updated": "0",
                                           "text": "junk"})
    r.hset("backupmx:verify:b@x", mapping={"status": "0", "probed": "zero", "updated": "0",
                                           "text": "junk"})
    r.hset("backupmx:verify:c@x", mapping={"status": "0"})
    r.set("backupmx:verify:d@x", "not a hash")
    s = Store(redis_server.url)
    assert [s.get(a) for a in ("a@x", "b@x", "c@x")] == [None, None, None]
    with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
        s.get("d@x")
    r.delete("backupmx:verify:d@x")
    assert list(s.items()) == []


def test_greylist_over_redis_decides_as_over_sqlite(redis_server: RedisServer) -> None:
    st = GreylistStore(redis_server.url)
    assert decide(req(), st, S, T0, new_recent()).reason == "new"
    key = "198.51.100.0/alice@sender.example/bob@nausch.org"
    assert raw(redis_server).hgetall(f"backupmx:greylist:triplet:{key}") == {
        "first": "1700000000.0", "last": "1700000000.0"}
    other = GreylistStore(redis_server.url)  # another node
    assert decide(req(), other, S, T0 + 100, new_recent()).reason == "early-retry (200s missing)"
    assert decide(req(), other, S, T0 + 300, new_recent()).reason == "triplet found, delay=300"
    assert st.triplet(key) == Triplet(float(T0), float(T0 + 300))
    assert st.client("198.51.100.7") == Client(1, float(T0 + 300))
    assert raw(redis_server).hgetall("backupmx:greylist:client:198.51.100.7") == {
        "count": "1", "last": "1700000300.0"}
    st.close()
    other.close()


def test_greylist_purge_over_redis_counts_as_over_sqlite(redis_server: RedisServer) -> None:
    st = GreylistStore(redis_server.url)
    decide(req(), st, S, T0, new_recent())
    assert decide(req(), st, S, T0 + 300, new_recent()).verdict == "pass"
    decide(req(rcpt="never@nausch.org"), st, S, T0, new_recent())
    raw(redis_server).hset("backupmx:greylist:triplet:broken", mapping={"first": "x"})
    assert st.purge(T0 + S.retry_window + 10, S.max_age, S.delay, S.retry_window) == 2
    assert st.triplet("198.51.100.0/alice@sender.example/never@nausch.org") is None
    assert st.purge(T0 + S.max_age + 400, S.max_age, S.delay, S.retry_window) == 2
    assert raw(redis_server).keys("backupmx:*") == []


def test_a_redis_that_is_down_is_a_quick_oserror_then_recovers(redis_server: RedisServer) -> None:
    s, st = Store(redis_server.url), GreylistStore(redis_server.url)
    s.put("a@x", Entry(OK, 0, 1, "250"))
    redis_server.stop()
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=rf"^redis://127\.0\.0\.1:{redis_server.port}/0: "):
        s.get("b@x")
    with pytest.raises(OSError):
        st.triplet("k")
    with pytest.raises(StoreUnavailable, match=r"Connection refused\. \(not retried for 2s\)$"):
        s.get("c@x")  # refused at once: no connection attempt within HOLD
    assert time.monotonic() - start < HOLD
    assert s.get("a@x") == Entry(OK, 0.0, 1.0, "250")  # the node's own mirror
    redis_server.start()
    time.sleep(HOLD + 0.2)
    assert s.get("b@x") is None
    st.put_triplet("k", Triplet(1, 2))
    assert st.triplet("k") == Triplet(1.0, 2.0)
