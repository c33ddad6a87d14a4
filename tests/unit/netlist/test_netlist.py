from pathlib import Path

import pytest

from backupmx.netlist import NetList

ITEMS = [
    "!10.9.0.0/16",
    "10.0.0.0/8",
    "192.0.2.7",
    "[2001:db8::]/32",
    "[::1]/128",
    "fd00::/8",
    "[fe80::1]",
    "trusted.example",
    ".friends.example",
]


@pytest.mark.parametrize(
    ("ip", "hostname", "expected"),
    [
        ("10.1.2.3", None, True),
        ("10.9.1.1", None, False),
        ("192.0.2.7", None, True),
        ("192.0.2.8", None, False),
        ("2001:db8:5::1", None, True),
        ("2001:db9::1", None, False),
        ("::1", None, True),
        ("fd12::1", None, True),
        ("fe80::1", None, True),
        ("::ffff:10.1.1.1", None, True),
        ("198.51.100.1", "trusted.example", True),
        ("198.51.100.1", "mail.trusted.example", True),
        ("198.51.100.1", "a.friends.example", True),
        ("198.51.100.1", "friends.example", False),
        ("198.51.100.1", "unknown", False),
        ("not-an-ip", None, False),
    ],
)
def test_match(ip: str, hostname: str | None, expected: bool) -> None:
    assert NetList(ITEMS, None, parent_matches=True).match(ip, hostname) is expected


def test_dot_style_hostnames() -> None:
    nets = NetList(["trusted.example"], None, parent_matches=False)
    assert nets.match("198.51.100.1", "trusted.example") is True
    assert nets.match("198.51.100.1", "mail.trusted.example") is False


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("10.0.0.1/33", "invalid network '10.0.0.1/33'"),
        ("10.0.0.1/8", "invalid network '10.0.0.1/8': bad network pattern '10.0.0.1/8':"
                       " 10.0.0.1/8 has host bits set; perhaps you mean 10.0.0.0/8"),
        ("[2001:db8::1]/32", "invalid network '[2001:db8::1]/32'"),
        ("[junk]", "invalid network '[junk]'"),
        ("10.0.0.300", "invalid network or host pattern '10.0.0.300'"),
        ("10.0.0.300/8", "invalid network or host pattern '10.0.0.300/8'"),
    ],
)
def test_invalid_items(item: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        NetList([item], None, parent_matches=True)
    assert str(info.value).startswith(message)


def test_tables_are_asked_for_hostname_and_ip(tmp_path: Path) -> None:
    cidr = "cidr:{ {192.0.2.0/24 x} }"
    names = "inline:{ example.org=x }"
    nets = NetList([cidr, names], None, parent_matches=True)
    assert nets.match("192.0.2.55") is True
    assert nets.match("198.51.100.1", "mx.example.org") is True
    assert nets.match("198.51.100.1", "example.net") is False
    assert nets.match("198.51.100.1") is False


def test_file_items(tmp_path: Path) -> None:
    path = tmp_path / "nets"
    path.write_text("# our networks\n127.0.0.0/8 [::1]/128\n192.0.2.0/24\n")
    nets = NetList([str(path)], None, parent_matches=True)
    assert [nets.match(ip) for ip in ("127.0.0.2", "::1", "192.0.2.9", "10.0.0.1")] == [
        True, True, True, False]
