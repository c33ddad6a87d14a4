"""Deployment: the wheel in a fresh virtualenv, and the systemd unit that runs it.

The wheel is built from a copy of the source tree, installed with its dependencies
(from the package index pip is configured with) into ``ROOT/opt/backupmx``, where the
runbook and the unit put it, and run from there: ``--version``, ``check`` on the
example configuration, and ``serve`` under the unit's capability bounding set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupmx import __version__
from backupmx.cli import DEFAULT_CONFIG
from tests.e2e.util import message, send
from tests.peers.backupmx import BackupMX
from tests.peers.ports import port_is_free

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib/systemd/backupmx.service"
PREFIX = "/opt/backupmx"  # the virtualenv of docs/operations.md and of the unit's ExecStart


@dataclass
class Install:
    root: Path  # stands for / : the virtualenv is ROOT/opt/backupmx
    wheel: Path

    @property
    def venv(self) -> Path:
        return Path(str(self.root) + PREFIX)

    @property
    def program(self) -> Path:
        return self.venv / "bin" / "backupmx"


def _run(*args: str | Path, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def install() -> Iterator[Install]:
    """The wheel, built and installed once for this module.

    Under /tmp and readable by all: ``serve`` goes on importing from the virtualenv
    after it has switched to mail_owner.
    """
    root = Path(tempfile.mkdtemp(prefix="backupmx-install-", dir="/tmp"))
    root.chmod(0o755)
    try:
        src = root / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        shutil.copytree(REPO / "backupmx", src / "backupmx",
                        ignore=shutil.ignore_patterns("__pycache__"))
        res = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                   root / "dist", src)
        assert res.returncode == 0, res.stdout + res.stderr
        (wheel,) = (root / "dist").glob("backupmx-*.whl")
        venv = Install(root, wheel).venv
        res = _run(sys.executable, "-m", "venv", venv)
        assert res.returncode == 0, res.stdout + res.stderr
        res = _run(venv / "bin/pip", "install", "-q", wheel)
        assert res.returncode == 0, res.stdout + res.stderr
        yield Install(root, wheel)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_wheel_holds_every_file_of_the_package(install):
    with zipfile.ZipFile(install.wheel) as z:
        packed = {n for n in z.namelist() if n.startswith("backupmx/")}
    files = {p.relative_to(REPO).as_posix() for p in (REPO / "backupmx").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    assert files - packed == set(), "list them in [tool.setuptools.package-data]"


def test_the_installed_wheel_runs_from_its_virtualenv(install, tmp_path):
    res = _run(install.program, "--version", cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, f"backupmx {__version__}\n"), res.stderr
    res = _run(install.venv / "bin/python", "-c", "import backupmx; print(backupmx.__file__)",
               cwd=tmp_path)
    assert res.stdout.startswith(str(install.venv / "lib")), res.stdout + res.stderr
    example = REPO / "examples/backupmx.cf"
    res = _run(install.program, "-c", example, "check", cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, f"{example}: configuration OK\n"), res.stderr


def _unit() -> dict[str, list[str]]:
    """Each key of the unit file with its values, in order (comments left out)."""
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_the_unit_runs_what_the_runbook_installs(install):
    unit = _unit()
    program, *args = unit["ExecStart"][0].split()
    assert program == PREFIX + "/bin/backupmx"
    assert install.program.is_file() and os.access(install.program, os.X_OK)
    assert args == ["-c", DEFAULT_CONFIG, "serve"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    runbook = (REPO / "docs/operations.md").read_text()
    assert f"python3 -m venv {PREFIX}" in runbook
    assert f"{PREFIX}/bin/pip install" in runbook
    assert "cp contrib/systemd/backupmx.service /etc/systemd/system/" in runbook


def test_systemd_analyze_verify_passes(install, tmp_path):
    """The unit as shipped, but for ExecStart's program: the wheel's, which must exist."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run scripts/install-test-deps.sh as root"
    text = UNIT.read_text()
    assert text.count(PREFIX + "/bin/backupmx") == 1
    unit = tmp_path / "backupmx.service"
    unit.write_text(text.replace(PREFIX + "/bin/backupmx", str(install.program)))
    res = _run(analyze, "verify", unit, timeout=60)
    # verify exits 0 even for unknown keys and bad values: each is a line of output
    assert (res.returncode, res.stdout + res.stderr) == (0, "")
    # the sandbox as systemd rates it (0 best, 10 worst): no worse than the 2.6 it has,
    # most of which is for starting as root with five capabilities
    res = _run(analyze, "security", "--offline=yes", "--threshold=26", unit, timeout=60)
    assert res.returncode == 0, res.stdout[-400:] + res.stderr


def _privileged_port() -> int:
    for port in (25, *range(1023, 1000, -1)):
        if port_is_free("127.0.0.3", port):
            return port
    raise RuntimeError("no port below 1024 is free on 127.0.0.3")


@pytest.mark.skipif(os.geteuid() != 0, reason="a service starts as root")
def test_serve_starts_with_only_the_units_capabilities(install, unbound, smtp_port, primary):
    """Root limited to CapabilityBoundingSet and NoNewPrivileges, as systemd runs it:
    it binds a port below 1024, switches to mail_owner and takes mail, also on the next
    start, when the queue already belongs to mail_owner (0700)."""
    unit = _unit()
    caps = unit["CapabilityBoundingSet"][0].split()
    assert unit["NoNewPrivileges"] == ["yes"]
    bounding = ",".join(["-all", *("+" + c.removeprefix("CAP_").lower() for c in caps)])
    state = Path(tempfile.mkdtemp(prefix="backupmx-caps-", dir="/tmp"))
    state.chmod(0o755)
    owner = pwd.getpwnam("nobody")
    mx = BackupMX(state, f"""
mail_owner = nobody
smtpd_listen = 127.0.0.3:{_privileged_port()}
smtpd_worker_processes = 1
smtpd_recipient_restrictions = permit_mx_backup, reject_unauth_destination
""", unbound, smtp_port)
    mx.command = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all",
                  "--no-new-privs", str(install.program)]
    try:
        for n in (1, 2):
            mx.start()
            assert mx.proc is not None
            mx.wait_log(rf"running as nobody \(uid {owner.pw_uid}, gid {owner.pw_gid}\)")
            out = send(mx, "s@sender.example", ["alice@nausch.org"], message(f"start {n}"))
            assert out.data is not None and out.data[0] == 250, out.data
            primary.wait_for(n, timeout=30)
            assert mx.stop() == 0, mx.stderr_text()
            assert (state / "spool").stat().st_uid == owner.pw_uid
    finally:
        mx.stop()
        shutil.rmtree(state, ignore_errors=True)

