"""Verification records in a Redis that several nodes share.

One hash per address, ``backupmx:verify:<address>``, with the fields of the SQLite
table (``status``, ``probed``, ``updated``, ``text``) as decimal text and UTF-8, so
a record means the same in either store.  Records expire by the cache's own
cleanup (Verifier._cleanup_loop), which every node runs: its rule depends on the
configuration, and an expired OK record that is still asked for must stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from redis.typing import EncodableT

from backupmx.redisstore import Link, RedisUrl
from backupmx.verify.decide import Entry

PREFIX = "backupmx:verify:"
FIELDS = ("status", "probed", "updated", "text")


def encode(entry: Entry) -> dict[EncodableT, EncodableT]:
    return {"status": str(entry.status), "probed": repr(float(entry.probed)),
            "updated": repr(float(entry.updated)), "text": entry.text}


def decode(values: list[Any]) -> Entry | None:
    """The record of the four fields' values; None when missing or malformed."""
    status, probed, updated, text = values
    if status not in ("0", "1", "2", "3") or probed is None or updated is None or text is None:
        return None
    try:
        return Entry(int(status), float(probed), float(updated), str(text))
    except ValueError:
        return None


class RedisRecords:
    shared = True

    def __init__(self, url: RedisUrl) -> None:
        self.link = Link(url)

    def get(self, address: str) -> Entry | None:
        return decode(self.link.run(lambda r: r.hmget(PREFIX + address, list(FIELDS))))

    def put(self, address: str, entry: Entry) -> None:
        self.link.run(lambda r: r.hset(PREFIX + address, mapping=encode(entry)))

    def delete(self, address: str) -> None:
        self.link.run(lambda r: r.delete(PREFIX + address))

    def items(self) -> Iterator[tuple[str, Entry]]:
        for address, values in self.link.hashes(PREFIX, FIELDS):
            entry = decode(values)
            if entry is not None:
                yield address, entry

    def close(self) -> None:
        self.link.close()
