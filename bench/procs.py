"""The processes of a server under test: its master and the master's children."""

from __future__ import annotations

import os
from pathlib import Path


def with_children(master: int) -> list[int]:
    """``master`` and every process whose parent it is."""
    out = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().split()
            except OSError:
                continue
            if int(stat[3]) == master:
                out.append(int(entry))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes and of the children they have reaped.

    A difference of two readings is the work done in between, also by processes that
    started or ended meanwhile (Postfix's smtpd processes come and go; its master reaps
    them, so their time moves into the master's children's time).
    """
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")
