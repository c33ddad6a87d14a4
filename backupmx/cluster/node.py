"""This node in the cluster: its shared anvil counts and the record it publishes.

A run of a node has a random boot id beside its name (keys.py), so that the sessions
counted by a killed run stop counting once its live key expires, whatever the next run
does.  Publishing goes on when Redis fails: the failure is logged once, and the next
record that goes through is logged as the return.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from backupmx import __version__
from backupmx.cluster import PARAM, keys, registry
from backupmx.cluster.counts import SharedCounts
from backupmx.config import Config
from backupmx.log import log
from backupmx.queue.listing import iso_utc
from backupmx.redisstore import Link, StoreUnavailable, parse_url


class Node:
    def __init__(self, url: str, name: str) -> None:
        self.url = str(parse_url(url))
        self.name = name
        self.link = Link(parse_url(url))
        self.run_id = keys.run_id(name, secrets.token_hex(4))
        self.counts = SharedCounts(self.link, self.run_id)
        self.started = time.time()
        self._failing = False

    @classmethod
    def configured(cls, cfg: Config) -> Node | None:
        url = cfg.str(PARAM)
        return cls(url, cfg.str("cluster_node_name")) if url else None

    def same(self, cfg: Config) -> bool:
        """Whether ``cfg`` names this node in this store (a reload that changes neither)."""
        url = cfg.str(PARAM)
        return bool(url) and str(parse_url(url)) == self.url \
            and cfg.str("cluster_node_name") == self.name

    def record(self, status: dict[str, Any], sessions: int, listen: list[str],
               queue_directory: str, state: str = "running") -> dict[str, Any]:
        return {"node": self.name, "run": self.run_id, "version": __version__,
                "host": socket.gethostname(), "pid": os.getpid(),
                "queue_directory": queue_directory, "listen": listen,
                "started": iso_utc(self.started), "published": time.time(),
                "state": state, "sessions": sessions, **registry.summary(status)}

    def clash(self, queue_directory: str) -> str | None:
        """A warning when another live node publishes under this node's name."""
        try:
            other = registry.read(self.link, self.name)
        except StoreUnavailable:
            return None
        if other is None or other["status"] != "up":
            return None
        if (other["host"], other["queue_directory"]) == (socket.gethostname(), queue_directory):
            return None  # this node's previous run, killed moments ago
        return (f"cluster_node_name {self.name} is also used by the node on {other['host']} "
                f"(queue {other['queue_directory']}): give each node its own name")

    def publish(self, record: dict[str, Any], interval: float) -> None:
        """Write the record; a Redis failure is logged once per outage, never raised."""
        try:
            registry.write(self.link, record, interval, live=record["state"] == "running")
        except StoreUnavailable as e:
            if not self._failing:
                log.warning("cluster", f"cannot publish node {self.name}: {e}")
            self._failing = True
            return
        if self._failing:
            log.info("cluster", f"node {self.name} publishes to {self.url} again")
        self._failing = False

    async def run(self, record: Callable[[], dict[str, Any]],
                  interval: Callable[[], float]) -> None:
        """Until cancelled: publish every ``interval()`` seconds (read anew each time)."""
        while True:
            every = interval()
            self.publish(record(), every)
            await asyncio.sleep(every)

    def close(self) -> None:
        self.link.close()
