import pytest

from backupmx.maps import access_lookup, address_keys, client_keys, helo_keys, open_table


def test_client_keys_parent_style() -> None:
    assert client_keys("a.b.example.com", "192.0.2.123") == [
        ("a.b.example.com", False),
        ("b.example.com", True),
        ("example.com", True),
        ("com", True),
        ("192.0.2.123", False),
        ("192.0.2", True),
        ("192.0", True),
        ("192", True),
    ]


def test_client_keys_dot_style_and_ipv6() -> None:
    assert client_keys("mx.example.com", "2001:db8:1::5", parent_style=False) == [
        ("mx.example.com", False),
        (".example.com", True),
        (".com", True),
        ("2001:db8:1::5", False),
        ("2001:db8:1:", True),
        ("2001:db8:1", True),
        ("2001:db8", True),
        ("2001", True),
    ]


def test_client_keys_unknown_and_numeric_names() -> None:
    assert client_keys("unknown", "10.1.2.3")[:2] == [("unknown", False), ("10.1.2.3", False)]
    assert client_keys("10.1.2.3", "10.1.2.3")[:2] == [("10.1.2.3", False), ("10.1.2.3", False)]


def test_helo_keys() -> None:
    assert helo_keys("Mail.Example.com") == [
        ("Mail.Example.com", False), ("Example.com", True), ("com", True)]
    assert helo_keys("[192.0.2.1]") == [("[192.0.2.1]", False)]
    assert helo_keys("localhost") == [("localhost", False)]


def test_address_keys_with_delimiter() -> None:
    assert address_keys("user+ext@sub.example.com", recipient_delimiter="+") == [
        ("user+ext@sub.example.com", False),
        ("user@sub.example.com", True),
        ("sub.example.com", True),
        ("example.com", True),
        ("com", True),
        ("user+ext@", True),
        ("user@", True),
    ]


def test_address_keys_without_delimiter_dot_style() -> None:
    assert address_keys("user+ext@sub.example.com", parent_style=False) == [
        ("user+ext@sub.example.com", False),
        ("sub.example.com", True),
        (".example.com", True),
        (".com", True),
        ("user+ext@", True),
    ]


def test_address_keys_null_sender_and_quoting() -> None:
    assert address_keys("") == [("<>", False)]
    assert address_keys("", null_key="<null>") == [("<null>", False)]
    assert address_keys("john doe@x.example") == [
        ('"john doe"@x.example', False),
        ("john doe@x.example", False),
        ("x.example", True),
        ("example", True),
        ('"john doe"@', True),
        ("john doe@", True),
    ]
    assert address_keys("u@[192.0.2.1]") == [
        ("u@[192.0.2.1]", False), ("[192.0.2.1]", True), ("u@", True)]


MAP = "inline:{ nausch.org=OK, abuse@=OK, { spam.nausch.org = REJECT no mail here } }"


@pytest.mark.parametrize(
    ("address", "value"),
    [
        ("x@spam.nausch.org", "REJECT no mail here"),
        ("x@mail.nausch.org", "OK"),
        ("abuse@other.example", "OK"),
        ("x@other.example", None),
    ],
)
def test_worked_example(address: str, value: str | None) -> None:
    assert access_lookup([open_table(MAP)], address_keys(address)) == value


def test_pattern_tables_only_see_full_keys() -> None:
    regexp = open_table("regexp:{ {/^example\\.com$/ REJECT parent}, {/^x@/ REJECT full} }")
    assert access_lookup([regexp], address_keys("y@example.com")) is None
    assert access_lookup([regexp], address_keys("x@sub.example.com")) == "REJECT full"
    cidr = open_table("cidr:{ {192.0.0.0/16 REJECT net} }")
    assert access_lookup([cidr], client_keys("unknown", "192.0.2.1")) == "REJECT net"


def test_first_found_key_wins_across_tables() -> None:
    tables = [open_table("inline:{ example.com=DUNNO }"),
              open_table("inline:{ a.example.com=REJECT }")]
    # The full hostname (found in the second table) is tried before the parent key.
    assert access_lookup(tables, client_keys("a.example.com", "192.0.2.1")) == "REJECT"
    assert access_lookup(tables, client_keys("b.example.com", "192.0.2.1")) == "DUNNO"
    assert access_lookup([open_table("static:OK")], client_keys("x", "1.2.3.4")) == "OK"
