"""The RCPT TO decision, the one the SMTP server and ``backupmx explain`` both make.

Postfix answers a recipient in this order: the address verification probe sender and
postmaster of this host are accepted before any restriction; then the client, HELO,
sender, relay and recipient lists run (restrictions/engine.py); then
``smtpd_reject_unlisted_recipient``; and an address of this host that is not
postmaster is unknown, as backupmx delivers nothing locally.  Last comes standby
(backupmx/standby.py): a recipient that would be accepted gets 450 while its domain's
primary is known healthy, so a relay attempt or an unknown user is still told so.
Keeping that order in one function is what lets ``explain`` print the reply the server
would send.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from backupmx import standby
from backupmx.cleanup.actions import MessageActions
from backupmx.reply import make_reply
from backupmx.restrictions.engine import REJECT, Context, EvalState, Verdict, evaluate
from backupmx.restrictions.verify import unlisted_recipient
from backupmx.verify.probe import probe_sender

if TYPE_CHECKING:
    from backupmx.services import Services

NO_ACTIONS = MessageActions()


@dataclass(frozen=True)
class RcptDecision:
    """A refusal (``verdict``), or acceptance with the address to queue (``keep``).

    ``keep`` is None for an accepted recipient that is not queued: the probe sender,
    whose mail is thrown away.  ``actions`` are the transaction's access actions
    (HOLD, DISCARD, ...) after this recipient's restrictions, for cleanup.
    ``standby`` marks the refusal of standby mode (counted per destination).
    """

    verdict: Verdict | None
    keep: str | None = None
    actions: MessageActions = NO_ACTIONS
    standby: bool = False


def postmaster(svc: Services, rcpt: str) -> str | None:
    """Where mail for postmaster of this host goes; None for any other address."""
    local, at, domain = rcpt.rpartition("@")
    if not at:
        local, domain = rcpt, ""
    if local.lower() != "postmaster":
        return None
    if domain and not (
        domain.lower() in (svc.cfg.str("myhostname").lower(), "localhost")
        or svc.is_local_domain(domain)
    ):
        return None
    return svc.cfg.str("postmaster_address")


def _note(trace: list[str] | None, text: str) -> None:
    if trace is not None:
        trace.append(text)


async def decide(
    ctx: Context, svc: Services, trace: list[str] | None = None,
    actions: MessageActions = NO_ACTIONS,
) -> RcptDecision:
    """Decide on ``ctx.recipient``; ``trace`` (explain) gets a line for every step.

    ``actions`` are the transaction's access actions so far; the decision carries them on.
    """
    rcpt = ctx.recipient
    assert rcpt is not None
    if rcpt.lower() == probe_sender(svc.cfg).lower():
        # Two verifying servers must never cache each other's probes as undeliverable.
        _note(trace, "address_verify_sender: accepted before any restriction, not queued")
        return RcptDecision(None, actions=actions)
    stored = postmaster(svc, rcpt)
    if stored is not None:
        _note(trace, f"postmaster of this host: accepted before any restriction, for <{stored}>")
        return RcptDecision(None, stored, actions)
    st = EvalState(trace=trace, actions=actions)
    verdict = await evaluate(svc.rcpt_lists(), ctx, svc, st)
    actions = st.actions
    if verdict is not None:
        return RcptDecision(verdict, actions=actions)
    if actions.discard:  # DISCARD accepts every recipient, known or not
        return RcptDecision(None, rcpt, actions)
    if svc.cfg.bool("smtpd_reject_unlisted_recipient"):
        _note(trace, "smtpd_reject_unlisted_recipient: relay_recipient_maps")
        verdict = await unlisted_recipient(ctx, svc)
        _note(trace, f"    => {verdict.kind} ({verdict.reply})" if verdict else "    => dunno")
        if verdict is not None:
            return RcptDecision(replace(verdict, by="smtpd_reject_unlisted_recipient"),
                                actions=actions)
    res = svc.resolve(rcpt)
    if res.local and not res.routed:
        _note(trace, "local recipient: backupmx delivers nothing on this host")
        return RcptDecision(Verdict(REJECT, make_reply(
            svc.cfg.int("unknown_local_recipient_reject_code"), "5.1.1",
            f"<{rcpt}>: Recipient address rejected: User unknown in local recipient table",
        ), by="local_recipient"), actions=actions)
    verdict = standby.check(ctx, svc, res.domain, trace)
    if verdict is not None:
        return RcptDecision(replace(verdict, by="standby_while_primary_up"), actions=actions,
                            standby=True)
    return RcptDecision(None, rcpt, actions)
