"""A private Postfix instance configured as the same backup MX, for side-by-side figures."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bench.procs import with_children

MAIN_CF = """\
compatibility_level = 3.6
myhostname = mx1.tachtler.net
queue_directory = {dir}/queue
data_directory = {dir}/data
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
mydestination =
relay_domains = nausch.org
relayhost = [{primary}]:{port}
smtpd_recipient_restrictions = {restrictions}
smtpd_client_connection_count_limit = 1000
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
disable_dns_lookups = yes
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
"""


class Postfix:
    """``postfix -c DIR`` with its own queue; smtpd on HOST:PORT only."""

    def __init__(self, root: Path, host: str, port: int, primary: str, restrictions: str,
                 cert: Path, key: Path) -> None:
        self.dir = root / "postfix"
        self.conf = self.dir / "conf"
        self.host, self.port = host, port
        self.primary = primary
        self.restrictions = restrictions
        self.cert, self.key = cert, key

    def setup(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.conf.mkdir(parents=True)
        (self.dir / "data").mkdir()
        (self.dir / "queue").mkdir()
        shutil.chown(self.dir / "data", "postfix")
        (self.conf / "main.cf").write_text(MAIN_CF.format(
            dir=self.dir, primary=self.primary, port=self.port, restrictions=self.restrictions,
            cert=self.cert, key=self.key))
        master = Path("/etc/postfix/master.cf").read_text()
        lines = []
        for line in master.splitlines():
            if re.match(r"^smtp\s+inet\s", line):
                line = f"{self.host}:{self.port} inet  n  -  n  -  -  smtpd"
            elif line and not line.startswith(("#", " ", "\t")):
                fields = line.split()
                if len(fields) >= 5 and fields[4] == "y":  # no chroot: it needs a prepared jail
                    fields[4] = "n"
                    line = "  ".join(fields)
            lines.append(line)
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), capture_output=True, text=True, check=check)

    def start(self) -> None:
        self._run("postfix", "-c", str(self.conf), "start")

    def stop(self) -> None:
        self._run("postfix", "-c", str(self.conf), "stop", check=False)

    def flush(self) -> None:
        self._run("postqueue", "-c", str(self.conf), "-f")

    def clear_queue(self) -> None:
        self._run("postsuper", "-c", str(self.conf), "-d", "ALL", check=False)

    def queue_size(self) -> int:
        out = self._run("postqueue", "-c", str(self.conf), "-p", check=False).stdout
        m = re.search(r"in (\d+) Requests?\.", out)
        return int(m.group(1)) if m else 0

    def pids(self) -> list[int]:
        """Every process of this instance (master and its children)."""
        pid_file = self.dir / "queue" / "pid" / "master.pid"
        try:
            master = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return with_children(master)
