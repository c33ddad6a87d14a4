"""`$name` expansion with Postfix's forms, as a pure function over a name lookup.

The caller's lookup does the recursion (and the loop guard), so this module only knows
the grammar: `$name`, `${name}`, `$(name)`, `${name?text}`, `${name:text}`,
`${name?{t1}:{t2}}`, `${{a} OP {b}?{t1}:{t2}}` and `$$`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from backupmx.config.syntax import NAME_RE, matching_brace

Lookup = Callable[[str], str]


class ExpansionError(ValueError):
    """A malformed `$` expression or an expansion loop."""


_RELOP_RE = re.compile(r"(==|!=|<=|>=|<|>)(level)?")
_RELOPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def expand(text: str, lookup: Lookup) -> str:
    """Replace every `$` expression in text; lookup(name) gives a name's expanded value."""
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        i = _dollar(text, j, lookup, out)


def _dollar(text: str, at: int, lookup: Lookup, out: list[str]) -> int:
    nxt = text[at + 1 : at + 2]
    if nxt == "$":
        out.append("$")
        return at + 2
    if nxt in ("{", "("):
        try:
            close = matching_brace(text, at + 1)
        except ValueError as exc:
            raise ExpansionError(str(exc)) from None
        out.append(_braced(text[at + 2 : close], lookup))
        return close + 1
    m = NAME_RE.match(text, at + 1)
    if not m:
        raise ExpansionError('"$" must be followed by a parameter name, "{", "(" or "$" '
                             '(write "$$" for a literal "$")')
    out.append(lookup(m.group()))
    return m.end()


def _braced(inner: str, lookup: Lookup) -> str:
    if inner.lstrip().startswith("{"):
        return _relational(inner.strip(), lookup)
    m = NAME_RE.match(inner)
    if not m:
        raise ExpansionError(f'bad parameter name in "${{{inner}}}"')
    name, rest = m.group(), inner[m.end() :]
    if not rest:
        return lookup(name)
    op, body = rest[0], rest[1:]
    if op == "?":
        when_set, when_empty = _branches(body, allow_else=True)
    elif op == ":":
        when_empty, _ = _branches(body, allow_else=False)
        when_set = None
    else:
        raise ExpansionError(f'expected "}}", "?" or ":" after "{name}" in "${{{inner}}}"')
    chosen = when_set if lookup(name) else when_empty
    return expand(chosen, lookup) if chosen else ""


def _branches(body: str, allow_else: bool) -> tuple[str, str | None]:
    """Parse `text`, `{text}` or (if allow_else) `{t1}:{t2}`; returns (first, second)."""
    stripped = body.lstrip()
    if not stripped.startswith("{"):
        return body, None
    first, tail = _group(stripped)
    tail = tail.strip()
    if not tail:
        return first, None
    if allow_else and tail.startswith(":"):
        second, tail = _group(tail[1:].lstrip())
        if not tail.strip():
            return first, second
    raise ExpansionError(f'unexpected text after "}}" in "{body}"')


def _group(text: str) -> tuple[str, str]:
    """Split `{inner}rest` into (trimmed inner, rest)."""
    if not text.startswith("{"):
        raise ExpansionError(f'expected "{{" at "{text}"')
    try:
        close = matching_brace(text, 0)
    except ValueError as exc:
        raise ExpansionError(str(exc)) from None
    return text[1:close].strip(), text[close + 1 :]


def _relational(inner: str, lookup: Lookup) -> str:
    left, rest = _group(inner)
    m = _RELOP_RE.match(rest.lstrip())
    if not m:
        raise ExpansionError(f'expected an operator (== != < <= > >=) in "${{{inner}}}"')
    right, rest = _group(rest.lstrip()[m.end() :].lstrip())
    rest = rest.strip()
    when_true: str | None = None
    when_false: str | None = None
    if rest.startswith("?"):
        when_true, rest = _group(rest[1:].lstrip())
        rest = rest.strip()
    if rest.startswith(":"):
        when_false, rest = _group(rest[1:].lstrip())
        rest = rest.strip()
    if rest or (when_true is None and when_false is None):
        raise ExpansionError(f'expected "?{{text}}" and/or ":{{text}}" in "${{{inner}}}"')
    a, b = expand(left, lookup), expand(right, lookup)
    truth = _compare(a, m.group(1), b, level=bool(m.group(2)))
    chosen = when_true if truth else when_false
    return expand(chosen, lookup) if chosen else ""


def _compare(a: str, op: str, b: str, level: bool) -> bool:
    """Numbers compare as numbers, compatibility levels as dotted versions, else as text."""
    if level:
        return _RELOPS[op](_level_key(a), _level_key(b))
    if a.isdigit() and b.isdigit():
        return _RELOPS[op](int(a), int(b))
    return _RELOPS[op](a, b)


def _level_key(text: str) -> tuple[int, ...]:
    parts = text.split(".") if text else ["0"]
    if not all(p.isdigit() for p in parts):
        raise ExpansionError(f'bad compatibility level "{text}"')
    return tuple(int(p) for p in parts)
