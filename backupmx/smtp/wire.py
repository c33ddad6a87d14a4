"""What the delivery client puts on the wire and how it words a server's answer.

Pure functions, so that the exact bytes and texts are testable without a socket.
"""

from __future__ import annotations

from backupmx.envelope import Envelope, Recipient
from backupmx.reply import make_reply

CRLF = b"\r\n"


def encode_content(content: bytes, line_limit: int = 998) -> bytes:
    """The stored content (CRLF line ends) as DATA bytes, final ``.`` included.

    Dot-stuffs every line that starts with ``.``; lines longer than ``line_limit``
    are broken by inserting CRLF SPACE, as Postfix's smtp_line_length_limit does,
    so that no server truncates them. Nothing else is changed.
    """
    if not content:
        return b".\r\n"
    lines = content.split(CRLF)
    if content.endswith(CRLF):
        lines.pop()
    out: list[bytes] = []
    for line in lines:
        if line_limit > 0 and len(line) > line_limit:
            pieces = [line[:line_limit]]
            rest = line[line_limit:]
            while rest:
                pieces.append(b" " + rest[: line_limit - 1])
                rest = rest[line_limit - 1 :]
            line = CRLF.join(pieces)
        if line.startswith(b"."):
            line = b"." + line
        out.append(line)
    return CRLF.join(out) + CRLF + b"." + CRLF


def xtext(text: str) -> str:
    """RFC 3461 xtext: ``+`` ``=`` and anything outside ``!``..``~`` as ``+XX``."""
    return "".join(
        f"+{b:02X}" if b < 33 or b > 126 or b in (43, 61) else chr(b)
        for b in text.encode("utf-8")
    )


def mail_options(env: Envelope, size: int, extensions: dict[str, str]) -> list[str]:
    """ESMTP parameters of MAIL FROM, each only when the server offers its extension."""
    opts = []
    if "size" in extensions:
        opts.append(f"SIZE={size}")
    if env.body and env.body.upper() == "8BITMIME" and "8bitmime" in extensions:
        opts.append("BODY=8BITMIME")
    if env.smtputf8 and "smtputf8" in extensions:
        opts.append("SMTPUTF8")
    if "dsn" in extensions:
        if env.ret:
            opts.append(f"RET={env.ret}")
        if env.envid:
            opts.append(f"ENVID={env.envid}")
    return opts


def rcpt_options(rcpt: Recipient, extensions: dict[str, str]) -> list[str]:
    """NOTIFY (only when the client gave one) and ORCPT (always) when DSN is offered."""
    if "dsn" not in extensions:
        return []
    opts = [f"NOTIFY={rcpt.notify}"] if rcpt.notify else []
    opts.append(f"ORCPT={rcpt.orcpt or 'rfc822;' + xtext(rcpt.address)}")
    return opts


def size_limit(extensions: dict[str, str]) -> int:
    """The server's SIZE limit in bytes; 0 when it announced none."""
    value = extensions.get("size", "").strip()
    return int(value) if value.isdigit() else 0


def one_line(code: int, message: str) -> str:
    """A server reply as Postfix quotes it: code and text, line breaks as spaces."""
    return " ".join(f"{code} {message}".split("\n")).strip()


def status_of(code: int, message: str) -> str:
    """The reply's enhanced status code, or ``X.0.0`` from its class.

    A reply outside 2xx/4xx/5xx is garbage and counts as a transient protocol error.
    """
    if code // 100 not in (2, 4, 5):
        return "4.5.0"
    return make_reply(code, f"{code // 100}.0.0", message.split("\n", 1)[0]).dsn


def said(name: str, code: int, message: str, command: str) -> str:
    """``host NAME said: REPLY (in reply to COMMAND command)``."""
    return f"host {name} said: {one_line(code, message)} (in reply to {command} command)"
