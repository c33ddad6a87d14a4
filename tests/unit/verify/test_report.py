"""``backupmx verify`` output from a record."""

from __future__ import annotations

from backupmx.verify.decide import BOUNCE, OK, Entry, Timing
from backupmx.verify.report import describe, text

T = Timing(31 * 86400, 7 * 86400, 3 * 86400, 3 * 3600, True)
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_ok_record() -> None:
    d = describe("alice@nausch.org", Entry(OK, 0, NOW - 90, "250 2.1.5 Ok"), T, NOW)
    assert d == {
        "address": "alice@nausch.org", "status": "deliverable", "reply": "250 2.1.5 Ok",
        "updated": "2023-11-14T22:11:50Z", "age": 90,
        "next_refresh": "2023-11-21T22:11:50Z", "expires": "2023-12-15T22:11:50Z",
    }
    assert text(d) == (
        "alice@nausch.org: deliverable\n  reply: 250 2.1.5 Ok\n"
        "  updated: 2023-11-14T22:11:50Z (90 s ago)\n  next refresh: 2023-11-21T22:11:50Z\n"
        "  expires: 2023-12-15T22:11:50Z\n"
    )


def test_negative_record_uses_the_negative_times() -> None:
    d = describe("n@x", Entry(BOUNCE, 0, NOW, "550 no"), T, NOW)
    assert (d["status"], d["next_refresh"], d["expires"]) == (
        "undeliverable", "2023-11-15T01:13:20Z", "2023-11-17T22:13:20Z")


def test_no_record() -> None:
    d = describe("c@x", None, T, NOW)
    assert d["status"] == "unknown" and d["reply"] is None
    assert text(d) == "c@x: unknown (no verification result cached)\n"
