from pathlib import Path

import pytest

from backupmx.maps import MapError, Maps
from backupmx.netlist import DomainList


@pytest.mark.parametrize(
    ("parent", "domain", "expected"),
    [
        (True, "nausch.org", True),
        (True, "NAUSCH.ORG.", True),
        (True, "mail.nausch.org", True),
        (False, "mail.nausch.org", False),
        (False, "nausch.org", True),
        (True, "xnausch.org", False),
        (True, "a.example.net", True),
        (False, "a.example.net", True),
        (True, "example.net", False),
        (True, "other.example", False),
    ],
)
def test_names(parent: bool, domain: str, expected: bool) -> None:
    domains = DomainList(["nausch.org", ".example.net"], None, parent_matches=parent)
    assert domains.match(domain) is expected


def test_negation_first_match_wins() -> None:
    domains = DomainList(["!private.nausch.org", "nausch.org"], None, parent_matches=True)
    assert domains.match("private.nausch.org") is False
    assert domains.match("x.private.nausch.org") is False
    assert domains.match("public.nausch.org") is True
    later = DomainList(["nausch.org", "!private.nausch.org"], None, parent_matches=True)
    assert later.match("private.nausch.org") is True


def test_file_items(tmp_path: Path) -> None:
    path = tmp_path / "relay"
    path.write_text("# backed-up domains\nnausch.org, tachtler.net\n  # indented comment\n"
                    ".sub.example\n")
    domains = DomainList([str(path), "last.example"], None, parent_matches=False)
    assert [domains.match(d) for d in ("nausch.org", "tachtler.net", "a.sub.example",
                                       "last.example", "backed-up", "comments")] == [
        True, True, True, True, False, False]
    negated = DomainList([f"!{path}", "nausch.org"], None, parent_matches=False)
    assert negated.match("nausch.org") is False


def test_missing_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read list file"):
        DomainList([f"{tmp_path}/none"], None, parent_matches=True)


def test_table_items_parent_and_dot_style() -> None:
    maps = Maps()
    spec = "inline:{ nausch.org=anything, .dot.example=x }"
    parent = DomainList([spec], maps, parent_matches=True)
    assert parent.match("Mail.Nausch.org") is True
    assert parent.match("nausch.org") is True
    assert parent.match("a.dot.example") is False
    dot = DomainList([spec], maps, parent_matches=False)
    assert dot.match("mail.nausch.org") is False
    assert dot.match("a.dot.example") is True


def test_pattern_table_gets_whole_name_only() -> None:
    domains = DomainList(["regexp:{ {/^nausch\\.org$/ x} }"], None, parent_matches=True)
    assert domains.match("nausch.org") is True
    assert domains.match("mail.nausch.org") is False


def test_tables_come_from_the_shared_registry(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("nausch.org x\n")
    maps = Maps()
    domains = DomainList([f"hash:{path}"], maps, parent_matches=True)
    assert domains.match("nausch.org") is True
    path.write_text("other.example x\nmore x\n")
    maps.reload_changed()
    assert domains.match("nausch.org") is False
    assert domains.match("other.example") is True


def test_broken_table_and_bad_items() -> None:
    with pytest.raises(MapError, match="unsupported lookup table type"):
        DomainList(["mysql:/etc/x"], None, parent_matches=True)
    with pytest.raises(ValueError, match="invalid domain pattern"):
        DomainList(["nausch.org/24"], None, parent_matches=True)
    with pytest.raises(ValueError, match="empty pattern"):
        DomainList(["!"], None, parent_matches=True)
    failing = DomainList(["texthash:/dev/null", "static:{}"], None, parent_matches=True)
    with pytest.raises(MapError, match="empty string"):
        failing.match("x.example")
