"""Typed values from expanded parameter text, with errors that state the expected form."""

from __future__ import annotations

import re
import socket

from backupmx.config.params import Param
from backupmx.config.syntax import split_list

Value = str | bool | int | tuple[str, ...]

_TIME_RE = re.compile(r"([0-9]+)([smhdw]?)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UNIT_NAMES = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}


def parse_time(text: str, unit: str) -> int:
    """Seconds in a Postfix time value: an integer with one optional unit s m h d w.

    Without a unit the parameter's own default unit applies (days for
    maximal_queue_lifetime, seconds for minimal_backoff_time ...).
    """
    m = _TIME_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"expected a time: an integer with an optional unit s, m, h, d or w "
                         f"(without a unit: {_UNIT_NAMES[unit]})")
    return int(m.group(1)) * _UNITS[m.group(2) or unit]


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in ("yes", "no"):
        raise ValueError("expected yes or no")
    return word == "yes"


def parse_port(text: str) -> int:
    """A TCP port as a number or a service name (`smtp` = 25)."""
    word = text.strip()
    if word.isdigit() and 0 < int(word) < 65536:
        return int(word)
    if word.lower() in _PORTS:
        return _PORTS[word.lower()]
    if word:
        try:
            return socket.getservbyname(word, "tcp")
        except OSError:
            pass
    raise ValueError("expected a TCP port number (1-65535) or a service name such as smtp")


def convert(param: Param, text: str) -> Value:
    """The typed value of param for its expanded text; ValueError says what was expected."""
    kind = param.type
    if kind == "str":
        return text
    if kind == "bool":
        return parse_bool(text)
    if kind == "time":
        return parse_time(text, param.unit)
    if kind == "list":
        return tuple(split_list(text))
    if kind == "port":
        return parse_port(text)
    if kind == "choice":
        word = text.strip().lower()
        if word not in param.choices:
            shown = ", ".join(c or "(empty)" for c in param.choices)
            raise ValueError(f"expected one of: {shown}")
        return word
    word = text.strip()
    if kind == "code":
        if not (word.isdigit() and len(word) == 3 and param.lo <= int(word) <= param.hi):
            raise ValueError(f"expected an SMTP reply code from {param.lo} to {param.hi}")
        return int(word)
    if not word.isdigit():
        what = "a size in bytes" if kind == "size" else "an integer"
        raise ValueError(f"expected {what} (digits only, 0 or more)")
    return int(word)
