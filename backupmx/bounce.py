"""Delivery status notifications (RFC 3464), laid out as Postfix's bounce daemon does.

A pure function of the envelope, the failures and the original content, so that the queue
manager decides *when* to notify (``should_notify``) and only hands the bytes to the spool.
The notice goes out with the null sender, which is why a notice about a notice is never made:
bounce loops end here.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.utils import format_datetime

from backupmx.envelope import Envelope, Recipient

FAILED = "failed"
DELAYED = "delayed"
_NOTIFY_KEYWORD = {FAILED: "FAILURE", DELAYED: "DELAY"}
_SUBJECT = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
}
_WIDTH = 78
CRLF = "\r\n"


@dataclass(frozen=True)
class Failure:
    """Why one recipient is being reported."""

    recipient: Recipient
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None  # the remote reply as a DSN diagnostic, e.g. "smtp; 550 5.1.1 ..."
    remote_mta: str | None  # host name of the server that answered, if one did
    reason: str  # human text, e.g. "host mx1...[...] said: 550 ... (in reply to RCPT TO command)"


def should_notify(env: Envelope, recipient: Recipient, kind: str) -> bool:
    """Whether the sender gets a ``kind`` notice for this recipient.

    Never for the null sender (a notice is never answered with a notice); otherwise as the
    recipient's NOTIFY says, and absent NOTIFY means FAILURE,DELAY (RFC 3461).
    """
    if kind not in _NOTIFY_KEYWORD:
        raise ValueError(f"unknown notice kind {kind!r}")
    if not env.sender:
        return False
    if recipient.notify is None:
        return True
    keywords = {word.strip().upper() for word in recipient.notify.split(",")}
    return "NEVER" not in keywords and _NOTIFY_KEYWORD[kind] in keywords


def rfc822_date(stamp: float) -> str:
    """``Tue, 12 Mar 2024 10:00:00 +0100 (CET)`` in local time, as Postfix writes dates."""
    local = datetime.fromtimestamp(stamp).astimezone()
    return f"{format_datetime(local)} ({local.strftime('%Z')})"


def xtext_decode(text: str) -> str:
    """Undo RFC 3461 xtext (``+2B`` is ``+``): ORCPT and ENVID arrive encoded."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _field(name: str, value: str) -> str:
    """A header-style line, folded at white space so no line runs past 78 columns."""
    return textwrap.fill(
        f"{name}: {_one_line(value)}",
        width=_WIDTH,
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    ).replace("\n", CRLF)


def _address_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"  # RFC 6533 for internationalised mail


def _original_recipient(rcpt: Recipient) -> str:
    if rcpt.orcpt:
        kind, sep, address = rcpt.orcpt.partition(";")
        if sep:
            return f"{kind.strip()}; {xtext_decode(address.strip())}"
        return f"rfc822; {xtext_decode(rcpt.orcpt.strip())}"
    return f"{_address_type(rcpt.address)}; {rcpt.address}"


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def _header_section(content: bytes) -> bytes:
    """The original's headers, each line CRLF-terminated, without the empty separator line."""
    data = _crlf(content)
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]
    return head if head.endswith(b"\r\n") or not head else head + b"\r\n"


def _message_id(headers: bytes) -> str | None:
    value = BytesHeaderParser().parsebytes(headers).get("Message-ID")
    value = _one_line(str(value)) if value else ""
    return value if value.startswith("<") and value.endswith(">") else None


def _notification(
    myhostname: str, kind: str, failures: Sequence[Failure], will_retry_until: float | None
) -> str:
    lines = [f"This is the mail system at host {myhostname}.", ""]
    if kind == FAILED:
        lines += [
            "Your message could not be delivered to one or more of its recipients.",
            "The reasons are given below; the message is attached.",
        ]
    else:
        until = f" until {rfc822_date(will_retry_until)}" if will_retry_until else ""
        lines += [
            "This is a warning only: you need not send your message again.",
            "",
            "Your message has not yet been delivered to the recipients below.",
            f"The mail system will keep trying{until}.",
        ]
    lines += [
        "",
        "For help, write to the postmaster of this host and include this report.",
        "",
    ]
    for failure in failures:
        text = f"<{failure.recipient.address}>: {_one_line(failure.reason)}"
        lines += textwrap.wrap(
            text, width=_WIDTH, subsequent_indent="    ", break_long_words=False,
            break_on_hyphens=False,
        )
        lines.append("")
    return CRLF.join(lines)


