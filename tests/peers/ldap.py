"""A private slapd (Debian package) on a loopback port, for one test.

A ``slapd.conf`` of its own with one mdb database under ``dc=example,dc=org`` in the
test's directory; data goes in with ``ldapadd`` as the root DN.  ``stop()`` and
``start()`` again give the same directory on the same port.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import ldap3

from tests.peers.ports import free_port
from tests.peers.process import LoggedProcess

HOST = "127.0.0.1"
SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "rootsecret"
BASE_LDIF = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people
"""


def binary() -> str:
    return shutil.which("slapd") or "/usr/sbin/slapd"


class LdapServer(LoggedProcess):
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        (directory / "db").mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port((HOST,))
        self.log_file = directory / "slapd.log"
        self.conf = directory / "slapd.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text(
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            "include /etc/ldap/schema/inetorgperson.schema\n"
            "modulepath /usr/lib/ldap\n"
            "moduleload back_mdb\n"
            f"pidfile {directory}/slapd.pid\n"
            "database mdb\n"
            "maxsize 10485760\n"
            f'suffix "{SUFFIX}"\n'
            f'rootdn "{ROOT_DN}"\n'
            f"rootpw {ROOT_PW}\n"
            f"directory {directory}/db\n")
        self._seeded = False

    @property
    def url(self) -> str:
        return f"ldap://{HOST}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [binary(), "-f", str(self.conf), "-h", self.url + "/", "-d", "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited at start:\n{self.log_text()}")
            if self.ready():
                if not self._seeded:
                    self.add(BASE_LDIF)
                    self._seeded = True
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"slapd did not answer within {timeout} s:\n{self.log_text()}")

    def ready(self) -> bool:
        server = ldap3.Server(HOST, port=self.port, get_info=ldap3.NONE, connect_timeout=2)
        try:
            conn = ldap3.Connection(server, ROOT_DN, ROOT_PW, receive_timeout=2)
            ok = bool(conn.bind())
            conn.unbind()
            return ok
        except ldap3.core.exceptions.LDAPException:
            return False

    def add(self, ldif: str) -> None:
        """Add entries with the real ``ldapadd``, as an administrator would."""
        done = subprocess.run(
            ["ldapadd", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW],
            input=ldif.encode(), capture_output=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"ldapadd failed: {done.stderr.decode(errors='replace')}")
