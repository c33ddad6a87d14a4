"""Fill a backupmx spool directly (for the large-queue figure), with group commit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from backupmx.envelope import Envelope, Recipient
from backupmx.queue.ids import new_id
from backupmx.queue.store import Spool


def seed_spool(directory: Path, n: int, size: int, sender: str, rcpt: str) -> None:
    """n deferred messages of ``size`` bytes, as if the primary had been down."""
    body = b"Subject: queued\r\n\r\n" + (b"x" * 76 + b"\r\n") * (size // 78)

    async def go() -> None:
        spool = Spool(str(directory))
        spool.open()
        now = time.time()
        try:
            for start in range(0, n, 1000):
                batch = []
                for _ in range(min(1000, n - start)):
                    env = Envelope(id=new_id(), sender=sender, arrival=now, size=len(body),
                                   recipients=[Recipient(rcpt, state="deferred", attempts=1,
                                                         last_reply="connect to primary: "
                                                         "Connection refused",
                                                         next_attempt=now + 3600)])
                    batch.append(spool.commit(env, body))
                await asyncio.gather(*batch)
        finally:
            spool.close()

    asyncio.run(go())
