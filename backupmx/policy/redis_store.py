"""Greylist records in a Redis that several nodes share.

A hash per triplet, ``backupmx:greylist:triplet:<key>`` (``first``, ``last``), and
per auto-whitelisted client, ``backupmx:greylist:client:<ip>`` (``count``,
``last``): the columns of the SQLite tables, as decimal text.  Old records go by
the store's own hourly purge, as with SQLite, so the rules stay the same; each
batch is checked and deleted in one Lua script, atomically, so a purge on one node
never deletes a triplet that another node has just renewed.
"""

from __future__ import annotations

import redis
from redis.commands.core import Script
from redis.typing import EncodableT

from backupmx.policy.store import Client, Triplet
from backupmx.redisstore import SCAN_BATCH, Link, RedisUrl

TRIPLET = "backupmx:greylist:triplet:"
CLIENT = "backupmx:greylist:client:"

# ARGV: last seen before this is too old; a never-passed triplet (last - first < delay)
# seen last before ARGV[3] is past its retry window.  Malformed records go too.
_PURGE_TRIPLETS = """
local n = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'first', 'last')
  local first, last = tonumber(v[1]), tonumber(v[2])
  if not first or not last or last < tonumber(ARGV[1])
     or (last - first < tonumber(ARGV[2]) and last < tonumber(ARGV[3])) then
    n = n + redis.call('DEL', key)
  end
end
return n
"""
_PURGE_CLIENTS = """
local n = 0
for _, key in ipairs(KEYS) do
  local last = tonumber(redis.call('HGET', key, 'last'))
  if not last or last < tonumber(ARGV[1]) then
    n = n + redis.call('DEL', key)
  end
end
return n
"""


def _float(value: object) -> float | None:
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


class RedisTables:
    def __init__(self, url: RedisUrl) -> None:
        self.link = Link(url)
        self._purge_triplets = self.link.client.register_script(_PURGE_TRIPLETS)
        self._purge_clients = self.link.client.register_script(_PURGE_CLIENTS)

    def triplet(self, key: str) -> Triplet | None:
        first, last = self.link.run(lambda r: r.hmget(TRIPLET + key, ["first", "last"]))
        f, la = _float(first), _float(last)
        return None if f is None or la is None else Triplet(f, la)

    def put_triplet(self, key: str, t: Triplet) -> None:
        fields: dict[EncodableT, EncodableT] = {"first": repr(float(t.first)),
                                                "last": repr(float(t.last))}
        self.link.run(lambda r: r.hset(TRIPLET + key, mapping=fields))

    def client(self, ip: str) -> Client | None:
        count, last = self.link.run(lambda r: r.hmget(CLIENT + ip, ["count", "last"]))
        la = _float(last)
        if la is None or not isinstance(count, str) or not count.isdigit():
            return None
        return Client(int(count), la)

    def put_client(self, ip: str, c: Client) -> None:
        fields: dict[EncodableT, EncodableT] = {"count": str(int(c.count)),
                                                "last": repr(float(c.last))}
        self.link.run(lambda r: r.hset(CLIENT + ip, mapping=fields))

    def purge(self, now: float, max_age: float, delay: float, retry_window: float) -> int:
        args = [repr(float(now - max_age)), repr(float(delay)), repr(float(now - retry_window))]
        return (self._purge(TRIPLET, self._purge_triplets, args)
                + self._purge(CLIENT, self._purge_clients, args[:1]))

    def _purge(self, prefix: str, script: Script, args: list[str]) -> int:
        keys = self.link.keys(prefix)
        n = 0
        for i in range(0, len(keys), SCAN_BATCH):
            batch = keys[i:i + SCAN_BATCH]

            def run(r: redis.Redis, batch: list[str] = batch) -> int:
                return int(script(keys=batch, args=args, client=r))

            n += self.link.run(run)
        return n

    def close(self) -> None:
        self.link.close()
