"""The canonical form of envelope addresses, after parse_path."""

from __future__ import annotations

import pytest

from backupmx.addr import parse_path
from backupmx.cleanup.rewrite import canonical


@pytest.mark.parametrize(("written", "stored"), [
    ("<valid@nausch.org.>", "valid@nausch.org"),
    ("<@a.example,@b.example:user@nausch.org>", "user@nausch.org"),
    ("<@a.example:user@nausch.org.>", "user@nausch.org"),
    ('<"john doe"@nausch.org.>', "john doe@nausch.org"),
    ("<user@[192.0.2.1].>", "user@[192.0.2.1]"),
    ("<valid@nausch.org>", "valid@nausch.org"),
    ("<>", ""),
    ("<postmaster>", "postmaster"),
    # a dot after a dot or after the @ stays, so the domain is refused as malformed
    ("<user@nausch.org..>", "user@nausch.org.."),
    ("<user@.>", "user@."),
])
def test_canonical(written: str, stored: str) -> None:
    assert canonical(parse_path(written).address) == stored


def test_a_clean_address_is_the_same_object() -> None:
    address = "valid@nausch.org"
    assert canonical(address) is address
