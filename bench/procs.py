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
