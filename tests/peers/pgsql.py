"""A private PostgreSQL server (Debian package) on a loopback port, for one test.

``initdb`` makes a fresh cluster in the test's own directory with a password-only
superuser; as root, the server runs as the ``postgres`` user (PostgreSQL refuses
root), so the directory is one an unprivileged user can reach.  ``stop()`` shuts it
down at once (clients are cut off) and ``start()`` brings the same data back.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from tests.peers.ports import free_port
from tests.peers.process import LoggedProcess

HOST = "127.0.0.1"
USER = "backupmx"
PASSWORD = "s3cret pass"
DBNAME = "mail"


def bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (scripts/install-test-deps.sh)")
    return os.path.dirname(found[-1])


def _run_as() -> str | None:
    return "postgres" if os.getuid() == 0 else None


class PostgresServer(LoggedProcess):
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port((HOST,))
        self.data = directory / "data"
        self.log_file = directory / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        user = _run_as()
        if user is not None:
            shutil.chown(self.dir, user)
        pwfile = directory / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if user is not None:
            shutil.chown(pwfile, user)
        subprocess.run(
            [f"{bin_dir()}/initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, user=user)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '{HOST}'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\nfsync = off\n")

    def conninfo(self, dbname: str = DBNAME) -> str:
        return (f"host={HOST} port={self.port} user={USER} password='{PASSWORD}'"
                f" dbname={dbname}")

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [f"{bin_dir()}/postgres", "-D", str(self.data)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, user=_run_as())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_text()}")
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not answer within {timeout} s:\n{self.log_text()}")

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.conninfo("postgres"), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def sql(self, *statements: str, dbname: str = DBNAME) -> None:
        """Run statements as the superuser (autocommit, so CREATE DATABASE works)."""
        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT): sessions are cut off rather than waited for."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
