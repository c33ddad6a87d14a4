"""The queue manager: decisions (``core``) behind ports (``ports``), wired here.

``build`` gives the queue manager the parts it uses -- the spool, the deliverer, the
bouncer, the health probe, the quarantine alert and the policy of the running
configuration -- instead of the whole server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from backupmx.qmgr.core import Policy
from backupmx.qmgr.delivery import SmtpDeliverer
from backupmx.qmgr.manager import Qmgr
from backupmx.qmgr.notify import DsnBouncer
from backupmx.qmgr.probe import GreetingProbe
from backupmx.qmgr.quarantine import LogAlert
from backupmx.smtp.client import ConnectionPool
from backupmx.verify import learn

if TYPE_CHECKING:
    from backupmx.queue.store import Spool
    from backupmx.services import Services

__all__ = ["Policy", "Qmgr", "build"]


def build(spool: Spool, services: Callable[[], Services], port: Callable[[], int]) -> Qmgr:
    """The queue manager of a server: ``services`` and ``port`` give the current ones."""
    cached: list[tuple[Services, Policy]] = []

    def policy() -> Policy:
        svc = services()
        if not cached or cached[0][0] is not svc:
            cached[:] = [(svc, Policy.from_config(svc.cfg))]
        return cached[0][1]

    pool = ConnectionPool()
    return Qmgr(
        spool,
        SmtpDeliverer(services, port, pool),
        DsnBouncer(spool, lambda: services().cfg),
        GreetingProbe(),
        policy,
        pool=pool,
        alert=LogAlert(),
        learn=lambda rcpts, outcomes: learn.from_delivery(services(), rcpts, outcomes),
    )
