"""The recent SMTP rejects, bounded, for the status page.

Rejects happen in the smtpd workers; each sends the master one small notice (the
channel batches what one loop turn sends into one write), and the master keeps the
last :data:`LIMIT` of them.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

#: the most rejects kept
LIMIT = 500


@dataclass(frozen=True)
class Reject:
    time: float
    stage: str  # the SMTP stage the restriction ran at: RCPT, DATA, ...
    restriction: str  # what refused (engine.Verdict.by; smtpd, cleanup for their own)
    code: int
    dsn: str


class Recent:
    def __init__(self, limit: int = LIMIT) -> None:
        self.items: deque[Reject] = deque(maxlen=limit)

    def add(self, stage: str, restriction: str, code: int, dsn: str,
            now: float | None = None) -> None:
        self.items.append(
            Reject(time.time() if now is None else now, stage, restriction, code, dsn))

    def grouped(self) -> list[dict[str, Any]]:
        """Counts per stage, restriction and reply, the most frequent first, with the last
        time seen."""
        groups: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        for r in self.items:
            g = groups.setdefault((r.stage, r.restriction, r.code, r.dsn), {
                "stage": r.stage, "restriction": r.restriction, "code": r.code,
                "dsn": r.dsn, "count": 0, "last": r.time})
            g["count"] += 1
            g["last"] = max(g["last"], r.time)
        return sorted(groups.values(), key=lambda g: (-g["count"], g["stage"], g["code"]))
