"""redis:// store URLs: what `check` accepts, and the exact complaint for what it refuses."""

from __future__ import annotations

import pytest

from backupmx.policy.store import StoreSpecError, store_path
from backupmx.redisstore import RedisUrl, is_redis, parse_url
from backupmx.verify.cache import map_path


@pytest.mark.parametrize(("spec", "url"), [
    ("redis://127.0.0.1:6380/2", RedisUrl("127.0.0.1", 6380, 2)),
    ("redis://redis.example.net:6379/0", RedisUrl("redis.example.net", 6379, 0)),
    ("REDIS://Cache-1.example:7000/15", RedisUrl("Cache-1.example", 7000, 15)),
    ("redis://[::1]:6379/3", RedisUrl("::1", 6379, 3)),
    ("redis://localhost", RedisUrl("localhost", 6379, 0)),
    ("redis://localhost:1", RedisUrl("localhost", 1, 0)),
    ("redis://[::1]/1", RedisUrl("::1", 6379, 1)),
    ("  redis://127.0.0.1:65535/0  ", RedisUrl("127.0.0.1", 65535, 0)),
])
def test_valid_urls(spec: str, url: RedisUrl) -> None:
    assert parse_url(spec) == url


def test_normal_form() -> None:
    assert str(RedisUrl("::1", 6379, 3)) == "redis://[::1]:6379/3"
    assert str(parse_url("REDIS://localhost")) == "redis://localhost:6379/0"


@pytest.mark.parametrize(("spec", "why"), [
    ("redis://127.0.0.1:0/0", "bad port '0': a number from 1 to 65535"),
    ("redis://127.0.0.1:65536/0", "bad port '65536': a number from 1 to 65535"),
    ("redis://127.0.0.1:/0", "bad port '': a number from 1 to 65535"),
    ("redis://127.0.0.1:x/0", "bad port 'x': a number from 1 to 65535"),
    ("redis://127.0.0.1:6379/", "bad database number '': 0, 1, 2, ..."),
    ("redis://127.0.0.1:6379/-1", "bad database number '-1': 0, 1, 2, ..."),
    ("redis://127.0.0.1:6379/a", "bad database number 'a': 0, 1, 2, ..."),
    ("redis://127.0.0.1:6379/0/1", "bad database number '0/1': 0, 1, 2, ..."),
    ("redis://127.0.0.1:6379/\u00b2", "bad database number '\u00b2': 0, 1, 2, ..."),
    ("redis://127.0.0.1:1234567890/0", "bad port '1234567890': a number from 1 to 65535"),
    ("redis://:6379/0", "the host is missing"),
    ("redis://bad_host:6379/0", "bad host name 'bad_host'"),
    ("redis://::1:6379/0", "an IPv6 address must be written in brackets"),
    ("redis://[::1:6379/0", "unclosed or malformed [IPv6] address"),
    ("redis://[::1]x/0", "unclosed or malformed [IPv6] address"),
    ("redis://[zz::1]:6379/0", "bad IPv6 address 'zz::1'"),
    ("redis://:secret@127.0.0.1:6379/0", "user names, passwords and options are not supported"),
    ("redis://127.0.0.1:6379/0?timeout=1", "user names, passwords and options are not supported"),
    ("rediss://127.0.0.1:6379/0", "not a redis:// URL"),
])
def test_invalid_urls_say_what_is_wrong(spec: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_url(spec)
    assert str(err.value) == f"{spec.strip()}: {why} (expected redis://HOST:PORT/DB)"


def test_is_redis() -> None:
    assert is_redis(" Redis://x") is True
    assert is_redis("btree:/var/lib/redis://x") is False


def test_verify_map_and_greylist_store_take_redis_urls() -> None:
    assert map_path("redis://127.0.0.1:6379/1") == "redis://127.0.0.1:6379/1"
    assert map_path("redis://localhost") == "redis://localhost:6379/0"
    assert store_path("redis://[::1]:7000/4") == "redis://[::1]:7000/4"


def test_bad_urls_name_the_parameter() -> None:
    with pytest.raises(ValueError) as err:
        map_path("redis://h:6379/x")
    assert str(err.value) == ("address_verify_map: redis://h:6379/x: bad database number 'x': "
                              "0, 1, 2, ... (expected redis://HOST:PORT/DB)")
    with pytest.raises(StoreSpecError) as gerr:
        store_path("redis://h:99999/0")
    assert str(gerr.value) == ("greylist_store: redis://h:99999/0: bad port '99999': a number "
                               "from 1 to 65535 (expected redis://HOST:PORT/DB)")
