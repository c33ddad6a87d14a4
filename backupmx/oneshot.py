"""Queue work without a running server: one delivery round straight from the spool."""

from __future__ import annotations

import asyncio

from backupmx import config, services
from backupmx.server import Server, configure_logging


def flush(cfg: config.Config, domain: str | None) -> int:
    """Attempt delivery of the queued mail (of one domain) now, then return."""

    async def go() -> None:
        svc = services.build(cfg)
        configure_logging(cfg)
        server = Server(cfg, svc)
        server.spool.open()
        try:
            server.qmgr.load(server.spool.envelopes())
            task = asyncio.create_task(server.qmgr.run())
            await server.qmgr.flush(domain)
            await server.qmgr.stop(30)
            task.cancel()
        finally:
            server.spool.close()

    asyncio.run(go())
    return 0
