"""Envelope addresses: parsing MAIL FROM/RCPT TO arguments and resolver canonicalisation.

Addresses are kept in the internal, unquoted form (``"john doe"@x`` is ``john doe@x``),
as Postfix does; relay decisions use the result of ``resolve``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

_ESMTP_PARAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(=\S*)?\Z")
_SOURCE_ROUTE = re.compile(r"@[^@,:\s]+(\s*,\s*@[^@,:\s]+)*\Z")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_SPECIALS = frozenset("<>,;:")


class AddressSyntaxError(ValueError):
    """The argument is not one well-formed address (501 5.1.7 / 5.1.3)."""


@dataclass(frozen=True)
class Parsed:
    """A MAIL FROM / RCPT TO argument: the internal address and the ESMTP parameters."""

    address: str
    params: list[str]


def parse_path(arg: str, strict: bool = False) -> Parsed:
    """Parse the text after ``FROM:`` / ``TO:``.

    ``strict`` (strict_rfc821_envelopes) demands ``<...>`` and refuses comments.
    """
    text = arg.strip()
    if text.startswith("<"):
        end = _scan(text, 1, stop=">")
        if end >= len(text):
            raise AddressSyntaxError("unbalanced '<'")
        inner, rest = text[1:end], text[end + 1:]
        if rest and not rest[0].isspace():
            raise AddressSyntaxError(f"unexpected text after '>': {rest.split()[0]!r}")
    else:
        if strict:
            raise AddressSyntaxError("the address must be enclosed in <>")
        end = _scan(text, 0, stop=" \t")
        inner, rest = text[:end], text[end:]
    params = rest.split()
    for param in params:
        if not _ESMTP_PARAM.match(param):
            raise AddressSyntaxError(f"unexpected text after the address: {param!r}")
    return Parsed(_internal_form(inner, strict), params)


def _scan(text: str, pos: int, stop: str) -> int:
    """Index of the first *stop* character outside quotes and comments (len if none)."""
    quoted = False
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and (quoted or depth):
            pos += 2
            continue
        if ch == '"' and not depth:
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")" and depth:
            depth -= 1
        elif not quoted and not depth and ch in stop:
            return pos
        pos += 1
    return pos


def _internal_form(text: str, strict: bool) -> str:
    """Drop a source route and comments, unquote quoted strings, refuse a second address."""
    text = text.strip()
    if text.startswith("@") and ":" in text:
        route, _, text = text.partition(":")
        if not _SOURCE_ROUTE.match(route):
            raise AddressSyntaxError(f"bad source route {route!r}")
        text = text.strip()
    out: list[str] = []
    space = False  # whitespace (or a comment) since the last character kept
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch in " \t" or ch == "(":
            if ch == "(":
                if strict:
                    raise AddressSyntaxError("comments are not allowed in the address")
                pos = _skip_comment(text, pos)
            else:
                pos += 1
            space = bool(out)
            continue
        if ch == '"':
            piece, pos = _quoted(text, pos)
        elif ch == "[":
            close = text.find("]", pos)
            if close < 0:
                raise AddressSyntaxError("unbalanced '['")
            piece, pos = text[pos:close + 1], close + 1
        elif ch == "\\" and pos + 1 < len(text):
            piece, pos = text[pos + 1], pos + 2
        elif ch in _SPECIALS or ord(ch) < 32 or ch == "\x7f":
            raise AddressSyntaxError(f"unexpected {ch!r} in the address (one address only)")
        else:
            piece, pos = ch, pos + 1
        if space and out[-1][-1] not in "@." and piece[0] not in "@.":
            raise AddressSyntaxError("more than one address, or junk in the address")
        out.append(piece)
        space = False
    return "".join(out)


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """Contents of the quoted string at *pos* with quoted-pairs resolved, and the next index."""
    chars: list[str] = []
    pos += 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text):
            chars.append(text[pos + 1])
            pos += 2
            continue
        if ch == '"':
            return "".join(chars) or '""', pos + 1
        chars.append(ch)
        pos += 1
    raise AddressSyntaxError("unbalanced '\"'")


def _skip_comment(text: str, pos: int) -> int:
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            pos += 2
            continue
        depth += (ch == "(") - (ch == ")")
        pos += 1
        if depth == 0:
            return pos
    raise AddressSyntaxError("unbalanced '('")


def valid_hostname(name: str) -> bool:
    """Postfix hostname syntax: labels of ``[A-Za-z0-9_-]`` (1-63, no ``-`` at either end),
    at most 255 characters, not purely numeric.  A trailing dot is the caller's to strip.
    """
    if not name or len(name) > 255:
        return False
    if not all(_LABEL.match(label) for label in name.split(".")):
        return False
    return not name.replace(".", "").isdigit()


def valid_address_literal(text: str) -> bool:
    """``[1.2.3.4]`` or ``[IPv6:2001:db8::1]``."""
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        return False
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def _final_domain(address: str) -> str | None:
    """The domain after the last ``@`` with one trailing dot removed; None without ``@``."""
    if "@" not in address:
        return None
    domain = address.rpartition("@")[2]
    return domain[:-1] if domain.endswith(".") else domain


def domain_ok(address: str) -> bool:
    """Is the final domain a valid hostname or address literal?  (No domain is fine.)

    ``user@192.0.2.1`` is refused: a bare IP is not a domain (resolve_numeric_domain=no).
    """
    domain = _final_domain(address)
    if domain is None:
        return True
    if domain.startswith("["):
        return valid_address_literal(domain)
    return valid_hostname(domain)


def is_fqdn(address: str) -> bool:
    """The reject_non_fqdn_* test on an address as sent; literals pass, no ``@`` fails."""
    domain = _final_domain(address)
    if domain is None:
        return False
    if domain.startswith("["):
        return True
    return "." in domain and valid_hostname(domain)


@dataclass(frozen=True)
class Resolved:
    """An address after trivial-rewrite style canonicalisation."""

    address: str
    domain: str  # lower case, "" when there is none
    routed: bool  # sender-specified routing (%, !, extra @) is left
    local: bool  # the domain is this host (mydestination or an own [ip] literal)


def resolve(address: str, is_local_domain: Callable[[str], bool], myhostname: str) -> Resolved:
    """Canonicalise an internal-form address the way the Postfix resolver does.

    Local ``@domain`` parts are peeled off and the routing forms inside them unwrapped
    (``a%b@local`` → ``a@b``, ``b!a@local`` → ``a@b``, ``a@b@local`` → ``a@b``) until a
    remote domain is reached.  *is_local_domain* gets lower-case domains.
    """
    rest = address
    saved: str | None = None
    had_domain = False
    while True:
        if "@" in rest:
            local_part, _, domain = rest.rpartition("@")
            if domain.endswith(".") and len(domain) > 1 and domain[-2] != ".":
                domain = domain[:-1]
            had_domain = True
            if not is_local_domain(domain.lower()):
                rest = f"{local_part}@{domain}"
                saved = None
                break
            rest, saved = local_part, domain
        if "@" in rest:
            continue
        if "!" in rest:
            site, _, user = rest.partition("!")
            rest = f"{user}@{site}"
            continue
        if "%" in rest:
            user, _, site = rest.rpartition("%")
            rest = f"{user}@{site}"
            continue
        if rest in ("", '""'):
            rest = "MAILER-DAEMON"
            continue
        if not had_domain:
            rest = f"{rest}@{myhostname}"
            continue
        break
    if saved is not None:
        rest = f"{rest}@{saved}"
    final_at = rest.rfind("@")
    firsts = [i for i in (rest.find("@"), rest.find("!"), rest.find("%")) if i >= 0]
    routed = bool(firsts) and min(firsts) != final_at
    domain = rest[final_at + 1:].lower() if final_at >= 0 else ""
    return Resolved(rest, domain, routed, saved is not None)
