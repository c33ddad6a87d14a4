"""What a delivery teaches the verify cache: the primary's RCPT reply is a probe's answer.

A delivery to the primary asks the same question as a probe (``RCPT TO``) of the
same server, so its answer refreshes the recipient's record as a probe's would
(backupmx/verify/decide.py ``update``, with its optimism for a fresh deliverable
record).  Only when the cache is in use (``reject_unverified_recipient`` is in the
restriction lists) and the delivery goes where a probe would go (the probe's
transport_maps and relayhost are the delivery's).  Nothing is logged per
recipient; the verifier counts what it learned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupmx.envelope import Recipient
from backupmx.outcome import Outcome
from backupmx.verify.decide import BOUNCE, OK, Timing

if TYPE_CHECKING:
    from backupmx.config import Config
    from backupmx.services import Services

RESTRICTION = "reject_unverified_recipient"


def lesson(outcome: Outcome) -> int | None:
    """OK for a 2xx to RCPT, BOUNCE for a 5xx to RCPT, None when RCPT said neither."""
    if outcome.relay is None:
        return None
    if outcome.rcpt // 100 == 2:
        return OK
    if outcome.rcpt // 100 == 5:
        return BOUNCE
    return None


def text_of(status: int, outcome: Outcome) -> str:
    """The record's reason: the refusal as a probe records it, or who accepted."""
    if status == BOUNCE:
        return outcome.text
    return f"{outcome.relay} accepted the recipient in a delivery"


def same_route(cfg: Config) -> bool:
    """Would a probe go where the delivery went?"""
    return (cfg.list("address_verify_transport_maps") == cfg.list("transport_maps")
            and cfg.list("address_verify_relayhost") == cfg.list("relayhost"))


def in_use(svc: Services) -> bool:
    return any(RESTRICTION in rlist.names() for _, rlist in svc.rcpt_lists())


def from_delivery(svc: Services, rcpts: list[Recipient], outcomes: list[Outcome]) -> None:
    """Store what the RCPT replies of one delivery said about each recipient."""
    if not in_use(svc) or not same_route(svc.cfg):
        return
    t = Timing.from_cfg(svc.cfg)
    for r, o in zip(rcpts, outcomes, strict=True):
        status = lesson(o)
        if status is not None:
            svc.verifier.learn(r.address, status, text_of(status, o), t)
