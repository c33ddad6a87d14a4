"""The real redis-server (Debian package) on a loopback port, for one test.

No persistence (``--save ""``, no append-only file) and its own working directory,
so nothing outlives the test; ``stop()`` and ``start()`` again give the same,
empty server on the same port, which is how a test takes Redis away and back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.peers.ports import free_port
from tests.peers.process import LoggedProcess

HOST = "127.0.0.1"


def binary() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer(LoggedProcess):
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port((HOST,))
        self.log_file = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [binary(), "--port", str(self.port), "--bind", HOST, "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self.log_text()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout} s:\n{self.log_text()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.makefile("rb").readline() == b"+PONG\r\n"
        except OSError:
            return False
