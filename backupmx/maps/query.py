"""The ``%s %u %d %1..%9`` expansion of queries and result formats.

A query whose expansion needs a part the key lacks (``%d`` of ``user``, ``%u`` of
``@domain``) is not run at all: the key is simply not found, as in Postfix.
"""

from __future__ import annotations

from collections.abc import Callable

from backupmx.maps.definition import Definition

Template = tuple[str, ...]  # literal text, and one-letter directives written as "%x"
_DIRECTIVES = frozenset("sudSUD123456789%")


def parse_template(definition: Definition, name: str, text: str) -> Template:
    """Split ``text`` into literals and directives; an unknown ``%x`` is an error."""
    parts: list[str] = []
    literal: list[str] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch != "%":
            literal.append(ch)
            pos += 1
            continue
        directive = text[pos + 1:pos + 2]
        if directive not in _DIRECTIVES:  # also a lone % at the end
            raise definition.error(name, f"invalid expansion %{directive} in {text!r}")
        if directive == "%":
            literal.append("%")
        else:
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append("%" + directive)
        pos += 2
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _part(directive: str, text: str) -> str | None:
    """The piece of ``text`` that ``%s``, ``%u``, ``%d`` or ``%N`` stands for; None: absent."""
    local, at, domain = text.rpartition("@")
    if directive == "s":
        return text
    if directive == "u":
        if not at:
            return text
        return local or None
    if not at or not domain:
        return None
    if directive == "d":
        return domain
    labels = domain.split(".")
    index = int(directive)
    return labels[-index] if index <= len(labels) and labels[-index] else None


def fill(template: Template, value: str, key: str,
         escape: Callable[[str], str] = str) -> str | None:
    """Expand ``template``: lower-case directives from ``value``, upper-case from ``key``
    (for a query both are the key); each piece passes through ``escape``."""
    out: list[str] = []
    for part in template:
        if not part.startswith("%"):
            out.append(part)
            continue
        directive = part[1]
        source = key if directive in "SUD" else value
        piece = _part(directive.lower(), source)
        if piece is None:
            return None
        out.append(escape(piece))
    return "".join(out)


def in_domains(key: str, domains: frozenset[str]) -> bool:
    """The ``domain`` restriction: only ``user@domain`` keys of a listed domain are asked."""
    if not domains:
        return True
    local, at, domain = key.rpartition("@")
    return bool(at and local and domain.lower() in domains)
