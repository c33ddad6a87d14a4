import pytest

from backupmx.addr import domain_ok, is_fqdn, valid_address_literal, valid_hostname


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("mail.example.com", True),
        ("localhost", True),
        ("a_b.example", True),
        ("1.2.3.example", True),
        ("x" * 63 + ".com", True),
        ("x" * 64 + ".com", False),
        ("-a.example", False),
        ("a-.example", False),
        ("a..example", False),
        ("a.example.", False),
        ("", False),
        ("192.0.2.1", False),
        ("123", False),
        ("exa mple.com", False),
        ("ex@mple.com", False),
        ("bücher.de", False),
    ],
)
def test_valid_hostname(name: str, ok: bool) -> None:
    assert valid_hostname(name) is ok


def test_hostname_length_limit() -> None:
    name_255 = ".".join(["a" * 63] * 4)  # 4*63 + 3 dots
    assert len(name_255) == 255
    assert valid_hostname(name_255) is True
    assert valid_hostname(name_255 + "a") is False


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[1.2.3.4]", True),
        ("[IPv6:2001:db8::1]", True),
        ("[ipv6:::1]", True),
        ("[2001:db8::1]", False),
        ("[1.2.3]", False),
        ("[1.2.3.256]", False),
        ("1.2.3.4", False),
        ("[]", False),
        ("[IPv6:1.2.3.4]", False),
    ],
)
def test_valid_address_literal(text: str, ok: bool) -> None:
    assert valid_address_literal(text) is ok


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("user@example.com", True),
        ("user@example.com.", True),
        ("user@[192.0.2.1]", True),
        ("user@192.0.2.1", False),
        ("user@[192.0.2.300]", False),
        ("user@exa_mple", True),
        ("user@-bad.example", False),
        ("user@", False),
        ("postmaster", True),
        ("victim@198.51.100.9", False),
    ],
)
def test_domain_ok(address: str, ok: bool) -> None:
    assert domain_ok(address) is ok


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("user@example.com", True),
        ("user@example.com.", True),
        ("user@localhost", False),
        ("user@[127.0.0.1]", True),
        ("relaytest%nmap.scanme.org", False),
        ("nmap.scanme.org!relaytest", False),
        ("user", False),
        ("user@bad_-.example", False),
        ("a@b@example.org", True),
    ],
)
def test_is_fqdn(address: str, ok: bool) -> None:
    assert is_fqdn(address) is ok
