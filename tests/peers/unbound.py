"""A real unbound on loopback, serving the tests' DNS from local data only.

Why unbound and not a fake resolver: backupmx's DNS code must be exercised against
a server that speaks real DNS (NXDOMAIN vs NODATA vs SERVFAIL, TTLs, TCP
fallback), and unbound's ``local-data`` lets the tests define zones line by line.

Nothing is resolved from the internet: the root is a static local zone, so a
name without local data is NXDOMAIN at once. Names under a "servfail zone" are
delegated to a loopback port where nothing listens, so unbound answers SERVFAIL
(after a fraction of a second, thanks to a short ``infra-cache-max-rtt``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from tests.peers.ports import free_port

#: where the delegations for servfail zones point: a port nobody listens on
DEAD_SERVER = "127.0.0.1@1"


def find_program(name: str) -> str:
    """Path of an unbound program; /usr/sbin is not on every user's PATH."""
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed; run scripts/install-test-deps.sh as root")
    return found


RR_LINE = re.compile(
    r"^\s*(?P<owner>\S+)(?:\s+(?P<ttl>\d+))?(?:\s+IN)?\s+(?P<type>[A-Za-z][A-Za-z0-9]*)"
    r"\s+(?P<rdata>\S.*?)\s*$",
    re.IGNORECASE,
)


def fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def parse_rr(rr: str) -> tuple[str, dns.rdata.Rdata]:
    """A zone-file RR line (``OWNER [TTL] [IN] TYPE RDATA``) to its owner and its data.

    Two lines are the same record when both agree, whatever their TTL, case or
    spacing; a malformed line is a ValueError here rather than an unbound error.
    """
    m = RR_LINE.match(rr)
    if m is None:
        raise ValueError(f"not a resource record line: {rr!r}")
    try:
        rdtype = dns.rdatatype.from_text(m["type"])
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, rdtype, m["rdata"], origin=dns.name.root, relativize=False
        )
    except dns.exception.DNSException as e:
        raise ValueError(f"bad resource record {rr!r}: {e}") from e
    return fqdn(m["owner"]), rdata


def owner_of(rr: str) -> str:
    """The owner name of an RR line, lowercased, with the final dot."""
    return parse_rr(rr)[0]


def conf_string(value: str) -> str:
    """Quote a value for unbound.conf; TXT data in double quotes needs single outer quotes."""
    if '"' not in value:
        return f'"{value}"'
    if "'" in value:
        raise ValueError(f"cannot quote both kinds of quotes for unbound.conf: {value!r}")
    return f"'{value}'"


