"""check_policy_service: delegate the decision to a policy server, or to built-in greylisting.

The answer is interpreted as an access(5) value in the context of the list that
holds the check; a server that cannot be reached yields the default action
(``451 4.3.5 ... Server configuration problem``), never a permit.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from backupmx.log import log
from backupmx.policy.request import attributes
from backupmx.restrictions.access import interpret_action
from backupmx.restrictions.engine import Context, EvalState, Verdict, restriction

if TYPE_CHECKING:
    from backupmx.services import Services


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
                action = None
            else:
                log.info("greylist", decision.log_line(attrs))
                action = decision.action
        else:
            action = await policy.client(arg or "").query(attrs)
    if action is None:
        action = settings.default_action
    origin = f"check_policy_service {endpoint}"
    return await interpret_action(action, ctx, svc, st, origin, ctx.kind)
