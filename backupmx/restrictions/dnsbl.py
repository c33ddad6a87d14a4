"""DNS block lists: reject_rbl_client and the reject_rhsbl_* family.

Every reject_rbl_client zone of the configured lists is queried as soon as a
client connects (``prefetch``), all at once, so a RCPT waits for the slowest list
at most once; the answers live in the session's Context and in the resolver's
TTL cache.  A list that fails or does not answer counts as "not listed" (logged,
never a defer), exactly as Postfix treats it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backupmx import addr
from backupmx.dns import DnsTempError
from backupmx.log import log
from backupmx.maps import lookup_list
from backupmx.metrics import instruments
from backupmx.restrictions.access import CLASSES, final_reply
from backupmx.restrictions.engine import (
    CONFIG_ERROR,
    DUNNO_V,
    REJECT,
    Context,
    EvalState,
    Verdict,
    restriction,
)

if TYPE_CHECKING:
    from backupmx.services import Services

WAIT = 15.0  # upper bound on waiting for one list; the resolver's own limit is lower
TXT_LIMIT = 500
_OCTET_ITEM = re.compile(r"(\d{1,3})(?:\.\.(\d{1,3}))?\Z")


@dataclass(frozen=True)
class Answer:
    """A list's answer for one name: the A records (none = not listed) and the TXT reason."""

    addresses: tuple[str, ...] = ()
    txt: str = ""
    failed: bool = False  # no answer or a temporary error: counted as not listed


Filter = list[frozenset[int]]


def parse_filter(text: str) -> Filter:
    """``127.0.0.2``, ``127.0.0.[2..11]``, ``127.0.[0;1].[2..4]`` → one set per octet."""
    octets = text.split(".")
    # A bracket may hold ``a..b``, so split on the dots outside brackets.
    parts: list[str] = []
    for piece in octets:
        if parts and parts[-1].startswith("[") and not parts[-1].endswith("]"):
            parts[-1] += "." + piece
        else:
            parts.append(piece)
    if len(parts) != 4:
        raise ValueError(f"bad DNS list filter {text!r}: expected four octets")
    out: Filter = []
    for part in parts:
        items = part[1:-1].split(";") if part.startswith("[") and part.endswith("]") else [part]
        values: set[int] = set()
        for item in items:
            m = _OCTET_ITEM.match(item)
            if not m:
                raise ValueError(f"bad DNS list filter {text!r}: bad octet {item!r}")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) else lo
            if not 0 <= lo <= hi <= 255:
                raise ValueError(f"bad DNS list filter {text!r}: bad range {item!r}")
            values.update(range(lo, hi + 1))
        out.append(frozenset(values))
    return out


def filter_matches(flt: Filter, address: str) -> bool:
    try:
        octets = [int(x) for x in address.split(".")]
    except ValueError:
        return False
    return len(octets) == 4 and all(o in allowed for o, allowed in zip(octets, flt, strict=True))


def split_arg(arg: str) -> tuple[str, Filter | None]:
    """``zone[=filter]`` → (zone, filter or None); ValueError when malformed."""
    domain, sep, flt = arg.partition("=")
    domain = domain.rstrip(".").lower()
    if not addr.valid_hostname(domain):
        raise ValueError(f"bad DNS list domain {domain!r}")
    return domain, parse_filter(flt) if sep else None


def reversed_ip(ip: str) -> str:
    """``1.2.3.4`` → ``4.3.2.1``; IPv6 → its 32 nibbles, reversed and dot-separated."""
    pointer = ipaddress.ip_address(ip).reverse_pointer
    return pointer.rsplit(".", 2)[0]


async def _query(svc: Services, name: str) -> Answer:
    """A records of ``name`` and, when there are some, its TXT; failures = not listed."""
    try:
        found = await svc.resolver.a(name)
    except DnsTempError as e:
        log.warning("smtpd", f"DNS list lookup error for {name}: {e}; counted as not listed")
        return Answer(failed=True)
    if not found:
        return Answer()
    try:
        texts = await svc.resolver.txt(name)
    except DnsTempError:
        texts = []
    return Answer(tuple(found), " / ".join(texts)[:TXT_LIMIT])


def start(ctx: Context, svc: Services, name: str) -> asyncio.Task[Answer]:
    """The session's query for ``name``, started now unless it already runs."""
    task: asyncio.Task[Answer] | None = ctx.dnsbl.get(name)
    if task is None:
        task = asyncio.ensure_future(_query(svc, name))
        ctx.dnsbl[name] = task
    return task


def prefetch(ctx: Context, svc: Services) -> None:
    """Start the queries of every reject_rbl_client in the configured lists, at once."""
    for rlist in svc.lists.values():
        for step in rlist.steps:
            if step.name == "reject_rbl_client" and step.arg:
                try:
                    domain, _ = split_arg(step.arg)
                    start(ctx, svc, f"{reversed_ip(ctx.client_ip)}.{domain}")
                except ValueError:
                    continue


def cancel(ctx: Context) -> None:
    """Stop the queries nobody will read any more (the session ended)."""
    for task in ctx.dnsbl.values():
        task.cancel()


