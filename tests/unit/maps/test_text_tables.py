from pathlib import Path

import pytest

from backupmx.maps import MapError, open_table


def write(tmp_path: Path, text: str, name: str = "access") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


SOURCE = """\
# comment line
Example.COM      REJECT no mail # here
"key with sp"    OK
"q\\"uo\\\\te"   DUNNO
multi            first part
    continued value
  # a comment between continuation lines
\tand more
lonely
alias:           something
"""


@pytest.mark.parametrize("kind", ["hash", "btree", "texthash"])
def test_source_format(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, SOURCE)
    table = open_table(f"{kind}:{path}")
    assert table.spec == f"{kind}:{path}"
    assert table.pattern is False
    assert table.lookup("example.com") == "REJECT no mail # here"
    assert table.lookup("EXAMPLE.com") == "REJECT no mail # here"
    assert table.lookup("key with sp") == "OK"
    assert table.lookup('q"uo\\te') == "DUNNO"
    assert table.lookup("multi") == "first part    continued value\tand more"
    assert table.lookup("lonely") is None
    assert table.lookup("alias:") == "something"
    assert table.lookup("missing") is None
    assert table.warnings == [
        f"{path}, line 9: expected format: key whitespace value",
        f"{path}, line 10: record is in \"key: value\" format; is this an alias file?",
    ]


def test_hash_duplicate_keeps_first(tmp_path: Path) -> None:
    path = write(tmp_path, "a OK\nA REJECT\n")
    table = open_table(f"hash:{path}")
    assert table.lookup("a") == "OK"
    assert table.warnings == [f"{path}, line 2: duplicate entry: \"a\"; keeping the first value"]


def test_texthash_duplicate_makes_table_unusable(tmp_path: Path) -> None:
    path = write(tmp_path, "a OK\nb OK\nA REJECT\n")
    table = open_table(f"texthash:{path}")
    with pytest.raises(MapError, match="config error") as info:
        table.lookup("b")
    assert str(info.value) == f'{path}:3: duplicate key "a" (config error: table unusable)'


def test_unterminated_quoted_key_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ok OK\n\"broken  OK\n")
    with pytest.raises(MapError) as info:
        open_table(f"hash:{path}")
    assert str(info.value) == f"{path}:2: missing closing '\"' in the key"


def test_orphan_continuation_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "  orphan OK\nkey OK\n")
    table = open_table(f"hash:{path}")
    assert table.lookup("orphan") is None
    assert table.lookup("key") == "OK"
    assert table.warnings == [
        f"{path}, line 1: logical line must not start with whitespace; ignored"]


def test_unreadable_file(tmp_path: Path) -> None:
    spec = f"hash:{tmp_path}/nope"
    with pytest.raises(MapError) as info:
        open_table(spec)
    assert str(info.value) == f"{spec}: cannot open {tmp_path}/nope: No such file or directory"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lmdb:/x", "lmdb:/x: unsupported lookup table type 'lmdb'"),
        ("/etc/postfix/access", "/etc/postfix/access: expected a lookup table as TYPE:NAME"),
        ("hash:", "hash:: expected a lookup table as TYPE:NAME"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(MapError) as info:
        open_table(spec)
    assert str(info.value).startswith(message)


def test_inline() -> None:
    table = open_table("inline:{ Key1=value1, { key2 = value with spaces } }")
    assert table.pattern is False
    assert table.lookup("KEY1") == "value1"
    assert table.lookup("key2") == "value with spaces"
    assert table.lookup("key3") is None


def test_inline_bad_item() -> None:
    with pytest.raises(MapError) as info:
        open_table("inline:{ a=b, junk }")
    assert str(info.value) == "inline:{ a=b, junk }:2: expected key=value, got 'junk'"
    with pytest.raises(MapError, match="enclosed in"):
        open_table("inline:a=b")


def test_static() -> None:
    assert open_table("static:OK").lookup("anything") == "OK"
    table = open_table("static:{ REJECT go away }")
    assert table.lookup("x") == "REJECT go away"
    assert table.pattern is False


def test_empty_result_is_a_config_error() -> None:
    with pytest.raises(MapError, match="empty string"):
        open_table("static:{}").lookup("x")
