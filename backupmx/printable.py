"""Mask what is not printable (Postfix's util/printable.c).

Client data -- HELO names, addresses, command lines, a peer's reply text -- reaches
log lines, replies and cache entries.  A control character there would reach a
terminal or a log parser as it is (ESC sequences, NUL, a line break that fakes a
second log line), so each goes out as a replacement character instead.
"""

from __future__ import annotations


def printable(text: str, replacement: str = "?") -> str:
    """``text`` with every non-printable character (``str.isprintable``) replaced.

    The check comes first and is one C-level scan, so a clean string costs no copy.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else replacement for c in text)
