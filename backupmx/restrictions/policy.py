"""check_policy_service: delegate the decision to a policy server, or to built-in greylisting.

The answer is interpreted as an access(5) value in the context of the list that
holds the check; a server that cannot be reached yields the default action
(``451 4.3.5 ... Server configuration problem``), never a permit.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from backupmx.log import log
from backupmx.metrics import instruments
from backupmx.policy.request import attributes
from backupmx.restrictions.access import interpret_action
from backupmx.restrictions.engine import Context, EvalState, Verdict, restriction

if TYPE_CHECKING:
    from backupmx.services import Services

#: the access(5) action words a policy answer may start with, for the metrics' label
_ACTIONS = frozenset((
    "OK", "RELAY", "DUNNO", "REJECT", "DEFER", "DEFER_IF_REJECT", "DEFER_IF_PERMIT", "HOLD",
    "DISCARD", "REDIRECT", "BCC", "PREPEND", "FILTER", "WARN", "INFO",
    "REJECT_UNAUTH_DESTINATION", "PERMIT",
))


def action_label(action: str) -> str:
    """The first word of a policy action, bounded: a known word, NXX for a code, else other."""
    word = action.split(None, 1)[0].upper() if action.strip() else ""
    if word in _ACTIONS:
        return word
    if len(word) == 3 and word.isdigit():
        return word[0] + "XX"
    return "other"


def validate(arg: str | None, svc: Services) -> None:
    """Endpoint syntax, override names, and for builtin:greylist its store and whitelists."""
    endpoint, _ = svc.policy.service(arg or "")
    if endpoint.kind == "builtin":
        svc.policy.validate_greylist()


@restriction("check_policy_service", takes_arg=True, validate=validate)
async def check_policy_service(
    ctx: Context, svc: Services, st: EvalState, arg: str | None
) -> Verdict:
    endpoint, settings = svc.policy.service(arg or "")
    attrs = attributes(ctx, settings.policy_context, svc.cfg.str("compatibility_level"))
    action: str | None
    with svc.policy.using() as policy:  # a reload meanwhile closes them after this check
        if endpoint.kind == "builtin":
            try:
                decision = policy.greylist().check(attrs)
            except (sqlite3.Error, OSError) as e:
                log.warning("smtpd", f"{endpoint}: greylist store: {e}")
                instruments.GREYLIST.labels("error").inc()
                action = None
            else:
                log.info("greylist", decision.log_line(attrs))
                instruments.GREYLIST.labels(decision.verdict).inc()
                action = decision.action
        else:
            action = await policy.client(arg or "").query(attrs)
            if action is None:
                instruments.POLICY_ERRORS.labels(str(endpoint)).inc()
            else:
                instruments.POLICY_ACTIONS.labels(str(endpoint), action_label(action)).inc()
    if action is None:
        action = settings.default_action
    origin = f"check_policy_service {endpoint}"
    return await interpret_action(action, ctx, svc, st, origin, ctx.kind)
