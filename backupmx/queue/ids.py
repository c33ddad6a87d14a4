"""Queue IDs: ten uppercase hex digits, shaped like Postfix's short form.

Postfix makes its IDs unique with the queue file's inode; our spool is one database, so the
ID is the time in microseconds (modulo 16**10, about 12.7 days) and a per-process clock that
never repeats or goes backwards: at more than one ID per microsecond it simply runs ahead.
Across restarts the wall clock has moved on, so the IDs of a new run follow those of the old
one.  The processes of one server (the master and its smtpd workers) each own a residue class
of the clock (``configure``), so no two of them can make the same ID.  Should a stepped-back
clock ever reproduce a queued ID, the spool refuses the duplicate instead of overwriting it.
"""

from __future__ import annotations

import threading
import time

DIGITS = 10
_MODULUS = 16**DIGITS

_lock = threading.Lock()
_last = 0
_slot = 0
_slots = 1


def configure(slot: int, slots: int) -> None:
    """Make this process's IDs those whose clock value is ``slot`` modulo ``slots``."""
    global _slot, _slots
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} outside 0..{slots - 1}")
    _slot, _slots = slot, slots


def slot_of(qid: str, slots: int) -> int:
    """Which process of ``slots`` made the ID ``qid``."""
    return int(qid, 16) % slots


def new_id() -> str:
    """Return a fresh queue ID, e.g. ``3C1F51A2B3``."""
    global _last
    with _lock:
        t = max(time.time_ns() // 1000, _last + 1)
        while t % _MODULUS % _slots != _slot:
            t += 1
        _last = t
        return f"{_last % _MODULUS:0{DIGITS}X}"
