"""The canonical form of an envelope address (Postfix's rewrite in the local context).

``addr.parse_path`` already drops ``<>``, a source route (``@a,@b:user@domain``),
comments and quoting; what is left here is one trailing dot of the domain
(``user@domain.`` is ``user@domain``: a next hop would refuse the dotted form, and
a backup MX that accepted it would bounce what it promised to deliver).  Appending
``$myorigin`` or ``$mydomain`` is not done: a backup MX relays, it has no local users.
"""

from __future__ import annotations


def canonical(address: str) -> str:
    """``address`` (internal form) with one trailing dot of its domain removed.

    As in Postfix, a dot after a dot or after the ``@`` stays, so that a malformed
    domain is still refused as what it is.
    """
    if address.endswith(".") and "@" in address and address[-2:-1] not in (".", "@"):
        return address[:-1]
    return address
