"""The restriction engine: Postfix's evaluation model over compiled lists.

A list is compiled once per configuration (unknown names are configuration
errors, never ignored) into steps.  Each step is a small async callable that gets
the transaction context, the services it needs and the evaluation state, and
returns a verdict.  The engine applies PERMIT/REJECT/DUNNO, ``defer_if_permit`` and
``defer_if_reject`` exactly as spec/restrictions.md §1.4 describes.  Any unexpected
error of a step becomes a transient answer, never a permit and never a 5xx.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backupmx.cleanup.actions import NO_ACTIONS, MessageActions
from backupmx.log import log
from backupmx.reply import Reply, make_reply

if TYPE_CHECKING:
    from backupmx.services import Services

PERMIT = "permit"
DUNNO = "dunno"
REJECT = "reject"

# The list kinds, in evaluation order at RCPT, with the class text of their replies.
CLASS_TEXT = {
    "client": "Client host",
    "helo": "Helo command",
    "sender": "Sender address",
    "recipient": "Recipient address",
    "relay": "Recipient address",
    "data": "Data command",
    "end_of_data": "End-of-data",
    "etrn": "Etrn command",
}


@dataclass
class Context:
    """What is known about the transaction when a list is evaluated."""

    client_ip: str
    client_name: str = "unknown"  # forward-confirmed reverse name, or "unknown"
    reverse_name: str = "unknown"  # PTR name without forward confirmation
    client_name_status: str = "ok"  # ok | nxdomain | tempfail
    helo: str | None = None
    protocol: str = "SMTP"
    sender: str | None = None  # as sent, internal form; "" = null sender; None = no MAIL yet
    recipient: str | None = None  # as sent, internal form
    nrcpt: int = 0  # recipients accepted so far in this transaction
    etrn_domain: str | None = None
    sasl_user: str | None = None
    illegal_pipelining: bool = False
    queue_id: str | None = None
    kind: str = "recipient"  # the list being evaluated (set by the engine)
    # For policy requests (spec/policy-protocol.md §1.1):
    client_port: int = 0
    server_address: str = ""
    server_port: int = 0
    state: str = "RCPT"  # the SMTP command being answered (protocol_state)
    instance: str = ""  # per-transaction id, the same for all requests of one message
    size: int = 0  # SIZE= of MAIL FROM, 0 if none
    # DNS list answers started when the client connected, by query name (restrictions/dnsbl.py)
    dnsbl: dict[str, Any] = field(default_factory=dict)

    @property
    def client(self) -> str:
        return f"{self.client_name}[{self.client_ip}]"


@dataclass
class Verdict:
    kind: str  # PERMIT | DUNNO | REJECT
    reply: Reply | None = None
    disconnect: bool = False
    #: what refused: the restriction's name (the innermost of nested lists) or check's
    by: str = ""


DUNNO_V = Verdict(DUNNO)
PERMIT_V = Verdict(PERMIT)


@dataclass
class EvalState:
    """Per-RCPT state: the first defer-if-permit / defer-if-reject reasons, warn flag.

    ``actions`` starts as what the transaction's earlier evaluations asked of the
    message and gains what this one asks (HOLD, DISCARD, ...); the caller keeps it
    for cleanup.
    """

    defer_if_permit: Reply | None = None
    defer_if_reject: Reply | None = None
    warn_next: bool = False
    trace: list[str] | None = None  # filled by `explain`
    warning: bool = False  # the running step follows warn_if_reject
    depth: int = 0  # nesting of restriction lists found in access-map values
    actions: MessageActions = NO_ACTIONS
    step: str = ""  # the name of the restriction running now
    defer_if_permit_by: str = ""  # the restriction that set defer_if_permit

    def set_defer_if_permit(self, reply: Reply) -> None:
        if self.defer_if_permit is None:
            self.defer_if_permit = reply
            self.defer_if_permit_by = self.step

    def set_defer_if_reject(self, reply: Reply) -> None:
        if self.defer_if_reject is None:
            self.defer_if_reject = reply


Fn = Callable[[Context, "Services", EvalState, str | None], Awaitable[Verdict]]


# Checks a restriction's argument when the configuration is built (tables open, syntax).
Validator = Callable[[str | None, "Services"], None]


@dataclass(frozen=True)
class Restriction:
    name: str
    fn: Fn
    takes_arg: bool
    validate: Validator | None = None


REGISTRY: dict[str, Restriction] = {}

# Restrictions that stop relaying (spec/restrictions.md §1.3 start-up check).
RELAY_STOPPERS = {
    "reject",
    "reject_unauth_destination",
    "defer",
    "defer_if_permit",
    "defer_unauth_destination",
}


def restriction(
    name: str, takes_arg: bool = False, validate: Validator | None = None
) -> Callable[[Fn], Fn]:
    """Register a restriction under its Postfix name."""

    def deco(fn: Fn) -> Fn:
        REGISTRY[name] = Restriction(name, fn, takes_arg, validate)
        return fn

    return deco


@dataclass(frozen=True)
class Step:
    name: str
    arg: str | None
    fn: Fn

    def __str__(self) -> str:
        return f"{self.name} {self.arg}" if self.arg else self.name


@dataclass
class RList:
    """A compiled restriction list."""

    param: str
    steps: list[Step] = field(default_factory=list)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]


class RestrictionSyntaxError(ValueError):
    pass


def compile_list(param: str, items: list[str], kind: str) -> RList:
    """Compile the items of a restriction list parameter; unknown names raise."""
    # Import the families so that their restrictions are registered.
    from backupmx.restrictions import (  # noqa: F401
        access,
        addresses,
        basic,
        dnsbl,
        policy,
        relay,
        verify,
    )

    steps: list[Step] = []
    i = 0
    while i < len(items):
        item = items[i]
        name = item.lower()
        i += 1
        if ":" in item and name not in REGISTRY:
            # A bare type:table is an access map of the list's own kind (config-syntax §1.2).
            map_check = "check_" + ("recipient" if kind == "relay" else kind) + "_access"
            if map_check not in REGISTRY:
                raise RestrictionSyntaxError(
                    f"{param}: lookup table {item} is not supported here "
                    f"(there is no {map_check})"
                )
            steps.append(Step(map_check, item, REGISTRY[map_check].fn))
            continue
        r = REGISTRY.get(name)
        if r is None:
            raise RestrictionSyntaxError(f'{param}: unknown restriction "{item}"')
        arg = None
        if r.takes_arg:
            if i >= len(items):
                raise RestrictionSyntaxError(f"{param}: restriction {name} needs an argument")
            arg = items[i]
            i += 1
        steps.append(Step(name, arg, r.fn))
    return RList(param, steps)


def subject(ctx: Context, kind: str) -> str:
    """The ``<N>`` of a reply about what a list (or a check) of ``kind`` looked at."""
    if kind == "client":
        return ctx.client
    if kind == "reverse_client":
        return f"{ctx.reverse_name}[{ctx.client_ip}]"
    if kind == "helo":
        return ctx.helo or ""
    if kind == "sender":
        return ctx.sender or ""
    if kind in ("recipient", "relay"):
        return ctx.recipient or ""
    if kind == "data":
        return "DATA"
    if kind == "end_of_data":
        return "END-OF-MESSAGE"
    if kind == "etrn":
        return ctx.etrn_domain or ""
    return ""


def reject_reply(ctx: Context, code: int, dsn: str, text: str, kind: str | None = None) -> Reply:
    """``<code> <dsn> <N>: <C> rejected: <text>`` for the list being evaluated."""
    k = kind or ctx.kind
    return make_reply(code, dsn, f"<{subject(ctx, k)}>: {CLASS_TEXT[k]} rejected: {text}")


def temp_error_reply(ctx: Context, what: str = "Temporary lookup failure") -> Reply:
    return Reply(451, "4.3.0", f"<{subject(ctx, ctx.kind)}>: {what}")


CONFIG_ERROR = Reply(451, "4.3.5", "Server configuration error")


async def run_list(
    rlist: RList, kind: str, ctx: Context, svc: Services, st: EvalState
) -> Verdict:
    """Evaluate one list; returns PERMIT/DUNNO (list passed) or REJECT."""
    ctx.kind = kind
    for step in rlist.steps:
        warn = st.warn_next
        st.warn_next = False
        st.warning = warn
        if st.trace is not None:
            st.trace.append(f"{rlist.param}: {step}")
        st.step = step.name
        try:
            v = await step.fn(ctx, svc, st, step.arg)
        except Exception as e:  # a broken check must never permit, never 5xx
            log.warning("smtpd", f"{step}: {type(e).__name__}: {e}")
            v = Verdict(REJECT, temp_error_reply(ctx))
        ctx.kind = kind  # a nested list may have run under the kind of its access map
        if st.trace is not None:
            extra = f" ({v.reply})" if v.reply else ""
            st.trace.append(f"    => {v.kind}{extra}")
        if v.kind == REJECT and v.reply is not None:
            if warn and not v.reply.line().startswith("451 4.3."):
                log.info("smtpd", f"reject_warning: {ctx.client}: {v.reply}")
                continue
            reply = v.reply
            if reply.permanent and st.defer_if_reject is not None:
                reply = st.defer_if_reject
            # Postfix hangs up after any 421 or 521 it sends: access map, DNS list or policy.
            return Verdict(REJECT, reply, reply.code in (421, 521), v.by or step.name)
        if st.defer_if_permit is not None and st.defer_if_reject is not None:
            # Both flags set: the outcome can only be a 4xx.
            return Verdict(REJECT, st.defer_if_permit, by=st.defer_if_permit_by)
        if v.kind == PERMIT:
            return v
    return DUNNO_V


async def evaluate(
    lists: list[tuple[str, RList]], ctx: Context, svc: Services, st: EvalState | None = None
) -> Verdict | None:
    """Evaluate lists in order; return the rejecting verdict, or None to accept.

    ``defer_if_reject`` is reset at the start of each stage; the relay and
    recipient lists form one stage.  ``defer_if_permit`` carries forward.
    """
    st = st or EvalState()
    prev_kind = None
    for kind, rlist in lists:
        if st.actions.discard:
            return None  # DISCARD accepts at once; later restrictions are skipped
        if not (prev_kind == "relay" and kind == "recipient") and not (
            prev_kind == "recipient" and kind == "relay"
        ):
            st.defer_if_reject = None
        prev_kind = kind
        v = await run_list(rlist, kind, ctx, svc, st)
        if v.kind == REJECT:
            return v
    if st.defer_if_permit is not None:
        return Verdict(REJECT, st.defer_if_permit, by=st.defer_if_permit_by)
    return None

