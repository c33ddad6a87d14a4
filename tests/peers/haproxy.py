"""The real HAProxy (Debian package) in TCP mode on loopback, for one test.

:class:`HAProxy` has two frontends, one per PROXY protocol version: connections to
``port("v1")`` reach the backend with ``send-proxy``, those to ``port("v2")`` with
``send-proxy-v2``.  :class:`Pool` balances one frontend over several nodes in turn (static-rr, one
thread: the order is the test's to know)
with ``send-proxy-v2``; a connection that a node refuses (it is down) is retried on
the next one, as a load balancer in front of several MX nodes is set up.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.peers.ports import free_port
from tests.peers.process import LoggedProcess

HOST = "127.0.0.6"
OPTIONS = {"v1": "send-proxy", "v2": "send-proxy-v2"}


def binary() -> str:
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxy(LoggedProcess):
    def __init__(self, directory: Path, backend: tuple[str, int]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = {v: free_port((HOST,)) for v in OPTIONS}
        self.config_file = directory / "haproxy.cfg"
        self.log_file = directory / "haproxy.log"
        parts = ["defaults\n    mode tcp\n    timeout connect 5s\n"
                 "    timeout client 60s\n    timeout server 60s\n"]
        for v, option in OPTIONS.items():
            parts.append(f"frontend in_{v}\n    bind {HOST}:{self.ports[v]}\n"
                         f"    default_backend mx_{v}\n"
                         f"backend mx_{v}\n    server mx {backend[0]}:{backend[1]} {option}\n")
        self.config_file.write_text("".join(parts))
        self.proc: subprocess.Popen[bytes] | None = None

    def port(self, version: str = "v2") -> int:
        return self.ports[version]

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [binary(), "-db", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited at start:\n{self.log_text()}")
            if all(self._listens(p) for p in self.ports.values()):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not listen within {timeout} s:\n{self.log_text()}")

    @staticmethod
    def _listens(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex((HOST, port)) == 0


class Pool(HAProxy):
    def __init__(self, directory: Path, backends: list[tuple[str, int]]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = {"v2": free_port((HOST,))}
        self.config_file = directory / "haproxy.cfg"
        self.log_file = directory / "haproxy.log"
        servers = "".join(f"    server node{i} {host}:{port} send-proxy-v2\n"
                          for i, (host, port) in enumerate(backends))
        self.config_file.write_text(
            "global\n    nbthread 1\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n"
            "    timeout server 60s\n    retries 3\n    option redispatch 1\n"
            f"frontend mx\n    bind {HOST}:{self.ports['v2']}\n    default_backend nodes\n"
            f"backend nodes\n    balance static-rr\n{servers}")
        self.proc = None
