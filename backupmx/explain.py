"""``backupmx explain``: make the server's RCPT decision for one made-up transaction.

Nothing is sent and nothing is queued; DNS lookups, tables and policy servers are
asked exactly as a real session would ask them, so the printout shows what a
client with these details would be told, and why.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys

from backupmx import addr
from backupmx.cleanup.rewrite import canonical
from backupmx.reply import Reply, soft_bounced
from backupmx.restrictions import dnsbl
from backupmx.restrictions.addresses import unverified_name
from backupmx.restrictions.engine import Context
from backupmx.restrictions.rcpt import decide
from backupmx.services import Services


class ExplainError(ValueError):
    """The command line describes no possible transaction."""


def _address(text: str, what: str) -> str:
    """The internal form of an address given on the command line; ``<>`` or "" is null."""
    if text.strip() in ("", "<>"):
        return ""
    try:
        parsed = addr.parse_path(text if text.startswith("<") else f"<{text}>")
        return canonical(parsed.address)
    except addr.AddressSyntaxError as e:
        raise ExplainError(f"bad {what} address {text!r}: {e}") from e


async def _context(svc: Services, client: str, helo: str | None) -> Context:
    """What a session knows after the client connected and said HELO."""
    try:
        ip = ipaddress.ip_address(client).compressed
    except ValueError as e:
        raise ExplainError(f"bad client address {client!r}") from e
    ctx = Context(client_ip=ip, helo=helo, protocol="ESMTP" if helo else "SMTP")
    dnsbl.prefetch(ctx, svc)
    if svc.cfg.bool("smtpd_peername_lookup"):
        name, status = await svc.resolver.reverse_name(ip)
        ctx.client_name, ctx.client_name_status, ctx.reverse_name = name, status, name
        if status == "nxdomain":
            ctx.reverse_name = await unverified_name(svc, ip)
    return ctx


async def explain(
    svc: Services, client: str, helo: str | None, sender: str, recipient: str
) -> list[str]:
    """The lines to print: the transaction, every step with its lookups, the final reply."""
    ctx = await _context(svc, client, helo)
    ctx.sender = _address(sender, "sender")
    ctx.recipient = _address(recipient, "recipient")
    if not ctx.recipient:
        raise ExplainError("the recipient must not be empty")
    ctx.state = "RCPT"
    lines = [
        f"client: {ctx.client} (name status {ctx.client_name_status},"
        f" reverse name {ctx.reverse_name})",
        f"helo: {ctx.helo if ctx.helo is not None else '(none)'}",
        f"sender: <{ctx.sender}>",
        f"recipient: <{ctx.recipient}>",
    ]
    trace: list[str] = []
    try:
        decision = await decide(ctx, svc, trace)
    finally:
        dnsbl.cancel(ctx)
    lines += trace
    verdict = decision.verdict
    reply = Reply(250, "2.1.5", "Ok")
    actions = decision.actions
    if verdict is not None and verdict.reply is not None:
        reply = verdict.reply
        if verdict.disconnect:
            lines.append("(the server disconnects after this reply)")
    elif actions.discard:
        lines.append("(DISCARD: accepted, then the message is thrown away)")
    for flag, text in ((actions.hold, "HOLD: the message would be held in the queue"),
                       (bool(actions.redirect), f"REDIRECT to {actions.redirect}"),
                       (bool(actions.bcc), f"BCC to {', '.join(actions.bcc)}")):
        if flag:
            lines.append(f"({text})")
    lines += [f"(PREPEND {header})" for header in actions.prepend]
    line = reply.line()
    if reply.permanent and svc.cfg.bool("soft_bounce"):
        lines.append("(soft_bounce = yes: the server sends this 5xx as 4xx)")
        line = soft_bounced(reply).line()
    lines.append(f"final reply: {line}")
    return lines


def run(svc: Services, client: str, helo: str | None, sender: str, recipient: str) -> int:
    """Print the explanation; 0 whatever the verdict, 2 when the transaction is malformed."""
    try:
        lines = asyncio.run(explain(svc, client, helo, sender, recipient))
    except ExplainError as e:
        print(f"backupmx: explain: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
