"""``cidr:`` tables: first matching network wins, keys are IP address strings."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from backupmx.maps.base import MapError, Table
from backupmx.maps.blocks import BlockTracker, keyword

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class _Rule:
    network: Network
    negate: bool
    value: str | None  # None for an ``if`` rule
    end: int = 0  # for ``if``: index just past the matching endif


def parse_network(text: str) -> Network:
    """``addr``, ``addr/len``, ``[addr]`` or ``[addr]/len``; host bits must be zero."""
    if text.startswith("["):
        inner, sep, tail = text[1:].partition("]")
        if not sep or (tail and not tail.startswith("/")):
            raise ValueError(f"bad address pattern {text!r}")
        text = inner + tail
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        hint = ""
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            hint = f"; perhaps you mean {fixed}"
        raise ValueError(f"bad network pattern {text!r}: {exc}{hint}") from exc


class CidrTable(Table):
    pattern = True

    def __init__(self, spec: str, rules: list[_Rule], source: str | None,
                 warnings: list[str]) -> None:
        super().__init__(spec, source, warnings)
        self._rules = rules

    def _find(self, key: str) -> str | None:
        try:
            address = ipaddress.ip_address(key)
        except ValueError:
            return None  # a hostname never matches
        rules = self._rules
        index = 0
        while index < len(rules):
            rule = rules[index]
            net = rule.network
            # A rule of the other address family never matches, negated or not.
            hit = net.version == address.version and (address in net) != rule.negate
            if rule.value is None:
                index = index + 1 if hit else rule.end
                continue
            if hit:
                return rule.value
            index += 1
        return None


def parse_cidr(spec: str, origin: str, lines: Iterable[tuple[int, str]],
               source: str | None, warnings: list[str]) -> CidrTable:
    """Build a CidrTable from numbered logical lines; errors name ``origin:line``."""
    rules: list[_Rule] = []
    blocks = BlockTracker(origin)
    for number, text in lines:
        word, rest = keyword(text)
        if word == "endif":
            if rest:
                raise MapError(f"{origin}:{number}: text after endif: {rest!r}")
            rules[blocks.end(number)].end = len(rules)
            continue
        if not rest:
            raise MapError(f"{origin}:{number}: missing network pattern")
        pattern, *tail = rest.split(None, 1)
        negate = pattern.startswith("!")
        try:
            network = parse_network(pattern[1:] if negate else pattern)
        except ValueError as exc:
            raise MapError(f"{origin}:{number}: {exc}") from exc
        if word == "if":
            if tail:
                raise MapError(f"{origin}:{number}: text after if pattern: {tail[0]!r}")
            blocks.begin(len(rules), number)
            rules.append(_Rule(network, negate, None))
            continue
        if not tail:
            raise MapError(f"{origin}:{number}: expected network pattern followed by a value")
        rules.append(_Rule(network, negate, tail[0].strip()))
    blocks.finish()
    return CidrTable(spec, rules, source, warnings)
