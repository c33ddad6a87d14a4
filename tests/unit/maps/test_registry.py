import os
from pathlib import Path

import pytest

from backupmx.maps import MapError, Maps, lookup_list, open_table


def test_get_opens_once(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_text("k OK\n")
    maps = Maps()
    first = maps.get(f"hash:{path}")
    assert maps.get(f"hash:{path}") is first


def test_get_propagates_open_errors(tmp_path: Path) -> None:
    with pytest.raises(MapError, match="cannot open"):
        Maps().get(f"cidr:{tmp_path}/missing")


def _rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_reload_changed_picks_up_new_contents(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_text("k OK\n")
    spec = f"texthash:{path}"
    maps = Maps()
    maps.get("static:OK")
    assert maps.get(spec).lookup("k") == "OK"
    assert maps.reload_changed() == []
    old = maps.get(spec)
    assert maps.reload_changed() == [] and maps.get(spec) is old
    _rewrite(path, "k REJECT changed\n")
    assert maps.reload_changed() == []
    assert maps.get(spec).lookup("k") == "REJECT changed"


def test_broken_new_file_keeps_old_table(tmp_path: Path) -> None:
    path = tmp_path / "net"
    path.write_text("10.0.0.0/8 OK\n")
    spec = f"cidr:{path}"
    maps = Maps()
    assert maps.get(spec).lookup("10.1.1.1") == "OK"
    _rewrite(path, "10.0.0.1/8 OK\n")
    errors = maps.reload_changed()
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:1: bad network pattern '10.0.0.1/8'")
    assert maps.get(spec).lookup("10.1.1.1") == "OK"
    assert maps.reload_changed() == []  # reported once
    maps.reload_all()  # still broken: old contents stay
    assert maps.get(spec).lookup("10.1.1.1") == "OK"
    _rewrite(path, "10.0.0.0/8 REJECT fixed\n")
    maps.reload_all()
    assert maps.get(spec).lookup("10.1.1.1") == "REJECT fixed"


def test_removed_file_keeps_old_table(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_text("k OK\n")
    maps = Maps()
    maps.get(f"hash:{path}")
    path.unlink()
    errors = maps.reload_changed()
    assert errors == [f"hash:{path}: cannot open {path}: No such file or directory"]
    assert maps.get(f"hash:{path}").lookup("k") == "OK"


def test_lookup_list_first_table_wins() -> None:
    tables = [open_table("inline:{a=1}"), open_table("inline:{a=2, b=3}")]
    assert lookup_list(tables, "A") == "1"
    assert lookup_list(tables, "b") == "3"
    assert lookup_list(tables, "c") is None
