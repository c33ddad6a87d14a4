"""Recipient and sender verification: reject_unverified_*, reject_unlisted_recipient.

``reject_unverified_recipient`` asks the verify service (backupmx/verify/) and maps
its answer to Postfix's replies (spec/address-verification.md §5).  It probes only
destinations this host would relay to -- relay_domains, or a domain for which
permit_mx_backup (when it is in the lists) would permit; for any other recipient
it answers DUNNO and leaves the refusal to the relay check, so a spammer naming
foreign domains never makes this host probe their MX hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupmx.log import log
from backupmx.maps import MapError
from backupmx.reply import Reply
from backupmx.restrictions.engine import (
    DUNNO_V,
    PERMIT,
    REJECT,
    Context,
    EvalState,
    Verdict,
    reject_reply,
    restriction,
    temp_error_reply,
)
from backupmx.restrictions.relay import auth_destination, permit_mx_backup
from backupmx.verify.decide import BOUNCE, OK
from backupmx.verify.service import Answer

if TYPE_CHECKING:
    from backupmx.services import Services

REASON_LIMIT = 250  # Postfix cuts the reason of a 4xx verification reply


def verify_reply(
    ctx: Context, kind: str, answer: Answer, reject_code: int, defer_code: int,
    reason: str, detail: str,
) -> Reply | None:
    """The reply for a verification answer; None when it lets the address pass.

    ``detail`` is the DSN detail (``1.1`` recipients, ``1.7`` senders); the DSN class
    follows the reply code, whatever the primary's own DSN was.
    """
    if answer.status == OK:
        return None
    code = reject_code if answer.status == BOUNCE else defer_code
    if code < 400:
        return None
    text = reason or answer.text
    if code >= 500:
        what = f"undeliverable address: {text}"
    else:
        what = f"unverified address: {text[:REASON_LIMIT]}"
    return reject_reply(ctx, code, f"{code // 100}.{detail}", what, kind)


def _tempfail(st: EvalState, reply: Reply, action: str) -> Verdict:
    """The 4xx path: defer_if_permit keeps evaluating; ``defer`` refuses now.

    After warn_if_reject the 4xx is returned too, so that the engine logs it as a
    reject_warning instead of deferring (restrictions.md §1.5).
    """
    if reply.permanent or action == "defer" or st.warning:
        return Verdict(REJECT, reply)
    st.set_defer_if_permit(reply)
    return DUNNO_V


# The parameters of reject_unverified_recipient and _sender: reject code, defer code,
# reject reason, tempfail action.
_PARAMS = {
    "recipient": ("unverified_recipient_reject_code", "unverified_recipient_defer_code",
                  "unverified_recipient_reject_reason", "unverified_recipient_tempfail_action"),
    "sender": ("unverified_sender_reject_code", "unverified_sender_defer_code",
               "unverified_sender_reject_reason", "unverified_sender_tempfail_action"),
}


async def _verify(
    ctx: Context, svc: Services, st: EvalState, address: str, kind: str
) -> Verdict:
    cfg = svc.cfg
    reject_code, defer_code, reject_reason, tempfail_action = _PARAMS[kind]
    detail = "1.7" if kind == "sender" else "1.1"
    wait = max(0, cfg.int("address_verify_poll_count") - 1) * cfg.time("address_verify_poll_delay")
    target = svc.resolve(address).address
    try:
        answer = await svc.verifier.query(address, target, svc, wait, kind == "recipient")
    except Exception as e:
        log.warning("verify", f"<{address}>: address verification problem: {e!r}")
        problem = reject_reply(ctx, 450, f"4.{detail}", "address verification problem", kind)
        return _tempfail(st, problem, cfg.str(tempfail_action))
    reply = verify_reply(
        ctx, kind, answer,
        cfg.int(reject_code), cfg.int(defer_code), cfg.str(reject_reason), detail,
    )
    if reply is None:
        return DUNNO_V
    return _tempfail(st, reply, cfg.str(tempfail_action))


async def would_relay(ctx: Context, svc: Services) -> bool:
    """Is the recipient one this host relays to: relay_domains or a backed-up domain?

    DNS trouble counts as "no": the relay check then gives the 4xx itself.
    """
    if ctx.recipient is None:
        return False
    res = svc.resolve(ctx.recipient)
    if not res.domain or res.local:
        return False
    if auth_destination(ctx, svc):
        return True
    names = set(svc.lists["relay"].names()) | set(svc.lists["recipient"].names())
    if "permit_mx_backup" not in names:
        return False
    return (await permit_mx_backup(ctx, svc, EvalState(), None)).kind == PERMIT


@restriction("reject_unverified_recipient")
async def reject_unverified_recipient(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.recipient is None:
        return DUNNO_V
    # A known user passes without the relay test: DUNNO leaves the relay decision to the
    # rest of the list anyway, and only what would lead to a probe or a refusal needs it.
    if svc.verifier.known_ok(ctx.recipient, svc) or not await would_relay(ctx, svc):
        return DUNNO_V
    return await _verify(ctx, svc, st, ctx.recipient, "recipient")


@restriction("reject_unverified_sender")
async def reject_unverified_sender(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    """Probe the sender's own MX; skipped for the null sender and this host's domains."""
    if not ctx.sender:
        return DUNNO_V
    res = svc.resolve(ctx.sender)
    if not res.domain or res.local or res.domain.startswith("["):
        return DUNNO_V
    return await _verify(ctx, svc, st, ctx.sender, "sender")


def relay_keys(address: str, delimiter: str) -> list[str]:
    """relay_recipient_maps keys: user@domain (also without +extension), then @domain."""
    local, _, domain = address.rpartition("@")
    keys = [f"{local}@{domain}".lower()]
    if delimiter:
        base = local
        for d in delimiter:
            base = base.split(d, 1)[0]
        if base and base != local:
            keys.append(f"{base}@{domain}".lower())
    keys.append(f"@{domain}".lower())
    return keys


@restriction("reject_unlisted_recipient")
async def reject_unlisted_recipient(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    """A relay_domains recipient must be in relay_recipient_maps (when that is set)."""
    if ctx.recipient is None:
        return DUNNO_V
    cfg = svc.cfg
    res = svc.resolve(ctx.recipient)
    tables = cfg.list("relay_recipient_maps")
    if not tables or not res.domain or res.local or res.routed:
        return DUNNO_V
    if not svc.relay_domains.match(res.domain):
        return DUNNO_V
    try:
        for spec in tables:
            table = svc.maps.get(spec)
            for key in relay_keys(res.address, cfg.str("recipient_delimiter")):
                if await table.lookup_async(key) is not None:
                    return DUNNO_V
    except MapError as e:
        log.warning("smtpd", f"relay_recipient_maps: lookup failed: {e}")
        return Verdict(REJECT, temp_error_reply(ctx))
    text = "User unknown"
    if cfg.bool("show_user_unknown_table_name"):
        text += " in relay recipient table"
    code = cfg.int("unknown_relay_recipient_reject_code")
    return Verdict(REJECT, reject_reply(ctx, code, f"{code // 100}.1.1", text, "recipient"))


async def unlisted_recipient(ctx: Context, svc: Services) -> Verdict | None:
    """smtpd_reject_unlisted_recipient: the check after lists that accepted (None: pass)."""
    v = await reject_unlisted_recipient(ctx, svc, EvalState(), None)
    return v if v.kind == REJECT else None
