"""Run the real ``backupmx serve`` as a subprocess for end-to-end tests.

The test configuration plays the seed scenario: this host is mx1.tachtler.net
(127.0.0.3), backup MX for nausch.org whose primary mx1.nausch.org is 127.0.0.2.
Every SMTP server of the scenario listens on the same port number P (like port 25
on separate machines), so backupmx listens on 127.0.0.3:P and delivers to port P.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.peers.ports import free_port
from tests.peers.unbound import Unbound

PARAM = re.compile(r"^([A-Za-z0-9_]+)\s*=")


#: a PROXY protocol v2 header with the LOCAL command: "not proxied"
PROXY_V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])


def command() -> list[str]:
    """The installed console script next to this Python, else ``python -m backupmx``."""
    script = Path(sys.executable).parent / "backupmx"
    return [str(script)] if script.exists() else [sys.executable, "-m", "backupmx"]


def defined_names(config_text: str) -> set[str]:
    """Parameter names that a main.cf-style text sets."""
    return {m.group(1) for line in config_text.splitlines() if (m := PARAM.match(line))}


def merge_config(defaults: dict[str, str], extra: str) -> str:
    """The defaults, minus what ``extra`` sets, followed by ``extra`` verbatim."""
    overridden = defined_names(extra)
    lines = [f"{name} = {value}" for name, value in defaults.items() if name not in overridden]
    return "\n".join(lines) + "\n" + extra.strip("\n") + "\n"


def parameter(config_text: str, name: str) -> str | None:
    """The last value given to ``name`` (single-line values only)."""
    value = None
    for line in config_text.splitlines():
        m = PARAM.match(line)
        if m and m.group(1) == name:
            value = line.split("=", 1)[1].strip()
    return value


def split_hostport(item: str) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":")
    return host.strip("[]"), int(port)


class BackupMX:
    """One backupmx server with its own configuration file and state under ``tmp_path``.

    ``config_text`` holds main.cf lines; a parameter set there replaces the test
    default of the same name.
    """

    def __init__(
        self,
        tmp_path: Path,
        config_text: str,
        unbound: Unbound,
        smtp_port: int,
        admin_port: int | None = None,
    ) -> None:
        self.dir = tmp_path
        self.smtp_port = smtp_port
        self.admin_port = admin_port if admin_port is not None else free_port(("127.0.0.3",))
        defaults = {
            "myhostname": "mx1.tachtler.net",
            "mydomain": "tachtler.net",
            "mynetworks": "127.0.0.1/32",
            "queue_directory": str(tmp_path / "spool"),
            "data_directory": str(tmp_path / "data"),
            "dns_nameservers": unbound.address,
            "smtpd_listen": f"127.0.0.3:{smtp_port}",
            "smtp_tcp_port": str(smtp_port),
            "admin_listen": f"127.0.0.3:{self.admin_port}",
            "permit_mx_backup_networks": "127.0.0.2/32",
            "maillog_file": str(tmp_path / "maillog"),
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "10s",
            "queue_run_delay": "1s",
        }
        self.config_text = merge_config(defaults, config_text)
        self.config_file = tmp_path / "backupmx.cf"
        self.config_file.write_text(self.config_text)
        listen = (parameter(self.config_text, "smtpd_listen") or "").replace(",", " ").split()
        self.host, self.port = split_hostport(listen[0])
        self.stderr_file = tmp_path / "backupmx.stderr"
        self.command = command()  # a test may run another installation, or wrap it
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return Path(parameter(self.config_text, "maillog_file") or self.dir / "maillog")

    def start(self, timeout: float = 15.0) -> None:
        """Start ``backupmx serve``; return once it greets with 220 on its SMTP port."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("backupmx is already running")
        with open(self.stderr_file, "ab") as err:
            self.proc = subprocess.Popen(
                [*self.command, "-c", str(self.config_file), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env={k: v for k, v in os.environ.items() if k != "BACKUPMX_CONFIG"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"backupmx exited with {self.proc.returncode} at start:\n{self.stderr_text()}"
                )
            if self._greets():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"backupmx gave no 220 within {timeout} s:\n{self.stderr_text()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                if parameter(self.config_text, "smtpd_upstream_proxy_protocol") == "haproxy":
                    s.sendall(PROXY_V2_LOCAL)  # as a load balancer's health check
                replies = s.makefile("rb")
                if replies.readline().startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    replies.readline()
                    return True
        except OSError:
            pass
        return False

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL when it does not exit in time. The exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is finished or cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def sighup(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("backupmx is not running")
        self.proc.send_signal(signal.SIGHUP)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``backupmx -c FILE ARGS...`` and return its result (never raises on status)."""
        return subprocess.run(
            [*self.command, "-c", str(self.config_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log_text(self) -> str:
        """The maillog file, or the server's stderr when logging goes there."""
        path = self.log_file
        if str(path) in ("-", "/dev/stdout", "/dev/stderr") or not path.exists():
            return self.stderr_text()
        return path.read_text(errors="replace")

    def stderr_text(self) -> str:
        if not self.stderr_file.exists():
            return ""
        return self.stderr_file.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait for a log line matching the regular expression ``pattern``."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line matching {pattern!r} within {timeout} s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def smtp(self, source: str = "127.0.0.5", timeout: float = 30.0) -> smtplib.SMTP:
        """An SMTP client connected to the server, from ``source`` (the default client
        127.0.0.5 has forward-confirmed rDNS client.example.net and is not in mynetworks)."""
        return smtplib.SMTP(self.host, self.port, source_address=(source, 0), timeout=timeout)