class Unbound:
    """One unbound process with its own temporary directory, config, log and control socket.

    ``records`` are zone-file RR lines served as local data, e.g.
    ``"nausch.org. 300 IN MX 10 mx1.nausch.org."``; ``servfail_zones`` are domains
    whose every name answers SERVFAIL.
    """

    def __init__(
        self,
        records: Iterable[str] = (),
        servfail_zones: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port((host,), udp=True)
        self.servfail_zones = [fqdn(z) for z in servfail_zones]
        self._records = list(records)
        for rr in self._records:
            owner_of(rr)
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``IP:PORT``, as an item of backupmx's ``dns_nameservers``."""
        return f"{self.host}:{self.port}"

    @property
    def records(self) -> list[str]:
        """The RR lines served right now, in the order they were given."""
        return list(self._records)

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RuntimeError("unbound is not started")
        return self._dir

    @property
    def config_file(self) -> Path:
        return self.directory / "unbound.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "unbound.log"

    def config_text(self, directory: Path) -> str:
        """The whole unbound.conf: loopback only, no privileges dropped, local data."""
        lines = [
            "server:",
            f"  interface: {self.host}",
            f"  port: {self.port}",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  do-udp: yes",
            "  do-tcp: yes",
            "  so-reuseport: no",
            "  num-threads: 1",
            "  outgoing-range: 64",
            "  num-queries-per-thread: 32",
            "  msg-cache-size: 1m",
            "  rrset-cache-size: 1m",
            f'  directory: "{directory}"',
            '  chroot: ""',
            '  username: ""',
            f'  pidfile: "{directory}/unbound.pid"',
            f'  logfile: "{directory}/unbound.log"',
            "  use-syslog: no",
            "  verbosity: 1",
            "  log-queries: yes",
            '  module-config: "iterator"',
            "  access-control: 127.0.0.0/8 allow",
            "  do-not-query-localhost: no",
            "  rrset-roundrobin: no",
            # a dead delegation must turn into SERVFAIL quickly, not after ~10 s of retries
            "  infra-cache-max-rtt: 100",
            '  local-zone: "." static',
            # replaces unbound's built-in zone, which knows only 127.0.0.1
            '  local-zone: "127.in-addr.arpa." static',
        ]
        lines += [f'  local-zone: "{z}" transparent' for z in self.servfail_zones]
        lines += [f"  local-data: {conf_string(rr)}" for rr in self._records]
        for zone in self.servfail_zones:
            lines += ["stub-zone:", f'  name: "{zone}"', f"  stub-addr: {DEAD_SERVER}"]
        lines += [
            "remote-control:",
            "  control-enable: yes",
            f'  control-interface: "{directory}/control.sock"',
            "  control-use-cert: no",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start unbound in the foreground and return once it answers queries."""
        if self._proc is not None:
            raise RuntimeError("unbound is already running")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="backupmx-unbound-"))
        self.config_file.write_text(self.config_text(self._dir))
        with open(self._dir / "unbound.stderr", "wb") as err:
            self._proc = subprocess.Popen(
                [find_program("unbound"), "-d", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                problem = self.failure_text()
                self.stop()
                raise RuntimeError(f"unbound exited at start:\n{problem}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"unbound did not answer within {timeout} s")

    def _answers(self) -> bool:
        try:
            dns.query.udp(
                dns.message.make_query(".", "SOA"), self.host, port=self.port, timeout=0.2
            )
        except (dns.exception.Timeout, OSError):
            return False
        return True

    def failure_text(self) -> str:
        parts = []
        for name in ("unbound.stderr", "unbound.log"):
            path = self.directory / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        """Stop unbound and remove its directory; safe to call when not running."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def control(self, *args: str) -> str:
        """Run one unbound-control command against this instance; RuntimeError on failure."""
        result = subprocess.run(
            [find_program("unbound-control"), "-c", str(self.config_file), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        out = result.stdout + result.stderr
        if result.returncode != 0 or out.startswith("error"):
            raise RuntimeError(f"unbound-control {' '.join(args)}: {out.strip()}")
        return out

    def add(self, rr: str) -> None:
        """Serve one more RR line from now on. Whoever adds a record must remove it."""
        name = owner_of(rr)
        self.control("local_data", rr)
        self._records.append(rr)
        self.control("flush_zone", name)

    def remove(self, what: str) -> None:
        """Stop serving a name (``what`` is a name) or one record (``what`` is an RR line).

        Removing a name drops every record of it, seed records included; a test
        that added one record to a seed name removes that RR line. unbound can only
        drop a whole name, so the records of that name that stay are entered again.
        """
        is_record = len(what.split()) > 1
        name = owner_of(what) if is_record else fqdn(what)
        if is_record:
            target = parse_rr(what)
            gone = [rr for rr in self._records if parse_rr(rr) == target]
        else:
            gone = [rr for rr in self._records if owner_of(rr) == name]
        if not gone:
            raise KeyError(f"no such record or name: {what!r}")
        self._records = [rr for rr in self._records if rr not in gone]
        self.control("local_data_remove", name)
        for rr in self._records:
            if owner_of(rr) == name:
                self.control("local_data", rr)
        self.control("flush_zone", name)
