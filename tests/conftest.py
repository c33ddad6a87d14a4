"""Shared fixtures: the real peers of the seed scenario.

DNS (unbound, one per session), the primary MX of nausch.org and the MX of
sender.example (recording SMTP servers, fresh for each test), and a factory for
backupmx servers. Every process or thread started here is stopped at teardown,
also when the test fails.

Tests may change the DNS at run time with the ``dns_records`` fixture, which
takes the records away again afterwards. A test that calls ``unbound.add``
directly must ``unbound.remove`` the same RR line before it ends, because the
unbound instance is shared by the whole session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.backupmx import BackupMX
from tests.peers.ldap import LdapServer
from tests.peers.pgsql import PostgresServer
from tests.peers.ports import free_port
from tests.peers.primary import RecordingPrimary
from tests.peers.redis import RedisServer
from tests.peers.unbound import Unbound

#: the seed scenario's DNS
SEED_RECORDS = [
    "nausch.org. 300 IN MX 10 mx1.nausch.org.",
    "nausch.org. 300 IN MX 20 mx1.tachtler.net.",
    "mx1.nausch.org. 300 IN A 127.0.0.2",
    "mx1.tachtler.net. 300 IN A 127.0.0.3",
    "sender.example. 300 IN MX 10 mx.sender.example.",
    "mx.sender.example. 300 IN A 127.0.0.4",
    "foreign.example. 300 IN MX 10 mx.foreign.example.",
    "mx.foreign.example. 300 IN A 127.0.0.9",
    "evil.example. 300 IN MX 10 mx.evil.example.",
    "evil.example. 300 IN MX 20 mx1.tachtler.net.",
    "mx.evil.example. 300 IN A 127.0.0.10",
    "self.example. 300 IN MX 10 mx1.tachtler.net.",
    "5.0.0.127.in-addr.arpa. 300 IN PTR client.example.net.",
    "client.example.net. 300 IN A 127.0.0.5",
]
SERVFAIL_ZONES = ["broken.example"]

#: the addresses of the scenario's SMTP servers; all listen on the one port P
SMTP_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9", "127.0.0.10")


@pytest.fixture(scope="session")
def smtp_port() -> int:
    """P: the SMTP port of every server in the scenario (backupmx's smtp_tcp_port)."""
    return free_port(SMTP_HOSTS)


@pytest.fixture(scope="session")
def unbound() -> Iterator[Unbound]:
    """The session's DNS server with the seed records; ``broken.example`` SERVFAILs."""
    server = Unbound(records=SEED_RECORDS, servfail_zones=SERVFAIL_ZONES)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dns_records(unbound: Unbound) -> Iterator[Callable[[str], None]]:
    """``add(rr)`` for this test only: every record added is removed at teardown."""
    added: list[str] = []

    def add(rr: str) -> None:
        unbound.add(rr)
        added.append(rr)

    try:
        yield add
    finally:
        for rr in reversed(added):
            unbound.remove(rr)


@pytest.fixture
def primary(smtp_port: int) -> Iterator[RecordingPrimary]:
    """mx1.nausch.org on 127.0.0.2:P, accepting every recipient."""
    server = RecordingPrimary("127.0.0.2", smtp_port, hostname="mx1.nausch.org")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sender_mx(smtp_port: int) -> Iterator[RecordingPrimary]:
    """mx.sender.example on 127.0.0.4:P, where bounces and delay notices arrive."""
    server = RecordingPrimary("127.0.0.4", smtp_port, hostname="mx.sender.example")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1:port, empty and without persistence."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pgsql_server(open_dir: Path) -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1:port with an empty database ``mail``."""
    server = PostgresServer(open_dir / "pgsql")
    server.start()
    try:
        server.sql("CREATE DATABASE mail", dbname="postgres")
        yield server
    finally:
        server.stop()


@pytest.fixture
def ldap_server(tmp_path: Path) -> Iterator[LdapServer]:
    """A real slapd on 127.0.0.1:port serving ``dc=example,dc=org`` (ou=people in it)."""
    server = LdapServer(tmp_path / "ldap")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory that an unprivileged user can reach (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="backupmx-priv-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def backupmx_factory(
    tmp_path: Path, unbound: Unbound, smtp_port: int
) -> Iterator[Callable[..., BackupMX]]:
    """``make(config_text="", start=True, name="backupmx")`` → a BackupMX on 127.0.0.3:P.

    Each server gets its own directory ``tmp_path/name``; all are stopped at teardown.
    """
    servers: list[BackupMX] = []

    def make(config_text: str = "", start: bool = True, name: str = "backupmx") -> BackupMX:
        directory = tmp_path / name
        directory.mkdir()
        server = BackupMX(directory, config_text, unbound, smtp_port)
        servers.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
