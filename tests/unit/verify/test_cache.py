"""The SQLite cache file: map names, persistence, case-sensitive keys, the in-memory mirror."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backupmx.verify.cache import SqliteRecords, Store, map_path
from backupmx.verify.decide import BOUNCE, OK, Entry


@pytest.mark.parametrize("kind", ["btree", "hash", "lmdb", "sqlite", "BTREE"])
def test_map_types_name_one_sqlite_file_at_exactly_the_path(kind: str) -> None:
    assert map_path(f"{kind}:/var/lib/backupmx/verify") == "/var/lib/backupmx/verify"


def test_empty_map_is_memory_only() -> None:
    assert map_path("") is None
    assert map_path("  ") is None


@pytest.mark.parametrize("spec", ["texthash:/x", "redis://127.0.0.1:0/0", "/plain/path",
                                  "btree:"])
def test_other_map_names_are_configuration_errors(spec: str) -> None:
    with pytest.raises(ValueError, match="address_verify_map"):
        map_path(spec)


def test_records_survive_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "verify")
    s = Store(path)
    s.put("alice@nausch.org", Entry(OK, 0, 100.5, "250 2.1.5 Ok"))
    s.put("nobody@nausch.org", Entry(BOUNCE, 3, 200, "host x said: 550 no"))
    s.close()
    again = Store(path)
    assert again.get("alice@nausch.org") == Entry(OK, 0, 100.5, "250 2.1.5 Ok")
    assert again.get("nobody@nausch.org") == Entry(BOUNCE, 3, 200, "host x said: 550 no")
    assert again.get("carol@nausch.org") is None
    assert sorted(a for a, _ in again.items()) == ["alice@nausch.org", "nobody@nausch.org"]
    again.close()


def test_keys_are_case_sensitive_as_in_postfix(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "v"))
    s.put("Bob@Nausch.org", Entry(OK, 0, 1, "250"))
    assert s.get("bob@nausch.org") is None
    assert s.get("Bob@Nausch.org") == Entry(OK, 0, 1, "250")


def test_delete_and_non_printable_text(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "v"))
    s.put("a@x", Entry(BOUNCE, 0, 1, "550 bad\x01text"))
    assert s.get("a@x") == Entry(BOUNCE, 0, 1, "550 bad?text")
    s.delete("a@x")
    assert s.get("a@x") is None
    s.close()
    assert Store(str(tmp_path / "v")).get("a@x") is None


def test_a_malformed_record_counts_as_none(tmp_path: Path) -> None:
    path = str(tmp_path / "v")
    Store(path).put("ok@x", Entry(OK, 0, 1, "250"))
    db = sqlite3.connect(path)
    db.execute("INSERT INTO verify VALUES ('bad@x', 9, 0, 0, 'junk')")
    db.commit()
    db.close()
    assert Store(path).get("bad@x") is None


class CountingDb:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.selects = 0

    def execute(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        if sql.startswith("SELECT"):
            self.selects += 1
        return self.db.execute(sql, args)

    def close(self) -> None:
        self.db.close()


def test_a_cache_hit_reads_the_disk_at_most_once(tmp_path: Path) -> None:
    path = str(tmp_path / "v")
    Store(path).put("alice@x", Entry(OK, 0, 1, "250"))
    s = Store(path)
    s.open()
    records = s._records
    assert isinstance(records, SqliteRecords)
    counting = CountingDb(records.db)
    records.db = counting  # type: ignore[assignment]
    for _ in range(5):
        assert s.get("alice@x") == Entry(OK, 0, 1, "250")
        assert s.get("nobody@x") is None
    assert counting.selects == 2


def test_memory_store_keeps_records_in_the_process() -> None:
    s = Store(None)
    s.put("a@x", Entry(OK, 0, 1, "250"))
    assert s.get("a@x") == Entry(OK, 0, 1, "250")
    assert list(s.items()) == [("a@x", Entry(OK, 0, 1, "250"))]


def test_readonly_store_of_a_new_file_has_no_records(tmp_path: Path) -> None:
    path = str(tmp_path / "v")
    sqlite3.connect(path).close()  # an empty database: no table yet
    s = Store(path, readonly=True)
    s.open()
    assert s.get("a@x") is None
