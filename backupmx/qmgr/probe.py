"""The health probe of a dead destination: does an SMTP server greet there?"""

from __future__ import annotations

import asyncio

from backupmx.smtp.nexthop import Server as Hop


async def greets(ip: str, port: int, timeout: float) -> bool:
    """Does an SMTP server answer with 220 there?  (A cheap health probe.)"""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.write(b"QUIT\r\n")
        return line.startswith(b"220")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


class GreetingProbe:
    """Knocks at the first two servers of a destination."""

    async def answering(self, servers: list[Hop], timeout: float) -> Hop | None:
        for srv in servers[:2]:
            if await greets(srv.ip, srv.port, timeout):
                return srv
        return None