async def lookup(ctx: Context, svc: Services, st: EvalState, name: str) -> Answer:
    task = start(ctx, svc, name)
    try:
        answer = await asyncio.wait_for(asyncio.shield(task), WAIT)
    except TimeoutError:
        log.warning("smtpd", f"DNS list {name}: no answer in {WAIT:.0f}s; counted as not listed")
        answer = Answer(failed=True)
    if st.trace is not None:
        shown = ", ".join(answer.addresses) or "not listed"
        reason = f" TXT {answer.txt!r}" if answer.txt else ""
        st.trace.append(f"    DNS {name} A: {shown}{reason}")
    return answer


def _variables(ctx: Context, svc: Services, kind: str, what: str, domain: str,
               answer: Answer) -> dict[str, str]:
    def parts(address: str | None) -> tuple[str, str]:
        if not address:
            return "", ""
        local, at, dom = address.rpartition("@")
        return (local, dom) if at else (address, "")

    sender_name, sender_domain = parts(ctx.sender)
    rcpt_name, rcpt_domain = parts(ctx.recipient)
    return {
        "rbl_code": str(svc.cfg.int("maps_rbl_reject_code")),
        "rbl_class": CLASSES[kind][0],
        "rbl_what": what,
        "rbl_domain": domain,
        "rbl_reason": answer.txt,
        "rbl_txt": answer.txt,
        "client_address": ctx.client_ip,
        "client_name": ctx.client_name,
        "reverse_client_name": ctx.reverse_name,
        "helo_name": ctx.helo or "",
        "sender": ctx.sender or "",
        "sender_name": sender_name,
        "sender_domain": sender_domain,
        "recipient": ctx.recipient or "",
        "recipient_name": rcpt_name,
        "recipient_domain": rcpt_domain,
    }


def reply_template(svc: Services, arg: str, domain: str) -> str:
    """The rbl_reply_maps entry for ``zone=filter``, then for ``zone``, else the default."""
    tables = [svc.maps.get(spec) for spec in svc.cfg.list("rbl_reply_maps")]
    for key in dict.fromkeys((arg.lower(), domain)):
        found = lookup_list(tables, key)
        if found is not None:
            return found
    return svc.cfg.str("default_rbl_reply")


async def _check(ctx: Context, svc: Services, st: EvalState, arg: str, what: str,
                 name: str, kind: str) -> Verdict:
    """Query ``<name>.<zone>`` and reject with the list's reply when it is listed."""
    domain, flt = split_arg(arg)
    answer = await lookup(ctx, svc, st, f"{name}.{domain}")
    if answer.failed:
        instruments.DNSBL_ERRORS.labels(domain).inc()
    if not answer.addresses or flt is not None and not any(
            filter_matches(flt, a) for a in answer.addresses):
        return DUNNO_V
    instruments.DNSBL_HITS.labels(domain).inc()
    text = svc.cfg.expand(reply_template(svc, arg, domain),
                          _variables(ctx, svc, kind, what, domain, answer))
    code, _, rest = text.strip().partition(" ")
    if not (code.isdigit() and len(code) == 3):
        log.warning("smtpd", f"DNS list reply for {domain} does not start with a reply code:"
                    f" {text!r} (configuration error)")
        return Verdict(REJECT, CONFIG_ERROR)
    return Verdict(REJECT, final_reply(int(code), f"{code[0]}.7.1", rest, kind))


def validate_list(arg: str | None, svc: Services) -> None:
    """The zone and filter parse, and every rbl_reply_maps table opens."""
    if arg is None:
        raise ValueError("needs a DNS list domain")
    split_arg(arg)
    for spec in svc.cfg.list("rbl_reply_maps"):
        svc.maps.get(spec)


def _domain_name(name: str | None) -> str | None:
    """A name fit for a right-hand-side list query, or None (unknown, numeric, invalid)."""
    if not name or name == "unknown":
        return None
    name = name.rstrip(".").lower()
    if not addr.valid_hostname(name) or name.rsplit(".", 1)[-1].isdigit():
        return None
    return name


def _address_domain(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return _domain_name(address.rpartition("@")[2])


@restriction("reject_rbl_client", takes_arg=True, validate=validate_list)
async def reject_rbl_client(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    return await _check(ctx, svc, st, arg, ctx.client_ip, reversed_ip(ctx.client_ip), "client")


@restriction("reject_rhsbl_client", takes_arg=True, validate=validate_list)
async def reject_rhsbl_client(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    name = _domain_name(ctx.client_name)
    return DUNNO_V if name is None else await _check(ctx, svc, st, arg, name, name, "client")


@restriction("reject_rhsbl_reverse_client", takes_arg=True, validate=validate_list)
async def reject_rhsbl_reverse_client(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    name = _domain_name(ctx.reverse_name)
    if name is None:
        return DUNNO_V
    return await _check(ctx, svc, st, arg, name, name, "reverse_client")


@restriction("reject_rhsbl_helo", takes_arg=True, validate=validate_list)
async def reject_rhsbl_helo(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    name = _domain_name(ctx.helo)
    return DUNNO_V if name is None else await _check(ctx, svc, st, arg, name, name, "helo")


@restriction("reject_rhsbl_sender", takes_arg=True, validate=validate_list)
async def reject_rhsbl_sender(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    name = _address_domain(ctx.sender)
    return DUNNO_V if name is None else await _check(ctx, svc, st, arg, name, name, "sender")


@restriction("reject_rhsbl_recipient", takes_arg=True, validate=validate_list)
async def reject_rhsbl_recipient(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    name = _address_domain(ctx.recipient)
    return DUNNO_V if name is None else await _check(ctx, svc, st, arg, name, name, "recipient")
