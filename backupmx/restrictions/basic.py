"""Unconditional restrictions and the flag setters: permit, reject, defer, ..."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupmx.restrictions.engine import (
    DUNNO_V,
    PERMIT_V,
    REJECT,
    Context,
    EvalState,
    Verdict,
    reject_reply,
    restriction,
)

if TYPE_CHECKING:
    from backupmx.services import Services


@restriction("permit")
async def permit(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    return PERMIT_V


@restriction("reject")
async def reject(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    code = svc.cfg.int("reject_code")
    return Verdict(REJECT, reject_reply(ctx, code, "5.7.1", "Access denied"))


@restriction("defer")
async def defer(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    code = svc.cfg.int("defer_code")
    return Verdict(REJECT, reject_reply(ctx, code, "4.3.2", "Try again later"))


@restriction("defer_if_permit")
async def defer_if_permit(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    st.set_defer_if_permit(reject_reply(ctx, 450, "4.7.0", "defer_if_permit requested"))
    return DUNNO_V


@restriction("defer_if_reject")
async def defer_if_reject(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    st.set_defer_if_reject(reject_reply(ctx, 450, "4.7.0", "defer_if_reject requested"))
    return DUNNO_V


@restriction("warn_if_reject")
async def warn_if_reject(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    st.warn_next = True
    return DUNNO_V


@restriction("permit_sasl_authenticated")
async def permit_sasl_authenticated(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    # backupmx offers no AUTH: this never matches, as in Postfix with SASL off.
    return PERMIT_V if ctx.sasl_user else DUNNO_V
