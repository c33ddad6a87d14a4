"""backupmx configured as the same backup MX as the private Postfix."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.procs import with_children

CONFIG = """\
myhostname = mx1.tachtler.net
mydomain = tachtler.net
smtpd_listen = {host}:{port}
admin_listen = 127.0.0.1:{admin}
queue_directory = {dir}/spool
data_directory = {dir}/data
dns_nameservers = {dns}
mynetworks = 127.0.0.254/32
relay_domains = nausch.org
relayhost = [{primary}]:{port}
smtpd_recipient_restrictions = {restrictions}
smtpd_client_connection_count_limit = 0
maillog_file = {dir}/maillog
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
"""


class BackupMX:
    def __init__(self, root: Path, host: str, port: int, primary: str, restrictions: str,
                 dns: str, admin: int, cert: Path, key: Path) -> None:
        self.dir = root / "backupmx"
        self.host, self.port, self.admin = host, port, admin
        self.cf = self.dir / "backupmx.cf"
        self.text = CONFIG.format(host=host, port=port, admin=admin, dir=self.dir, dns=dns,
                                  primary=primary, restrictions=restrictions,
                                  cert=cert, key=key)
        self.proc: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.cf.write_text(self.text)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backupmx", "-c", str(self.cf), "serve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "backupmx", "-c", str(self.cf), *args],
                              capture_output=True, text=True)

    def flush(self) -> None:
        self.cli("queue", "flush")

    def clear_queue(self) -> None:
        self.cli("queue", "delete", "ALL")

    def queue_size(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=30) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("backupmx_queue_messages "):
                        return int(float(line.split()[1]))
        except OSError:
            return len(json.loads(self.cli("queue", "list", "--json").stdout or "[]"))
        return 0

    def pids(self) -> list[int]:
        """The master and its smtpd workers."""
        return with_children(self.proc.pid) if self.proc and self.proc.poll() is None else []
