"""``GET /metrics``: the master's counts, every worker's, and the server's state, as one.

The master asks each running smtpd worker for its registry when it is scraped, not
on a timer, so an idle server does no work for its metrics and a scrape sees counts
that are at most one channel round trip old.  A worker that does not answer within
:data:`WAIT` is represented by its previous answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from backupmx.metrics import instruments
from backupmx.metrics.merge import Sum
from backupmx.metrics.state import ServerState

if TYPE_CHECKING:
    from backupmx.server import Server

WAIT = 2.0  # seconds a scrape waits for the workers' answers
CONTENT_TYPE = CONTENT_TYPE_LATEST


def own() -> str:
    """This process's registry in the text format: a worker's answer to the master."""
    return generate_latest(instruments.REGISTRY).decode()


async def exposition(server: Server) -> str:
    total = Sum()
    total.add(instruments.REGISTRY.collect())
    if server.workers is not None:
        for text in await server.workers.metrics(WAIT):
            total.add_text(text)
        total.add(server.workers.retired.collect())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(total)
    registry.register(ServerState(server))
    return generate_latest(registry).decode()
