"""What ``queue list`` and ``queue show`` print: mailq's layout, JSON, and a detail view.

The text listing keeps Postfix's mailq columns so that habits and scripts carry over (a
recipient line still starts with the address); the delivery state and next attempt that the
contract asks for follow the address in parentheses.  Like mailq it lists only the recipients
still to be delivered; the JSON lists every recipient.  A recipient the primary refused and
that is quarantined (state ``held``) is listed under the primary's reply, as a deferred one
is under its reason; in the JSON its state is ``held`` and its ``last_reply`` that reply.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from backupmx.envelope import Envelope, Recipient

_HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
_RECIPIENT_INDENT = " " * 41
_REASON_COLUMN = 76


def iso_utc(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_state(env: Envelope, active: set[str] | None = None) -> str:
    """``hold``, ``active`` (an attempt runs) or ``deferred`` (waiting), as the contract says."""
    if env.hold:
        return "hold"
    if active is not None and env.id in active:
        return "active"
    return "deferred"


def _duration(seconds: float) -> str:
    """``4m 10s``, ``2h 5m``, ``3d 4h``: the two largest units are enough to plan by."""
    rest = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts[:2])


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _recipient_line(rcpt: Recipient, now: float) -> str:
    line = _RECIPIENT_INDENT + rcpt.address
    if rcpt.attempts == 0 and rcpt.state == "pending":
        return line
    noun = "attempt" if rcpt.attempts == 1 else "attempts"
    notes = [rcpt.state, f"{rcpt.attempts} {noun}"]
    if rcpt.next_attempt is not None:
        wait = rcpt.next_attempt - now
        notes.append(f"next attempt in {_duration(wait)}" if wait > 0 else "next attempt due")
    return f"{line} ({', '.join(notes)})"


def _message_lines(env: Envelope, now: float, active: set[str] | None) -> list[str]:
    status = {"hold": "!", "active": "*"}.get(message_state(env, active), " ")
    arrival = time.asctime(time.localtime(env.arrival))
    sender = env.sender or "MAILER-DAEMON"
    lines = [f"{env.id:<10}{status} {env.size:>8} {arrival:20.20} {sender}"]
    groups: dict[str | None, list[Recipient]] = {}
    for rcpt in env.open_recipients:
        reason = _one_line(rcpt.last_reply) if rcpt.last_reply else None
        groups.setdefault(reason, []).append(rcpt)
    # Postfix prints the recipients with a deferral reason first, each group under its reason.
    for reason in [r for r in groups if r is not None] + ([None] if None in groups else []):
        if reason is not None:
            padding = max(0, _REASON_COLUMN - len(reason))
            lines.append(" " * padding + f"({reason})")
        lines.extend(_recipient_line(rcpt, now) for rcpt in groups[reason])
    return lines


def mailq_text(envs: Iterable[Envelope], now: float, active: set[str] | None = None) -> str:
    """The queue in mailq's layout, ending with the ``-- N Kbytes in M Requests.`` summary."""
    queued = list(envs)
    if not queued:
        return "Mail queue is empty\n"
    body = "\n\n".join("\n".join(_message_lines(env, now, active)) for env in queued)
    kbytes = sum(env.size for env in queued) // 1024
    plural = "" if len(queued) == 1 else "s"
    return f"{_HEADER}\n{body}\n\n-- {kbytes} Kbytes in {len(queued)} Request{plural}.\n"


def _recipient_json(rcpt: Recipient) -> dict[str, object]:
    return {
        "address": rcpt.address,
        "state": rcpt.state,
        "attempts": rcpt.attempts,
        "last_reply": rcpt.last_reply,
        "next_attempt": None if rcpt.next_attempt is None else iso_utc(rcpt.next_attempt),
    }


def as_json(envs: Iterable[Envelope], active: set[str] | None = None) -> list[dict[str, object]]:
    """The ``queue list --json`` array, field for field as the interface contract fixes it."""
    return [
        {
            "id": env.id,
            "arrival": iso_utc(env.arrival),
            "size": env.size,
            "sender": env.sender,
            "state": message_state(env, active),
            "recipients": [_recipient_json(r) for r in env.recipients],
        }
        for env in envs
    ]


def header_block(content: bytes) -> str:
    """The message's header section as text (up to the first empty line)."""
    text = content.decode("utf-8", errors="replace").replace("\r\n", "\n")
    head, _, _ = text.partition("\n\n")
    return head if head.endswith("\n") or not head else head + "\n"


def _history_line(entry: dict[str, object]) -> str:
    stamp = entry.get("time")
    when = iso_utc(stamp) if isinstance(stamp, int | float) else "-"
    rest = " ".join(f"{key}={value}" for key, value in entry.items() if key != "time")
    return f"  {when} {rest}".rstrip()


def show_text(
    env: Envelope, content: bytes, active: set[str] | None = None, now: float | None = None
) -> str:
    """``queue show ID``: the envelope, every recipient's state, the headers, the history."""
    now = time.time() if now is None else now
    lines = [
        f"id: {env.id}",
        f"state: {message_state(env, active)}",
        f"arrival: {iso_utc(env.arrival)}",
        f"size: {env.size}",
        f"sender: <{env.sender}>",
    ]
    optional = {
        "client": env.client,
        "body": env.body,
        "ret": env.ret,
        "envid": env.envid,
        "smtputf8": "yes" if env.smtputf8 else None,
    }
    lines += [f"{name}: {value}" for name, value in optional.items() if value]
    lines.append("recipients:")
    for rcpt in env.recipients:
        noun = "attempt" if rcpt.attempts == 1 else "attempts"
        status = f"  {rcpt.address}: {rcpt.state}, {rcpt.attempts} {noun}"
        if rcpt.next_attempt is not None and rcpt.open:
            status += f", next attempt {iso_utc(rcpt.next_attempt)}"
            if rcpt.next_attempt > now:
                status += f" (in {_duration(rcpt.next_attempt - now)})"
        lines.append(status)
        if rcpt.last_reply:
            lines.append(f"    last reply: {_one_line(rcpt.last_reply)}")
        if rcpt.orcpt:
            lines.append(f"    orcpt: {rcpt.orcpt}")
        if rcpt.notify:
            lines.append(f"    notify: {rcpt.notify}")
    lines.append("headers:")
    lines += ["  " + line for line in header_block(content).splitlines()]
    lines.append("history:")
    lines += [_history_line(entry) for entry in env.history] or ["  (none)"]
    return "\n".join(lines) + "\n"


def _parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def from_json(item: dict[str, Any]) -> Envelope:
    """Rebuild an Envelope from one ``as_json`` element (as a running server's admin endpoint
    returns it), enough for ``mailq_text``; content-related fields are not in the JSON."""
    recipients = []
    for r in item["recipients"]:
        next_attempt = r.get("next_attempt")
        recipients.append(
            Recipient(
                address=str(r["address"]),
                state=str(r["state"]),
                attempts=int(r["attempts"]),
                last_reply=r.get("last_reply"),
                next_attempt=_parse_iso(next_attempt) if next_attempt else None,
            )
        )
    return Envelope(
        id=str(item["id"]),
        sender=str(item["sender"]),
        recipients=recipients,
        arrival=_parse_iso(str(item["arrival"])),
        size=int(item["size"]),
        hold=item.get("state") == "hold",
    )
