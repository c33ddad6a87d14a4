"""Access maps (check_*_access) and the access(5) actions their values name.

The key order comes from backupmx/maps/access.py; this module runs the search
(tracing every key for ``explain``) and turns the value found into a verdict as
spec/config-syntax.md §4 says.  The reply names the thing the map checked (a
sender map in the recipient list still says "Sender address rejected"), and a
restriction list found in a value runs under that same class.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from backupmx.config import split_list
from backupmx.log import log
from backupmx.maps import MapError, client_keys, helo_keys
from backupmx.maps.access import Key, address_keys
from backupmx.printable import printable
from backupmx.reply import Reply, valid_dsn
from backupmx.restrictions.engine import (
    CONFIG_ERROR,
    DUNNO,
    DUNNO_V,
    PERMIT,
    PERMIT_V,
    REJECT,
    Context,
    EvalState,
    RestrictionSyntaxError,
    RList,
    Verdict,
    compile_list,
    restriction,
    run_list,
    subject,
)

if TYPE_CHECKING:
    from backupmx.services import Services

MAX_DEPTH = 100  # nesting of restriction lists in access-map values (Postfix's limit)

# The thing checked: its reply class text and the list kind its nested restrictions use.
CLASSES = {
    "client": ("Client host", "client"),
    "reverse_client": ("Unverified Client host", "client"),
    "helo": ("Helo command", "helo"),
    "sender": ("Sender address", "sender"),
    "recipient": ("Recipient address", "recipient"),
    "relay": ("Recipient address", "recipient"),
    "data": ("Data command", "data"),
    "end_of_data": ("End-of-data", "end_of_data"),
    "etrn": ("Etrn command", "etrn"),
}

_CODE = re.compile(r"\d{3}\Z")
_HEADER = re.compile(r"[!-9;-~]+:")  # a header field name and its colon
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\Z")

# Address-class correction of X.1.Y enhanced codes (config-syntax.md §4.1 rule 2).
_SENDER_DETAIL = {"1": "7", "2": "8", "3": "7", "4": "7", "5": "0", "6": "7", "7": "7", "8": "8"}
_RCPT_DETAIL = {"1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6", "7": "3", "8": "2"}


def class_dsn(dsn: str, kind: str) -> str:
    """Correct an ``X.1.Y`` code for the kind of thing rejected."""
    cls, sub, detail = dsn.split(".")
    if sub != "1":
        return dsn
    if kind == "sender":
        return f"{cls}.1.{_SENDER_DETAIL.get(detail, '0')}"
    if kind in ("recipient", "relay"):
        return f"{cls}.1.{_RCPT_DETAIL.get(detail, '0')}"
    return f"{cls}.0.0"


def final_reply(code: int, dsn: str, text: str, kind: str) -> Reply:
    """Apply §4.1 rules 1-4 to a reply whose text is complete (rule 6, soft_bounce, is
    applied where every reply is sent: smtpd/session.py).

    ``dsn`` is the built-in enhanced code; a valid code at the start of ``text``
    (written by an administrator or a remote list) wins, corrected for ``kind``.
    """
    head, _, rest = text.partition(" ")
    if valid_dsn(head):
        dsn, text = class_dsn(head, kind), rest
    if not 400 <= code <= 599:
        log.warning("smtpd", f"reply code {code} is not 4XX or 5XX; sending 450 instead")
        return Reply(450, "4.7.1", "Service unavailable")
    return Reply(code, str(code)[0] + dsn[1:], printable(text, " "))


def access_reply(ctx: Context, kind: str, code: int, dsn: str, text: str) -> Reply:
    """``<code> <dsn> <N>: <C> rejected: <text>`` for the thing a check of ``kind`` looked at."""
    head, _, rest = text.strip().partition(" ")
    if valid_dsn(head):
        dsn, text = class_dsn(head, kind), rest
    text = text.strip() or "Access denied"
    cls = CLASSES[kind][0]
    return final_reply(code, dsn, f"<{subject(ctx, kind)}>: {cls} rejected: {text}", kind)


def defer_if_permit(ctx: Context, st: EvalState, reply: Reply) -> None:
    """Set defer_if_permit, or only log it when the step follows warn_if_reject."""
    if st.warning:
        log.info("smtpd", f"reject_warning: {ctx.state} from {ctx.client}: {reply}")
        return
    st.set_defer_if_permit(reply)


def about(ctx: Context, kind: str, text: str) -> str:
    """``<N>: <C> text``: what a HOLD, DISCARD, REDIRECT or BCC log line says (as Postfix)."""
    return f"<{subject(ctx, kind)}>: {CLASSES[kind][0]} {text}"


def action_log(ctx: Context, action: str, text: str) -> None:
    """``NOQUEUE: hold: RCPT from c[ip]: TEXT; from=<...> to=<...> proto=... helo=<...>``."""
    qid = ctx.queue_id or "NOQUEUE"
    parts = [f"{qid}: {action}: {ctx.state} from {ctx.client}: {text};"]
    if ctx.sender is not None:
        parts.append(f"from=<{ctx.sender}>")
    if ctx.recipient is not None:
        parts.append(f"to=<{ctx.recipient}>")
    parts.append(f"proto={ctx.protocol}")
    if ctx.helo:
        parts.append(f"helo=<{ctx.helo}>")
    log.info("smtpd", " ".join(parts))


async def interpret_action(
    value: str, ctx: Context, svc: Services, st: EvalState, origin: str, kind: str
) -> Verdict:
    """The verdict of access(5) value ``value`` found by a check of ``kind``.

    ``origin`` names where the value came from (table and key) for log lines.
    """
    value = value.strip()
    word, _, text = value.partition(" ")
    text = text.strip()
    upper = word.upper()
    if not value:
        log.warning("smtpd", f"{origin}: empty access value (configuration error)")
        return Verdict(REJECT, CONFIG_ERROR)
    if upper in ("OK", "RELAY") or word.isdigit() and not _CODE.match(word) or \
            _CODE.match(word) and not text:
        return PERMIT_V
    if upper == "DUNNO":
        return DUNNO_V
    if upper == "REJECT":
        code = svc.cfg.int("access_map_reject_code")
        return Verdict(REJECT, access_reply(ctx, kind, code, "5.7.1", text))
    if upper == "DEFER":
        code = svc.cfg.int("access_map_defer_code")
        return Verdict(REJECT, access_reply(ctx, kind, code, "4.7.1", text))
    if upper in ("DEFER_IF_REJECT", "DEFER_IF_PERMIT"):
        code = svc.cfg.int("access_map_defer_code")
        reply = access_reply(ctx, kind, code, "4.7.1", text or "Service unavailable")
        if upper == "DEFER_IF_REJECT":
            st.set_defer_if_reject(reply)
        else:
            defer_if_permit(ctx, st, reply)
        return DUNNO_V
    if _CODE.match(word):
        code = int(word)
        return Verdict(REJECT, access_reply(ctx, kind, code, f"{word[0]}.7.1", text))
    if upper in ("WARN", "INFO"):
        action_log(ctx, upper.lower(), text)
        return DUNNO_V
    return await _message_action(upper, value, text, ctx, svc, st, origin, kind)


async def _message_action(
    upper: str, value: str, text: str, ctx: Context, svc: Services, st: EvalState,
    origin: str, kind: str,
) -> Verdict:
    """The actions that change what happens to the message, else a restriction list."""
    if upper == "HOLD":
        if not st.actions.hold:  # once per message, though the lists run again for each RCPT
            action_log(ctx, "hold", about(ctx, kind, text or "triggers HOLD action"))
        st.actions = st.actions.held()
        return DUNNO_V
    if upper == "DISCARD":
        action_log(ctx, "discard", about(ctx, kind, text or "triggers DISCARD action"))
        st.actions = st.actions.discarded()
        return PERMIT_V
    if upper == "PREPEND":
        if ctx.state == "END-OF-MESSAGE" or not _HEADER.match(text):
            log.warning("smtpd", f"{origin}: ignoring PREPEND {text!r}: expected name: value")
        else:
            st.actions = st.actions.prepended(text)
        return DUNNO_V
    if upper in ("REDIRECT", "BCC"):
        if not _ADDRESS.match(text):
            log.warning("smtpd", f"{origin}: {upper} needs user@domain, got {text!r}")
            return Verdict(REJECT, CONFIG_ERROR)
        action_log(ctx, upper.lower(), about(ctx, kind, f"triggers {upper} {text}"))
        if upper == "REDIRECT":
            st.actions = st.actions.redirected(text)  # the last REDIRECT wins, as in Postfix
        else:
            st.actions = st.actions.copied(text)
        return DUNNO_V
    if upper == "FILTER":
        log.error("smtpd", f"{origin}: FILTER {text}: content filters are not supported by"
                  " backupmx (configuration error)")
        return Verdict(REJECT, CONFIG_ERROR)
    return await _nested(value, ctx, svc, st, origin, kind)


async def _nested(
    value: str, ctx: Context, svc: Services, st: EvalState, origin: str, kind: str
) -> Verdict:
    """A value naming restrictions runs as a list; tables in it are configuration errors."""
    items = split_list(value)
    if any(":" in item for item in items):
        log.warning("smtpd", f"{origin}: lookup table in access value {value!r} not allowed")
        return Verdict(REJECT, CONFIG_ERROR)
    if st.depth >= MAX_DEPTH:
        log.warning("smtpd", f"{origin}: restriction lists nested deeper than {MAX_DEPTH}")
        return Verdict(REJECT, CONFIG_ERROR)
    list_kind = CLASSES[kind][1]
    rlist, error = _compile_prefix(origin, items, list_kind)
    st.depth += 1
    try:
        v = await run_list(rlist, list_kind, ctx, svc, st)
    finally:
        st.depth -= 1
    if error is None or v.kind != DUNNO:
        return v
    log.warning("smtpd", error)  # it names the table and key already
    return Verdict(REJECT, CONFIG_ERROR)


def _compile_prefix(origin: str, items: list[str], kind: str) -> tuple[RList, str | None]:
    """The list up to its first bad item, and the error there.

    Postfix meets an unknown name only when evaluation gets to it, so what comes
    before it (``permit_mynetworks, bogus``) still decides when it can.
    """
    try:
        return compile_list(origin, items, kind), None
    except RestrictionSyntaxError as e:
        error = str(e)
    for n in range(len(items) - 1, 0, -1):
        try:
            return compile_list(origin, items[:n], kind), error
        except RestrictionSyntaxError:
            continue
    return compile_list(origin, [], kind), error


class LookupFailed(Exception):
    """A table could not answer; the reply is 451 4.3.0, never a permit."""


async def search(svc: Services, st: EvalState, spec: str,
                 keys: list[Key]) -> tuple[str, str] | None:
    """(key, value) of the first key found in table ``spec``; partial keys skip pattern tables."""
    try:
        table = svc.maps.get(spec)
        for key, partial in keys:
            if partial and table.pattern:
                continue
            value = await table.lookup_async(key)
            if st.trace is not None:
                st.trace.append(f"    {spec} {key!r}: {value if value is not None else '-'}")
            if value is not None:
                return key, value
    except MapError as e:
        log.warning("smtpd", f"{spec}: lookup failed: {e}")
        if st.trace is not None:
            st.trace.append(f"    {spec}: lookup failed: {e}")
        raise LookupFailed(str(e)) from e
    return None


def _parent_style(svc: Services) -> bool:
    features = [x.lower() for x in svc.cfg.list("parent_domain_matches_subdomains")]
    return "smtpd_access_maps" in features


async def check_map(
    ctx: Context, svc: Services, st: EvalState, spec: str, keys: list[Key], kind: str
) -> Verdict:
    """Search ``spec`` with ``keys`` and act on the value found."""
    try:
        found = await search(svc, st, spec, keys)
    except LookupFailed:
        return Verdict(REJECT, Reply(451, "4.3.0",
                                     f"<{subject(ctx, kind)}>: Temporary lookup failure"))
    if found is None:
        return DUNNO_V
    key, value = found
    return await interpret_action(value, ctx, svc, st, f"{spec} {key}", kind)


def validate_table(arg: str | None, svc: Services) -> None:
    """Open the table now, so that a missing or broken file stops ``check`` and start-up."""
    if arg is None:
        raise ValueError("needs a lookup table as TYPE:NAME")
    svc.maps.get(arg)


@restriction("check_client_access", takes_arg=True, validate=validate_table)
async def check_client_access(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    keys = client_keys(ctx.client_name, ctx.client_ip, _parent_style(svc))
    return await check_map(ctx, svc, st, arg, keys, "client")


@restriction("check_reverse_client_hostname_access", takes_arg=True, validate=validate_table)
async def check_reverse_client_hostname_access(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    keys = client_keys(ctx.reverse_name, ctx.client_ip, _parent_style(svc))
    return await check_map(ctx, svc, st, arg, keys, "reverse_client")


@restriction("check_helo_access", takes_arg=True, validate=validate_table)
async def check_helo_access(ctx: Context, svc: Services, st: EvalState, arg: str | None) -> Verdict:
    assert arg is not None
    if not ctx.helo:
        return DUNNO_V
    return await check_map(ctx, svc, st, arg, helo_keys(ctx.helo, _parent_style(svc)), "helo")


def _address_keys(svc: Services, address: str) -> list[Key]:
    resolved = "" if address == "" else svc.resolve(address).address
    return address_keys(resolved, svc.cfg.str("recipient_delimiter"), _parent_style(svc),
                        svc.cfg.str("smtpd_null_access_lookup_key"))


@restriction("check_sender_access", takes_arg=True, validate=validate_table)
async def check_sender_access(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    if ctx.sender is None:
        return DUNNO_V
    return await check_map(ctx, svc, st, arg, _address_keys(svc, ctx.sender), "sender")


@restriction("check_recipient_access", takes_arg=True, validate=validate_table)
async def check_recipient_access(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    assert arg is not None
    if ctx.recipient is None:
        return DUNNO_V
    v = await check_map(ctx, svc, st, arg, _address_keys(svc, ctx.recipient), "recipient")
    if v.kind == PERMIT and not st.actions.discard and svc.resolve(ctx.recipient).routed \
            and not svc.cfg.bool("allow_untrusted_routing"):
        # Sender-routed recipients must not become relayable through a map's OK.
        return Verdict(DUNNO)
    return v
