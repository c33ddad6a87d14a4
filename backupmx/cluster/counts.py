"""Per-client connection counts and request rates counted across the nodes in Redis.

Anvil (backupmx/anvil.py) keeps its own counts always and asks this module besides
when ``cluster_store`` is set; each question is one Lua script, atomic in Redis and
one round trip.  A session counts in the hash of its client under the node's run
(keys.py); the total sums only the runs whose live key exists, so the sessions of a
node that was killed stop counting once it has been silent for three publish
intervals, and are removed from the hash when next seen.  Rates are sliding windows
of ``anvil_rate_time_unit``, as the local ones are.  A Redis that does not answer
raises StoreUnavailable; anvil then counts on this node alone.
"""

from __future__ import annotations

import itertools

from backupmx.cluster import keys
from backupmx.redisstore import Link

#: how long a client's connection hash outlives its last change, so that an idle one
#: does not stay in Redis for ever; longer than any session lasts without a command
CONN_TTL_MS = 3600 * 1000

# KEYS[1] connection hash, KEYS[2] rate set or '' for none;
# ARGV: run id, live prefix, hash TTL ms, rate unit ms, rate member
_ADMIT = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  local run, n = all[i], tonumber(all[i + 1])
  if run == ARGV[1] or redis.call('EXISTS', ARGV[2] .. run) == 1 then
    total = total + n
  else
    redis.call('HDEL', KEYS[1], run)
  end
end
local rate = 0
if KEYS[2] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  rate = redis.call('ZCARD', KEYS[2])
end
return {total, rate}
"""

# KEYS[1] connection hash; ARGV[1] run id
_RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS[1] rate set; ARGV[1] unit ms, ARGV[2] member
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


class SharedCounts:
    """The counts of one node's run in the cluster's Redis."""

    def __init__(self, link: Link, run: str) -> None:
        self.link = link
        self.run = run
        self._seq = itertools.count()
        client = link.client
        self._admit = client.register_script(_ADMIT)
        self._release = client.register_script(_RELEASE)
        self._rate = client.register_script(_RATE)

    def _member(self) -> str:
        return f"{self.run}:{next(self._seq)}"

    def admit(self, ip: str, rate_unit: float | None) -> tuple[int, int]:
        """Count a new session of ``ip``: its open sessions on all live nodes, this one
        included, and (with ``rate_unit``) its connections within that unit."""
        rate_key = keys.RATE + "conn:" + ip if rate_unit else ""
        unit_ms = int((rate_unit or 0) * 1000)
        total, rate = self.link.run(lambda r: self._admit(
            keys=[keys.CONN + ip, rate_key],
            args=[self.run, keys.LIVE, CONN_TTL_MS, unit_ms, self._member()], client=r))
        return int(total), int(rate)

    def release(self, ip: str) -> None:
        self.link.run(lambda r: self._release(keys=[keys.CONN + ip], args=[self.run], client=r))

    def request(self, kind: str, ip: str, unit: float) -> int:
        """Count a ``kind`` request (anvil.REQUESTS) of ``ip``: how many within ``unit``."""
        return int(self.link.run(lambda r: self._rate(
            keys=[keys.RATE + f"{kind}:{ip}"], args=[int(unit * 1000), self._member()],
            client=r)))
