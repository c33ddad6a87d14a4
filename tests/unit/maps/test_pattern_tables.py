from pathlib import Path

import pytest

from backupmx.maps import MapError, open_table

CIDR = """\
192.168.1.1        OK
192.168.0.0/16     REJECT
2001:db8::/32      REJECT v6
[10.9.9.9]         HOLD
!10.0.0.0/8        DUNNO
if 10.0.0.0/8
10.1.0.0/16        OK inner
if !10.1.2.0/24
10.1.0.0/16        WARN nested
endif
endif
10.0.0.0/8         REJECT tail
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "table"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("192.168.1.1", "OK"),
        ("192.168.7.7", "REJECT"),
        ("2001:db8:1::5", "REJECT v6"),
        ("10.9.9.9", "HOLD"),
        ("8.8.8.8", "DUNNO"),
        ("10.1.3.4", "OK inner"),
        ("10.2.0.1", "REJECT tail"),
        ("2001:db9::1", None),
        ("mail.example.com", None),
    ],
)
def test_cidr(tmp_path: Path, key: str, value: str | None) -> None:
    table = open_table(f"cidr:{write(tmp_path, CIDR)}")
    assert table.pattern is True
    assert table.lookup(key) == value


def test_cidr_nested_if(tmp_path: Path) -> None:
    text = "if 10.0.0.0/8\nif !10.1.2.0/24\n10.1.0.0/16 WARN nested\nendif\nendif\n"
    table = open_table(f"cidr:{write(tmp_path, text)}")
    assert table.lookup("10.1.3.1") == "WARN nested"
    assert table.lookup("10.1.2.1") is None
    assert table.lookup("11.1.3.1") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.0/8 OK\n10.0.0.1/8 OK\n",
         ":2: bad network pattern '10.0.0.1/8': 10.0.0.1/8 has host bits set;"
         " perhaps you mean 10.0.0.0/8"),
        ("10.0.0.0/33 OK\n", ":1: bad network pattern '10.0.0.0/33'"),
        ("host.example OK\n", ":1: bad network pattern 'host.example'"),
        ("10.0.0.0/8\n", ":1: expected network pattern followed by a value"),
        ("endif\n", ":1: endif without matching if"),
        ("if 10.0.0.0/8\n10.0.0.0/8 OK\n", ":1: if without matching endif"),
    ],
)
def test_cidr_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MapError) as info:
        open_table(f"cidr:{path}")
    assert str(info.value).startswith(path + message)


def test_cidr_inline_form() -> None:
    table = open_table("cidr:{ {10.0.0.0/8 REJECT inside}, {0.0.0.0/0 OK} }")
    assert table.lookup("10.1.1.1") == "REJECT inside"
    assert table.lookup("192.0.2.1") == "OK"
    assert table.lookup("::1") is None


REGEXP = """\
/^mail\\.example\\.com$/      OK
/^(.*)@example\\.org$/       REJECT user $1 not welcome
/^(a)(b)?c@x$/              ${1}-${2}-$$1 cost $
/^Case@Sensitive$/i         CASE
!/\\.de$/                    DUNNO
if /^[[:digit:].]+$/
/^10\\./                     OK ten
endif
/\\.de$/                     REJECT german
"""


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAIL.example.com", "OK"),
        ("Joe@Example.org", "REJECT user Joe not welcome"),
        ("ac@x", "a--$1 cost $"),
        ("Case@Sensitive", "CASE"),
        ("case@sensitive", "DUNNO"),
        ("10.1.2.3", "DUNNO"),
        ("host.de", "REJECT german"),
    ],
)
def test_regexp(tmp_path: Path, kind: str, key: str, value: str) -> None:
    table = open_table(f"{kind}:{write(tmp_path, REGEXP)}")
    assert table.pattern is True
    assert table.lookup(key) == value


def test_regexp_if_block(tmp_path: Path) -> None:
    path = write(tmp_path, "if /^[[:digit:].]+$/\n/^10[.]/ OK ten\nendif\n")
    table = open_table(f"regexp:{path}")
    assert table.lookup("10.1.2.3") == "OK ten"
    assert table.lookup("10.example") is None


def test_regexp_other_delimiter_and_escaped_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "|^a/b$| SLASH\n/^c\\/d$/ ESC\n")
    table = open_table(f"regexp:{path}")
    assert table.lookup("a/b") == "SLASH"
    assert table.lookup("c/d") == "ESC"


def test_pcre_flags(tmp_path: Path) -> None:
    text = "/b/A FIRST\n/^x.y$/s DOTALL\n/^ a b $/x SPACED\n"
    table = open_table(f"pcre:{write(tmp_path, text)}")
    assert table.lookup("abc") is None
    assert table.lookup("bc") == "FIRST"
    assert table.lookup("x\ny") == "DOTALL"
    assert table.lookup("ab") == "SPACED"


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("regexp", "/ok/ OK\n/(unclosed/ REJECT\n", ":2: bad regular expression /(unclosed/"),
        ("regexp", "/(a)/ $2\n", ":1: $2 refers to a group the pattern does not have"),
        ("regexp", "!/(a)/ $1\n", ":1: $1 used with a negated pattern (no captures)"),
        ("regexp", "/a/q OK\n", ":1: unknown or unsupported regexp option 'q'"),
        ("pcre", "/a/U OK\n", ":1: unknown or unsupported regexp option 'U'"),
        ("regexp", "/a OK\n", ":1: missing closing delimiter '/'"),
        ("regexp", "abc OK\n", ":1: expected a delimited pattern such as /regex/"),
        ("regexp", "/[[:bogus:]]/ OK\n", ":1: unknown character class [:bogus:]"),
        ("pcre", "if /a/\n/b/ OK\n", ":1: if without matching endif"),
        ("pcre", "/b/ OK\nendif\n", ":2: endif without matching if"),
    ],
)
def test_regexp_errors(tmp_path: Path, kind: str, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MapError) as info:
        open_table(f"{kind}:{path}")
    assert str(info.value).startswith(path + message)


def test_regexp_empty_value_warns_then_fails_lookup(tmp_path: Path) -> None:
    path = write(tmp_path, "/^x$/\n")
    table = open_table(f"regexp:{path}")
    assert table.warnings == [f"{path}, line 1: using empty replacement string"]
    assert table.lookup("y") is None
    with pytest.raises(MapError, match="empty string"):
        table.lookup("x")


def test_regexp_inline_form() -> None:
    table = open_table("pcre:{ {/^(.+)@spam\\.example$/ REJECT no $1}, {/./ DUNNO} }")
    assert table.lookup("bob@spam.example") == "REJECT no bob"
    assert table.lookup("bob@ham.example") == "DUNNO"
    with pytest.raises(MapError) as info:
        open_table("regexp:{ {/a/ OK}, {/(/ X} }")
    assert str(info.value).startswith("regexp:{ {/a/ OK}, {/(/ X} }:2: bad regular expression")
