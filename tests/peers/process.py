"""A peer that runs as a child process with its output in a log file (redis, haproxy)."""

from __future__ import annotations

import subprocess
from pathlib import Path


class LoggedProcess:
    """``proc`` once started, ``log_file`` for its output; stopped at most once."""

    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
