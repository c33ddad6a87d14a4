"""Queue IDs: ten uppercase hex digits, shaped like Postfix's short form.

Postfix makes its IDs unique with the queue file's inode; our spool is one database, so the
ID is the time in microseconds (modulo 16**10, about 12.7 days) and a per-process clock that
never repeats or goes backwards: at more than one ID per microsecond it simply runs ahead.
Across restarts the wall clock has moved on, so the IDs of a new run follow those of the old
one.  Should a stepped-back clock or a second writing process ever reproduce a queued ID, the
spool refuses the duplicate instead of overwriting it.
"""

from __future__ import annotations

import threading
import time

DIGITS = 10
_MODULUS = 16**DIGITS

_lock = threading.Lock()
_last = 0


def new_id() -> str:
    """Return a fresh queue ID, e.g. ``3C1F51A2B3``."""
    global _last
    with _lock:
        _last = max(time.time_ns() // 1000, _last + 1)
        return f"{_last % _MODULUS:0{DIGITS}X}"
