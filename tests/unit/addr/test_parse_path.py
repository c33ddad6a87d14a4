import pytest

from backupmx.addr import AddressSyntaxError, Parsed, parse_path


@pytest.mark.parametrize(
    ("arg", "address", "params"),
    [
        ("<a@b> SIZE=10 BODY=8BITMIME", "a@b", ["SIZE=10", "BODY=8BITMIME"]),
        ("a@b", "a@b", []),
        (" <a@b>", "a@b", []),
        ("<\"john doe\"@x>", "john doe@x", []),
        ("<\"user@evil\"@x>", "user@evil@x", []),
        ("<@a,@b:u@c>", "u@c", []),
        ("<@a.example, @b.example:user@c.example>", "user@c.example", []),
        ("@[127.0.0.3]:relaytest@nmap.scanme.org", "relaytest@nmap.scanme.org", []),
        ("<>", "", []),
        ("<> SIZE=0", "", ["SIZE=0"]),
        ("<a@b>   ", "a@b", []),
        ("< a@b >", "a@b", []),
        ("<a@b (a comment)>", "a@b", []),
        ("\"relaytest%nmap.scanme.org\"", "relaytest%nmap.scanme.org", []),
        ("nmap.scanme.org!relaytest", "nmap.scanme.org!relaytest", []),
        ("\"john doe\"@x SIZE=5", "john doe@x", ["SIZE=5"]),
        ("<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]", []),
        ("<\"a\\\"b\"@x>", "a\"b@x", []),
        ("<postmaster>", "postmaster", []),
    ],
)
def test_parse_path_accepts(arg: str, address: str, params: list[str]) -> None:
    assert parse_path(arg) == Parsed(address, params)


@pytest.mark.parametrize(
    "arg",
    [
        "<bad",
        "<a@b> <c@d>",
        "<a@b>x",
        "<a@b, c@d>",
        "<a b@c>",
        "a@b c@d",
        "<\"unterminated@x>",
        "<a@b (open>",
        "<<a@b>>",
        "<a@[1.2.3.4>",
        "<a@b;c>",
        "<@a,b:u@c>",
    ],
)
def test_parse_path_rejects(arg: str) -> None:
    with pytest.raises(AddressSyntaxError):
        parse_path(arg)


def test_strict_requires_brackets_and_no_comments() -> None:
    assert parse_path("<a@b>", strict=True) == Parsed("a@b", [])
    with pytest.raises(AddressSyntaxError, match="enclosed in <>"):
        parse_path("a@b", strict=True)
    with pytest.raises(AddressSyntaxError, match="comments"):
        parse_path("<a@b (c)>", strict=True)


def test_empty_quoted_local_part_is_not_the_null_address() -> None:
    assert parse_path('<"">').address == '""'
