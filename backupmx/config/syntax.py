"""main.cf text: logical lines, `name = value` assignments, and the Postfix list splitter.

Only whole-line comments exist, exactly as in Postfix: a `#` after a value is data,
so a configuration copied from a Postfix host means the same thing here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backupmx.config.issues import ConfigIssue

NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_SEPARATORS = frozenset(", \t\r\n")


@dataclass(frozen=True)
class Assignment:
    """One `name = value` logical line; `line` is where it starts."""

    name: str
    value: str
    line: int


def parse_main_cf(text: str, path: str) -> tuple[list[Assignment], list[ConfigIssue]]:
    """Split main.cf text into assignments (in file order) and syntax issues."""
    logical: list[tuple[int, list[str]]] = []
    issues: list[ConfigIssue] = []
    for number, physical in enumerate(text.split("\n"), start=1):
        stripped = physical.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if physical[0].isspace():
            if not logical:
                issues.append(ConfigIssue(path, number, "continuation line without a parameter "
                                          "line before it (a line that starts with white space "
                                          "continues the previous one)"))
                continue
            logical[-1][1].append(physical)
        else:
            logical.append((number, [physical]))

    assignments: list[Assignment] = []
    for number, parts in logical:
        name, sep, value = "".join(parts).partition("=")
        name = name.strip()
        if not sep:
            issues.append(ConfigIssue(path, number, f'missing "=" in "{_clip(name)}" '
                                      '(expected "name = value")'))
        elif not NAME_RE.fullmatch(name):
            issues.append(ConfigIssue(path, number, f'bad parameter name "{_clip(name)}" '
                                      "(letters, digits and _ only)"))
        else:
            assignments.append(Assignment(name, value.strip(), number))
    return assignments, issues


def split_list(text: str) -> list[str]:
    """Split a Postfix list: commas and/or white space separate, `{ ... }` groups one item.

    A whole item in braces loses the braces and surrounding space inside them; braces
    inside an item (`inline:{ a=b, c=d }`) protect their separators and are kept, for the
    lookup-table parser. Raises ValueError on unbalanced braces.
    """
    items: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in _SEPARATORS:
            i += 1
            continue
        start, depth = i, 0
        while i < n and (depth or text[i] not in _SEPARATORS):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth < 0:
                    raise ValueError(f'unexpected "}}" in "{_clip(text)}"')
            i += 1
        if depth:
            raise ValueError(f'missing "}}" in "{_clip(text)}"')
        items.append(_ungroup(text[start:i]))
    return items


def _ungroup(item: str) -> str:
    if not item.startswith("{"):
        return item
    close = matching_brace(item, 0)
    if close != len(item) - 1:
        raise ValueError(f'text after "}}" in "{_clip(item)}" (separate list items with a comma)')
    return item[1:-1].strip()


def matching_brace(text: str, start: int) -> int:
    """Index of the bracket closing the one at text[start] (`{` or `(`); ValueError if none."""
    opener = text[start]
    closer = "}" if opener == "{" else ")"
    depth = 0
    for i in range(start, len(text)):
        if text[i] == opener:
            depth += 1
        elif text[i] == closer:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f'missing "{closer}" in "{_clip(text[start:])}"')


def _clip(text: str, limit: int = 60) -> str:
    """Keep error messages one readable line even for long list values."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
