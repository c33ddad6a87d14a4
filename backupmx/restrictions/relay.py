"""Relay authorization: mynetworks, authorised destinations and the backup-MX rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupmx.dns import DnsTempError
from backupmx.reply import Reply, make_reply
from backupmx.restrictions.engine import (
    DUNNO_V,
    PERMIT_V,
    REJECT,
    Context,
    EvalState,
    Verdict,
    restriction,
)

if TYPE_CHECKING:
    from backupmx.services import Services


@restriction("permit_mynetworks")
async def permit_mynetworks(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    return PERMIT_V if svc.mynetworks.match(ctx.client_ip, ctx.client_name) else DUNNO_V


def auth_destination(ctx: Context, svc: Services) -> bool | None:
    """permit_auth_destination's test; None when the recipient is sender-routed."""
    if ctx.recipient is None:
        return False
    res = svc.resolve(ctx.recipient)
    if not res.domain:
        return True
    if res.routed and not svc.cfg.bool("allow_untrusted_routing"):
        return None
    return res.local or svc.relay_domains.match(res.domain)


@restriction("permit_auth_destination")
async def permit_auth_destination(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.recipient is None:
        return DUNNO_V
    return PERMIT_V if auth_destination(ctx, svc) else DUNNO_V


def _relay_denied(ctx: Context, code: int) -> Verdict:
    return Verdict(REJECT, make_reply(code, "5.7.1", f"<{ctx.recipient}>: Relay access denied"))


@restriction("reject_unauth_destination")
async def reject_unauth_destination(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.recipient is None or auth_destination(ctx, svc):
        return DUNNO_V
    return _relay_denied(ctx, svc.cfg.int("relay_domains_reject_code"))


@restriction("defer_unauth_destination")
async def defer_unauth_destination(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.recipient is None or auth_destination(ctx, svc):
        return DUNNO_V
    return _relay_denied(ctx, svc.cfg.int("relay_domains_reject_code") - 100)


def _rcpt_defer(ctx: Context, text: str) -> Reply:
    return Reply(450, "4.4.4", f"<{ctx.recipient}>: Recipient address rejected: {text}")


async def _is_myself(name: str, ctx: Context, svc: Services, st: EvalState) -> bool:
    """Is MX host ``name`` this host?  By name (mydestination) or by address."""
    if svc.mydestination.match(name):
        return True
    try:
        addrs = await svc.resolver.addresses(name)
    except DnsTempError as e:
        st.set_defer_if_reject(
            _rcpt_defer(ctx, f"Unable to look up mail exchanger host {name}: {e}")
        )
        return False
    if not addrs:
        st.set_defer_if_reject(
            _rcpt_defer(ctx, f"Unable to look up mail exchanger host {name}: Host not found")
        )
        return False
    return any(svc.is_own_ip(a) for a in addrs)


@restriction("permit_mx_backup")
async def permit_mx_backup(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    """Accept when this host is a listed MX that is not the best one (spec §4)."""
    if ctx.recipient is None:
        return DUNNO_V
    res = svc.resolve(ctx.recipient)
    if not res.domain:
        return PERMIT_V
    if res.routed and not svc.cfg.bool("allow_untrusted_routing"):
        return DUNNO_V
    if res.local or svc.relay_domains.match(res.domain):
        return PERMIT_V
    if res.domain.startswith("["):
        return DUNNO_V
    try:
        mxs = await svc.resolver.mx(res.domain)
    except DnsTempError as e:
        st.set_defer_if_reject(
            _rcpt_defer(ctx, f"Unable to look up mail exchanger information: {e}")
        )
        return DUNNO_V
    if not mxs or any(not host for _, host in mxs):
        return DUNNO_V
    await svc.own_addresses()
    best = mxs[0][0]
    primary = [h for p, h in mxs if p == best]
    backup = [h for p, h in mxs if p != best]
    for host in primary:
        if await _is_myself(host, ctx, svc, st):
            return DUNNO_V
    found = False
    for host in backup:
        if await _is_myself(host, ctx, svc, st):
            found = True
            break
    if not found:
        return DUNNO_V
    if svc.mx_backup_networks is not None:
        for host in primary:
            try:
                addrs = await svc.resolver.addresses(host)
            except DnsTempError as e:
                st.set_defer_if_reject(
                    _rcpt_defer(ctx, f"Unable to look up host {host} as mail exchanger: {e}")
                )
                return DUNNO_V
            try:
                ok = bool(addrs) and all(svc.mx_backup_networks.match(a) for a in addrs)
            except Exception:
                st.set_defer_if_reject(
                    _rcpt_defer(ctx, f"Unable to verify host {host} as mail exchanger")
                )
                return DUNNO_V
            if not ok:
                return DUNNO_V
    return PERMIT_V

