"""Access-map search keys (check_client/helo/sender/recipient_access) and the search itself.

Each key comes with ``partial``: derived keys (parent domains, truncated networks,
``user@``) that pattern tables never see.
"""

from __future__ import annotations

import ipaddress
import re

from backupmx.maps.base import Table

Key = tuple[str, bool]  # (lookup key, partial)

_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def is_numeric_name(name: str) -> bool:
    """An IP address or ``[literal]``: such names have no parent domains."""
    if name.startswith("[") and name.endswith("]"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def parent_domains(name: str, parent_style: bool = True) -> list[str]:
    """``a.b.c`` → ``b.c``, ``c`` (PARENT style) or ``.b.c``, ``.c`` (DOT style)."""
    labels = name.split(".")
    suffixes = [".".join(labels[i:]) for i in range(1, len(labels))]
    return [s for s in suffixes if s] if parent_style else ["." + s for s in suffixes if s]


def _name_keys(name: str, parent_style: bool) -> list[Key]:
    keys: list[Key] = [(name, False)]
    if not is_numeric_name(name):
        keys += [(parent, True) for parent in parent_domains(name, parent_style)]
    return keys


def client_keys(name: str, ip: str, parent_style: bool = True) -> list[Key]:
    """Hostname, its parents, the IP, then the IP truncated at each ``.`` or ``:``."""
    keys = _name_keys(name, parent_style)
    keys.append((ip, False))
    delimiter = ":" if ":" in ip else "."
    rest = ip
    while delimiter in rest:
        rest = rest[:rest.rindex(delimiter)]
        if rest:
            keys.append((rest, True))
    return keys


def helo_keys(helo: str, parent_style: bool = True) -> list[Key]:
    """The HELO argument exactly as sent, then its parent domains."""
    return _name_keys(helo, parent_style)


def quote_local(local: str) -> str:
    """The RFC 5322 form of a local part: quoted unless it is a dot-atom."""
    if not local or _DOT_ATOM.match(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def address_keys(address: str, recipient_delimiter: str = "", parent_style: bool = True,
                 null_key: str = "<>") -> list[Key]:
    """Keys for a resolved envelope address, in Postfix order (domains before ``user@``).

    Each address-shaped key is tried in the quoted form first and, when it differs,
    the unquoted internal form right after.
    """
    if address == "":
        return [(null_key, False)]
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    base = _strip_extension(local, recipient_delimiter)

    def forms(local_part: str, suffix: str, partial: bool) -> list[Key]:
        quoted = quote_local(local_part) + suffix
        plain = local_part + suffix
        return [(quoted, partial)] + ([(plain, partial)] if plain != quoted else [])

    at_domain = "@" + domain if domain else ""
    keys = forms(local, at_domain, False)
    if base != local and domain:
        keys += forms(base, at_domain, True)
    if domain:
        keys.append((domain, True))
        if not is_numeric_name(domain):
            keys += [(parent, True) for parent in parent_domains(domain, parent_style)]
    keys += forms(local, "@", True)
    if base != local:
        keys += forms(base, "@", True)
    return keys


def _strip_extension(local: str, delimiters: str) -> str:
    """``user+ext`` → ``user`` at the first of the delimiter characters (none: unchanged)."""
    if not delimiters:
        return local
    cut = min((local.find(d) for d in delimiters if d in local), default=-1)
    return local[:cut] if cut > 0 else local


def access_lookup(tables: list[Table], keys: list[Key]) -> str | None:
    """The value of the first key found; partial keys skip pattern tables."""
    for key, partial in keys:
        for table in tables:
            if partial and table.pattern:
                continue
            value = table.lookup(key)
            if value is not None:
                return value
    return None
