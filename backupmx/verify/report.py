"""``backupmx verify``: a cache record as JSON and as text (pure functions)."""

from __future__ import annotations

import time
from typing import Any

from backupmx.verify.decide import OK, STATUS_NAMES, Entry, Timing


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def describe(address: str, entry: Entry | None, t: Timing, now: float) -> dict[str, Any]:
    """State, the primary's reply, age, next refresh and expiry of one record."""
    if entry is None or entry.updated == 0:
        return {"address": address, "status": "unknown", "reply": None, "updated": None,
                "age": None, "next_refresh": None, "expires": None}
    refresh, expire = (
        (t.positive_refresh, t.positive_expire) if entry.status == OK
        else (t.negative_refresh, t.negative_expire)
    )
    return {
        "address": address,
        "status": STATUS_NAMES[entry.status],
        "reply": entry.text,
        "updated": _iso(entry.updated),
        "age": round(max(0.0, now - entry.updated)),
        "next_refresh": _iso(entry.updated + refresh),
        "expires": _iso(entry.updated + expire),
    }


def text(d: dict[str, Any]) -> str:
    """The record for people, one ``name: value`` line each."""
    if d["status"] == "unknown":
        return f"{d['address']}: unknown (no verification result cached)\n"
    return (
        f"{d['address']}: {d['status']}\n"
        f"  reply: {d['reply']}\n"
        f"  updated: {d['updated']} ({d['age']} s ago)\n"
        f"  next refresh: {d['next_refresh']}\n"
        f"  expires: {d['expires']}\n"
    )
