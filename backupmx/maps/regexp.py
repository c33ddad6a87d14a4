"""``regexp:`` and ``pcre:`` tables on Python's ``re``.

Both are case-insensitive by default (flag ``i`` toggles) and search the whole query
string.  POSIX bracket classes such as ``[[:digit:]]`` are translated, since ``re``
does not know them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from backupmx.maps.base import MapError, Table
from backupmx.maps.blocks import BlockTracker, keyword

_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r"\s",
    "blank": r" \t",
    "xdigit": "0-9A-Fa-f",
    "punct": r"!-/:-@\[-`{-~",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}
_POSIX_CLASS = re.compile(r"\[:([a-z]+):\]")
_FLAGS_AND_VALUE = re.compile(r"(\S*)\s*(.*)\Z", re.DOTALL)
_REFERENCE = re.compile(r"\$(?:(\d)|\{(\d+)\}|(\$))")

# The ``re`` flag each option toggles.  pcre ``A`` anchors (handled separately).  Options
# accepted as no-ops: regexp ``x`` (extended syntax, which is what ``re`` speaks anyway),
# pcre ``E`` (``$`` only at the very end) and ``X`` (strict escapes); they differ only
# for inputs a single-line SMTP lookup key cannot contain.
_REGEXP_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "x": 0}
_PCRE_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE,
               "A": 0, "E": 0, "X": 0}

Template = tuple[str | int, ...]  # literal text and capture-group numbers


@dataclass(slots=True)
class _Rule:
    regex: re.Pattern[str]
    anchored: bool
    negate: bool
    template: Template | None  # None for an ``if`` rule
    end: int = 0


class RegexpTable(Table):
    pattern = True

    def __init__(self, spec: str, rules: list[_Rule], source: str | None,
                 warnings: list[str]) -> None:
        super().__init__(spec, source, warnings)
        self._rules = rules

    def _find(self, key: str) -> str | None:
        rules = self._rules
        index = 0
        while index < len(rules):
            rule = rules[index]
            found = rule.regex.match(key) if rule.anchored else rule.regex.search(key)
            hit = (found is None) if rule.negate else (found is not None)
            if rule.template is None:
                index = index + 1 if hit else rule.end
                continue
            if hit:
                return expand(rule.template, found)
            index += 1
        return None


def expand(template: Template, found: re.Match[str] | None) -> str:
    """Fill in ``$n`` references; an unmatched group is empty."""
    if found is None:
        return "".join(str(part) for part in template)
    return "".join(part if isinstance(part, str) else (found.group(part) or "")
                   for part in template)


def _split_pattern(text: str, where: str) -> tuple[bool, str, str, str]:
    """``[!]/regex/flags rest`` → (negate, regex, flags, rest)."""
    negate = text.startswith("!")
    pos = 1 if negate else 0
    if pos >= len(text) or text[pos].isalnum() or text[pos].isspace():
        raise MapError(f"{where}: expected a delimited pattern such as /regex/")
    delimiter = text[pos]
    pos += 1
    start = pos
    while pos < len(text) and text[pos] != delimiter:
        pos += 2 if text[pos] == "\\" else 1
    if pos >= len(text):
        raise MapError(f"{where}: missing closing delimiter {delimiter!r}")
    regex = text[start:pos]
    tail = _FLAGS_AND_VALUE.match(text, pos + 1)
    assert tail is not None  # both groups accept the empty string
    return negate, regex, tail.group(1), tail.group(2).strip()


def _compile(regex: str, flags: str, pcre: bool, where: str) -> tuple[re.Pattern[str], bool]:
    table = _PCRE_FLAGS if pcre else _REGEXP_FLAGS
    options = re.IGNORECASE
    anchored = False
    for flag in flags:
        if flag not in table:
            raise MapError(f"{where}: unknown or unsupported regexp option {flag!r}")
        options ^= table[flag]
        anchored = anchored or flag == "A"
    source = _POSIX_CLASS.sub(lambda m: _posix_class(m, where), regex)
    try:
        return re.compile(source, options), anchored
    except re.error as exc:
        raise MapError(f"{where}: bad regular expression /{regex}/: {exc}") from exc


def _posix_class(found: re.Match[str], where: str) -> str:
    name = found.group(1)
    if name not in _POSIX_CLASSES:
        raise MapError(f"{where}: unknown character class [:{name}:]")
    return _POSIX_CLASSES[name]


def _template(value: str, groups: int, negate: bool, where: str) -> Template:
    """Parse ``$1``, ``${1}``, ``$$``; a ``$`` before anything else is literal."""
    parts: list[str | int] = []
    pos = 0
    for ref in _REFERENCE.finditer(value):
        parts.append(value[pos:ref.start()])
        pos = ref.end()
        if ref.group(3):
            parts.append("$")
            continue
        number = int(ref.group(1) or ref.group(2))
        if negate:
            raise MapError(f"{where}: ${number} used with a negated pattern (no captures)")
        if not 1 <= number <= groups:
            raise MapError(f"{where}: ${number} refers to a group the pattern does not have")
        parts.append(number)
    parts.append(value[pos:])
    return tuple(part for part in parts if part != "")


def parse_regexp(spec: str, origin: str, lines: Iterable[tuple[int, str]], pcre: bool,
                 source: str | None, warnings: list[str]) -> RegexpTable:
    """Build a RegexpTable from numbered logical lines; errors name ``origin:line``."""
    rules: list[_Rule] = []
    blocks = BlockTracker(origin)
    for number, text in lines:
        where = f"{origin}:{number}"
        word, rest = keyword(text)
        if word == "endif":
            if rest:
                raise MapError(f"{where}: text after endif: {rest!r}")
            rules[blocks.end(number)].end = len(rules)
            continue
        negate, regex, flags, value = _split_pattern(rest, where)
        compiled, anchored = _compile(regex, flags, pcre, where)
        if word == "if":
            if value:
                raise MapError(f"{where}: text after if pattern: {value!r}")
            blocks.begin(len(rules), number)
            rules.append(_Rule(compiled, anchored, negate, None))
            continue
        if not value:
            warnings.append(f"{origin}, line {number}: using empty replacement string")
        rules.append(_Rule(compiled, anchored, negate,
                           _template(value, compiled.groups, negate, where)))
    blocks.finish()
    return RegexpTable(spec, rules, source, warnings)
