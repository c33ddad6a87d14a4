"""A private instance of the real Postfix (Debian package), started with ``postfix -c DIR``.

Its configuration, queue and data directories live in one temporary directory
under /tmp that the ``postfix`` user can enter (pytest's own temporary
directories are private to root).  smtpd listens on a loopback address and a
non-25 port named in master.cf; ``inet_interfaces`` must name an address that
Postfix finds on an interface, and only 127.0.0.1 is configured as such, so it
is that.  Nothing is delivered: every transport is ``discard:``.  Postfix logs to
``maillog_file`` inside the directory.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    def __init__(self, host: str, port: int, main_cf: str) -> None:
        self.host, self.port = host, port
        self.dir = Path(tempfile.mkdtemp(prefix="pf-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.conf = self.dir / "conf"
        self.maillog = self.dir / "maillog"
        for d in ("conf", "queue", "data"):
            (self.dir / d).mkdir()
        shutil.chown(self.dir / "data", "postfix")
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.dir / 'queue'}
data_directory = {self.dir / 'data'}
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtpd_peername_lookup = no
maillog_file = {self.maillog}
maillog_file_prefixes = /tmp
alias_maps =
alias_database =
local_transport = discard:
default_transport = discard:
relay_transport = discard:
{main_cf}
""")
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=f"{host}:{port}"))
        self.started = False

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Postfix prints its errors only to a terminal or syslog; `script` gives it a terminal.
        cmd = " ".join([POSTFIX, "-c", str(self.conf), *args])
        return subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    def start(self, timeout: float = 30.0) -> None:
        res = self._postfix("start")
        if res.returncode != 0:
            raise RuntimeError(f"postfix start failed:\n{res.stdout}{res.stderr}\n{self.log()}")
        self.started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "daemon started" in self.log():
                return
            time.sleep(0.2)
        raise RuntimeError(f"postfix master did not start:\n{self.log()}")

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def stop(self) -> None:
        if self.started:
            self._postfix("stop")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._postfix("status").returncode == 0:
                time.sleep(0.2)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
