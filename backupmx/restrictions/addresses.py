"""Syntax and DNS checks of the client name, the HELO name and the envelope addresses.

Temporary DNS failures never permit: the domain checks defer (via
``*_tempfail_action``), the client-name checks answer 450 at once, as Postfix does.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING

from backupmx import addr
from backupmx.dns import DnsTempError
from backupmx.restrictions.access import access_reply, defer_if_permit, final_reply
from backupmx.restrictions.engine import (
    DUNNO_V,
    REJECT,
    Context,
    EvalState,
    Verdict,
    reject_reply,
    restriction,
)

if TYPE_CHECKING:
    from backupmx.services import Services

FOUND, NOT_FOUND, NULL_MX, TEMPFAIL = "found", "not found", "nullmx", "tempfail"


async def unverified_name(svc: Services, ip: str) -> str:
    """The client's PTR name without forward confirmation, or ``unknown``."""
    try:
        names = await asyncio.wait_for(svc.resolver.ptr(ip), 10)
    except (DnsTempError, TimeoutError):
        return "unknown"
    return names[0] if names else "unknown"


def _strip_dot(name: str) -> str:
    """One trailing dot is ignored (but not the dot of ``..``)."""
    return name[:-1] if name.endswith(".") and not name.endswith("..") else name


def _reject(ctx: Context, svc: Services, kind: str, code: int, dsn: str, text: str) -> Verdict:
    return Verdict(REJECT, access_reply(ctx, kind, code, dsn, text))


def _bad_literal(ctx: Context, svc: Services) -> Verdict:
    code = svc.cfg.int("invalid_hostname_reject_code")
    return _reject(ctx, svc, "helo", code, "5.5.2", "invalid ip address")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@restriction("reject_non_fqdn_sender")