def _delivery_status(
    env: Envelope,
    failures: Sequence[Failure],
    myhostname: str,
    kind: str,
    will_retry_until: float | None,
) -> str:
    head = [f"Reporting-MTA: dns; {myhostname}"]
    if env.envid:
        head.append(_field("Original-Envelope-Id", xtext_decode(env.envid)))
    head += [
        f"X-Backupmx-Queue-ID: {env.id}",
        f"X-Backupmx-Sender: {_address_type(env.sender)}; {env.sender}",
        f"Arrival-Date: {rfc822_date(env.arrival)}",
    ]
    blocks = [CRLF.join(head)]
    for failure in failures:
        rcpt = failure.recipient
        block = [
            f"Final-Recipient: {_address_type(rcpt.address)}; {rcpt.address}",
            _field("Original-Recipient", _original_recipient(rcpt)),
            f"Action: {kind}",
            f"Status: {failure.status}",
        ]
        if failure.remote_mta:
            block.append(f"Remote-MTA: dns; {failure.remote_mta}")
        if failure.diagnostic:
            block.append(_field("Diagnostic-Code", failure.diagnostic))
        if kind == DELAYED and will_retry_until is not None:
            block.append(f"Will-Retry-Until: {rfc822_date(will_retry_until)}")
        blocks.append(CRLF.join(block))
    return (CRLF + CRLF).join(blocks) + CRLF


def make_dsn(
    env: Envelope,
    failures: Sequence[Failure],
    content: bytes,
    *,
    myhostname: str,
    kind: str = FAILED,
    now: float,
    bounce_size_limit: int = 50000,
    will_retry_until: float | None = None,
) -> bytes:
    """The notice to ``env.sender`` about ``failures``, as a complete message with CRLF lines.

    The original goes back whole as message/rfc822, or only its headers as
    text/rfc822-headers when the sender asked for RET=HDRS or it exceeds bounce_size_limit.
    ``will_retry_until`` (a delay notice's deadline) fills Will-Retry-Until.
    """
    if kind not in _SUBJECT:
        raise ValueError(f"unknown notice kind {kind!r}")
    if not failures:
        raise ValueError("a notice needs at least one recipient")
    boundary = f"{env.id}.{int(now)}/{myhostname}"
    headers = _header_section(content)
    full = (env.ret or "").upper() != "HDRS" and len(content) <= bounce_size_limit
    original = _crlf(content) if full else headers
    if not original.endswith(b"\r\n"):
        original += b"\r\n"
    notification = _notification(myhostname, kind, failures, will_retry_until)
    text_charset = "us-ascii" if notification.isascii() else "utf-8"
    eight_bit = not original.isascii() or text_charset != "us-ascii"
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    top = [
        f"Date: {rfc822_date(now)}",
        f"From: Mail Delivery System <MAILER-DAEMON@{myhostname}>",
        f"Subject: {_SUBJECT[kind]}",
        f"To: {env.sender}",
        "Auto-Submitted: auto-replied",
        f"Message-Id: <{stamp}.{int(now * 1e6) % 1000000:06d}.{env.id}@{myhostname}>",
    ]
    original_id = _message_id(headers)
    if original_id:
        top += [f"In-Reply-To: {original_id}", f"References: {original_id}"]
    top += [
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    if eight_bit:
        top.append("Content-Transfer-Encoding: 8bit")
    if full:
        third = ["Content-Description: Undelivered Message", "Content-Type: message/rfc822"]
    else:
        third = [
            "Content-Description: Undelivered Message Headers",
            "Content-Type: text/rfc822-headers",
        ]
    if not original.isascii():
        third.append("Content-Transfer-Encoding: 8bit")
    text_part = [
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={text_charset}",
    ]
    if text_charset != "us-ascii":
        text_part.append("Content-Transfer-Encoding: 8bit")
    delimiter = f"--{boundary}"
    text = CRLF.join(
        [
            *top,
            "",
            "This is a MIME-encapsulated message.",
            "",
            delimiter,
            *text_part,
            "",
            notification,
            delimiter,
            "Content-Description: Delivery report",
            "Content-Type: message/delivery-status",
            "",
            _delivery_status(env, failures, myhostname, kind, will_retry_until),
            delimiter,
            *third,
            "",
            "",
        ]
    )
    return text.encode("utf-8") + original + f"{CRLF}{delimiter}--{CRLF}".encode()
