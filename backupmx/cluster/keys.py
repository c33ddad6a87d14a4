"""The Redis keys of the cluster, in one place: :mod:`.counts` and :mod:`.registry`
must agree on them, and an operator looking into the Redis finds them documented here.

- ``backupmx:node:NAME``: a node's published record (JSON), kept after it falls silent
  so that ``status --cluster`` can say since when; a new start replaces it.
- ``backupmx:live:NAME/BOOT``: exists while that run of the node publishes; it expires
  three publish intervals after the last one, and with it the run's connection counts.
- ``backupmx:anvil:conn:IP``: hash of ``NAME/BOOT`` to the open sessions of IP there.
- ``backupmx:anvil:rate:KIND:IP``: sorted set of KIND events (conn, mail, rcpt) of IP,
  scored by Redis's own clock in milliseconds, so that the nodes' clocks do not matter.
"""

from __future__ import annotations

PREFIX = "backupmx:"
NODE = PREFIX + "node:"
LIVE = PREFIX + "live:"
CONN = PREFIX + "anvil:conn:"
RATE = PREFIX + "anvil:rate:"


def run_id(node: str, boot: str) -> str:
    """One run of one node: a restarted node is a new run, its old counts are not its own."""
    return f"{node}/{boot}"
