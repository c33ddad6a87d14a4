"""The real postgrey (Debian package) on a loopback port or a unix socket, for one test.

postgrey runs in the foreground as root (so it can write its temporary --dbdir),
with empty whitelists, and logs its decisions to its stderr file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

POSTGREY = "/usr/sbin/postgrey"


class Postgrey:
    def __init__(self, directory: Path, delay: int = 2, inet: tuple[str, int] | None = None,
                 unix: Path | None = None) -> None:
        if (inet is None) == (unix is None):
            raise ValueError("give exactly one of inet, unix")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.inet, self.unix, self.delay = inet, unix, delay
        self.log_file = directory / "postgrey.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        db = self.dir / "db"
        db.mkdir(exist_ok=True)
        empty = self.dir / "empty"
        empty.write_text("")
        where = (f"--inet={self.inet[0]}:{self.inet[1]}" if self.inet
                 else f"--unix={self.unix}")
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [POSTGREY, where, f"--dbdir={db}", f"--delay={self.delay}",
                 f"--pidfile={self.dir / 'postgrey.pid'}", "--user=root", "--group=root",
                 "--hostname=greylist.test", f"--whitelist-clients={empty}",
                 f"--whitelist-recipients={empty}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgrey exited at start:\n{self.log_text()}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgrey did not listen within {timeout} s:\n{self.log_text()}")

    def _answers(self) -> bool:
        try:
            if self.unix is not None:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(str(self.unix))
            else:
                assert self.inet is not None
                socket.create_connection(self.inet, timeout=1).close()
        except OSError:
            return False
        return True

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