async def reject_non_fqdn_sender(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if not ctx.sender or addr.is_fqdn(ctx.sender):
        return DUNNO_V
    code = svc.cfg.int("non_fqdn_reject_code")
    return _reject(ctx, svc, "sender", code, "5.5.2", "need fully-qualified address")


@restriction("reject_non_fqdn_recipient")
async def reject_non_fqdn_recipient(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.recipient is None or addr.is_fqdn(ctx.recipient):
        return DUNNO_V
    code = svc.cfg.int("non_fqdn_reject_code")
    return _reject(ctx, svc, "recipient", code, "5.5.2", "need fully-qualified address")


@restriction("reject_non_fqdn_helo_hostname")
async def reject_non_fqdn_helo_hostname(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if not ctx.helo:
        return DUNNO_V
    if ctx.helo.startswith("["):
        return DUNNO_V if addr.valid_address_literal(ctx.helo) else _bad_literal(ctx, svc)
    name = _strip_dot(ctx.helo)
    if addr.valid_hostname(name) and "." in name:
        return DUNNO_V
    code = svc.cfg.int("non_fqdn_reject_code")
    return _reject(ctx, svc, "helo", code, "5.5.2", "need fully-qualified hostname")


@restriction("reject_invalid_helo_hostname")
async def reject_invalid_helo_hostname(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if not ctx.helo:
        return DUNNO_V
    if ctx.helo.startswith("["):
        return DUNNO_V if addr.valid_address_literal(ctx.helo) else _bad_literal(ctx, svc)
    name = _strip_dot(ctx.helo)
    if addr.valid_hostname(name) or _is_ip(name):
        return DUNNO_V
    code = svc.cfg.int("invalid_hostname_reject_code")
    return _reject(ctx, svc, "helo", code, "5.5.2", "Invalid name")


async def mail_domain_status(svc: Services, domain: str) -> str:
    """Does a mail domain exist: MX, else A, else AAAA (the first positive answer wins)."""
    tempfail = False
    try:
        mxs = await svc.resolver.mx(domain)
    except DnsTempError:
        mxs, tempfail = [], True
    if mxs:
        return NULL_MX if mxs == [(0, "")] else FOUND
    for lookup in (svc.resolver.a, svc.resolver.aaaa):
        try:
            if await lookup(domain):
                return FOUND
        except DnsTempError:
            tempfail = True
    return TEMPFAIL if tempfail else NOT_FOUND


async def _unknown_domain(
    ctx: Context, svc: Services, st: EvalState, address: str, kind: str
) -> Verdict:
    res = svc.resolve(address)
    if not res.domain or res.local or res.domain.startswith("["):
        return DUNNO_V
    status = await mail_domain_status(svc, res.domain)
    if status == FOUND:
        return DUNNO_V
    sender = kind == "sender"
    if status == NULL_MX:
        code, dsn = (550, "5.7.27") if sender else (556, "5.1.10")
        return _reject(ctx, svc, kind, code, dsn,
                       f"Domain {res.domain} does not accept mail (nullMX)")
    dsn = "4.1.8" if sender else "4.1.2"
    if status == TEMPFAIL:
        reply = access_reply(ctx, kind, 450, dsn, "Domain not found")
        if svc.cfg.str("unknown_address_tempfail_action") == "defer":
            return Verdict(REJECT, reply)
        defer_if_permit(ctx, st, reply)
        return DUNNO_V
    code = svc.cfg.int("unknown_address_reject_code")
    return _reject(ctx, svc, kind, code, dsn, "Domain not found")


@restriction("reject_unknown_sender_domain")
async def reject_unknown_sender_domain(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if not ctx.sender:
        return DUNNO_V
    return await _unknown_domain(ctx, svc, st, ctx.sender, "sender")


@restriction("reject_unknown_recipient_domain")
async def reject_unknown_recipient_domain(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.recipient is None:
        return DUNNO_V
    return await _unknown_domain(ctx, svc, st, ctx.recipient, "recipient")


def _client_code(ctx: Context, svc: Services) -> int:
    """A name that failed temporarily always gets 450, else unknown_client_reject_code."""
    return 450 if ctx.client_name_status == "tempfail" else svc.cfg.int(
        "unknown_client_reject_code")


@restriction("reject_unknown_client_hostname")
async def reject_unknown_client_hostname(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.client_name != "unknown":
        return DUNNO_V
    text = f"Client host rejected: cannot find your hostname, [{ctx.client_ip}]"
    return Verdict(REJECT, final_reply(_client_code(ctx, svc), "4.7.25", text, "client"))


@restriction("reject_unknown_reverse_client_hostname")
async def reject_unknown_reverse_client_hostname(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if ctx.reverse_name != "unknown":
        return DUNNO_V
    text = f"Client host rejected: cannot find your reverse hostname, [{ctx.client_ip}]"
    return Verdict(REJECT, final_reply(_client_code(ctx, svc), "4.7.1", text, "client"))


async def _helo_status(svc: Services, name: str) -> str:
    """A HELO name exists when it has A, AAAA or MX records (a null MX counts)."""
    tempfail = False
    for lookup in (svc.resolver.a, svc.resolver.aaaa):
        try:
            if await lookup(name):
                return FOUND
        except DnsTempError:
            tempfail = True
    try:
        if await svc.resolver.mx(name):
            return FOUND
    except DnsTempError:
        tempfail = True
    return TEMPFAIL if tempfail else NOT_FOUND


@restriction("reject_unknown_helo_hostname")
async def reject_unknown_helo_hostname(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if not ctx.helo:
        return DUNNO_V
    if ctx.helo.startswith("["):
        return DUNNO_V if addr.valid_address_literal(ctx.helo) else _bad_literal(ctx, svc)
    name = _strip_dot(ctx.helo)
    if _is_ip(name) or not addr.valid_hostname(name):
        return DUNNO_V  # nothing to look up; reject_invalid_helo_hostname judges syntax
    status = await _helo_status(svc, name)
    if status == FOUND:
        return DUNNO_V
    if status == TEMPFAIL:
        reply = access_reply(ctx, "helo", 450, "4.7.1", "Host not found")
        if svc.cfg.str("unknown_helo_hostname_tempfail_action") == "defer":
            return Verdict(REJECT, reply)
        defer_if_permit(ctx, st, reply)
        return DUNNO_V
    code = svc.cfg.int("unknown_hostname_reject_code")
    return _reject(ctx, svc, "helo", code, "4.7.1", "Host not found")


@restriction("reject_unauth_pipelining")
async def reject_unauth_pipelining(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    if not ctx.illegal_pipelining:
        return DUNNO_V
    return Verdict(REJECT, reject_reply(ctx, 503, "5.5.0",
                                        "Improper use of SMTP command pipelining"))


@restriction("reject_multi_recipient_bounce")
async def reject_multi_recipient_bounce(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    # At RCPT the recipients accepted so far count; from DATA on the one being sent is too.
    limit = 1 if ctx.kind in ("data", "end_of_data") else 0
    if ctx.sender != "" or ctx.nrcpt <= limit:
        return DUNNO_V
    code = svc.cfg.int("multi_recipient_bounce_reject_code")
    return Verdict(REJECT, reject_reply(ctx, code, "5.5.3", "Multi-recipient bounce"))


def _validate_seconds(arg: str | None, svc: Services) -> None:
    if arg is None or not arg.isdigit():
        raise ValueError(f"sleep needs a number of seconds, got {arg!r}")


@restriction("sleep", takes_arg=True, validate=_validate_seconds)
async def sleep(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    await asyncio.sleep(int(arg or 0))
    return DUNNO_V

