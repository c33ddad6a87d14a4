"""Small helpers for talking SMTP to backupmx in end-to-end tests."""

from __future__ import annotations

import json
import smtplib
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.peers.backupmx import BackupMX
from tests.peers.ports import free_port

#: a client outside mynetworks, with forward-confirmed rDNS client.example.net
OUTSIDE = "127.0.0.5"
#: the replies of the verify and greylist tests for nobody@ and alice@nausch.org
NOBODY_577 = (
    "577 5.1.1 <nobody@nausch.org>: Recipient address rejected: undeliverable address: "
    "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <nobody@nausch.org>: Recipient address "
    "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)"
)
GREYLISTED = (
    "450 4.2.0 <alice@nausch.org>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/nausch.org.html"
)
#: a second backupmx node; it counts mx1.tachtler.net's 127.0.0.3 as its own address
NODE_B = "127.0.0.7"


@dataclass
class Outcome:
    mail: tuple[int, bytes]
    rcpts: list[tuple[int, bytes]] = field(default_factory=list)
    data: tuple[int, bytes] | None = None

    def rcpt_line(self, i: int = 0) -> str:
        code, text = self.rcpts[i]
        return f"{code} {text.decode()}"

    @property
    def queue_id(self) -> str:
        assert self.data is not None and self.data[0] == 250, self.data
        return self.data[1].decode().rsplit(" ", 1)[1]


class Raw:
    """A line-level SMTP client: send exact bytes, read each reply whole.

    ``cmd`` appends CRLF to a str and sends bytes as they are; ``reply`` gives the
    reply's lines joined by newlines, ``reply_lines`` them as a list.
    """

    def __init__(self, mx: BackupMX, source: str = OUTSIDE, timeout: float = 30) -> None:
        self.sock = socket.create_connection(
            (mx.host, mx.port), timeout=timeout, source_address=(source, 0)
        )
        self.f = self.sock.makefile("rb")

    def reply_lines(self) -> list[str]:
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError("closed")
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return lines

    def reply(self) -> str:
        return "\n".join(self.reply_lines())

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() + b"\r\n" if isinstance(data, str) else data)

    def cmd(self, data: str | bytes) -> str:
        self.send(data)
        return self.reply()

    def cmd_lines(self, data: str | bytes) -> list[str]:
        self.send(data)
        return self.reply_lines()

    def closed(self) -> bool:
        return self.f.readline() == b""

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def connect(mx: BackupMX, source: str = OUTSIDE, helo: str = "client.example.net") -> smtplib.SMTP:
    s = smtplib.SMTP(mx.host, mx.port, source_address=(source, 0), timeout=30)
    s.ehlo(helo)
    return s


def message(subject: str = "test", body: str = "Hello.\r\n", extra: str = "") -> bytes:
    return (
        f"From: <sender@sender.example>\r\nTo: <alice@nausch.org>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@sender.example>\r\n{extra}\r\n{body}"
    ).encode()


def send(
    mx: BackupMX,
    sender: str,
    rcpts: list[str],
    data: bytes | None = None,
    source: str = OUTSIDE,
    mail_options: list[str] | None = None,
    rcpt_options: list[str] | None = None,
) -> Outcome:
    """One transaction; DATA only when some recipient was accepted."""
    s = connect(mx, source)
    try:
        out = Outcome(s.mail(sender, mail_options or []))
        for r in rcpts:
            out.rcpts.append(s.rcpt(r, rcpt_options or []))
        if data is not None and any(c == 250 for c, _ in out.rcpts):
            s.putcmd("data")
            code, msg = s.getreply()
            assert code == 354, (code, msg)
            body = data if data.endswith(b"\r\n") else data + b"\r\n"
            s.send(_stuff(body) + b".\r\n")
            out.data = s.getreply()
        s.quit()
    finally:
        s.close()
    return out


def _stuff(body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)


def queue(mx: BackupMX) -> list[dict[str, Any]]:
    res = mx.cli("queue", "list", "--json")
    assert res.returncode == 0, res.stderr
    data: list[dict[str, Any]] = json.loads(res.stdout)
    return data


def wait_queue(mx: BackupMX, pred: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        q = queue(mx)
        if pred(q):
            return q
        if time.monotonic() > deadline:
            raise AssertionError(f"queue never matched: {q}")
        time.sleep(0.2)


def reload(mx: BackupMX, extra: str) -> None:
    """Append ``extra`` to the configuration file, SIGHUP, wait for the reload line."""
    done = mx.log_text().count("reload -- configuration")
    mx.config_file.write_text(mx.config_file.read_text() + extra)
    mx.sighup()
    deadline = time.monotonic() + 15
    while mx.log_text().count("reload -- configuration") == done:
        assert time.monotonic() < deadline, "reload not logged"
        time.sleep(0.05)


def strip_received(data: bytes) -> tuple[bytes, bytes]:
    """Split off our Received: header (first header, with its continuation lines)."""
    assert data.startswith(b"Received: "), data[:80]
    lines = data.split(b"\r\n")
    n = 1
    while lines[n].startswith((b"\t", b" ")):
        n += 1
    return b"\r\n".join(lines[:n]) + b"\r\n", b"\r\n".join(lines[n:])


def scrape(mx: BackupMX) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``GET /metrics`` on admin_listen, parsed by prometheus-client: sample → value."""
    url = f"http://127.0.0.3:{mx.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric(mx: BackupMX, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape(mx).items() if n == name and want <= ls)


def node_b_lines() -> str:
    """The lines that make a second node on NODE_B of a test configuration."""
    smtp = free_port((NODE_B,))
    admin = next(p for p in (free_port((NODE_B,)) for _ in range(50)) if p != smtp)
    return (f"smtpd_listen = {NODE_B}:{smtp}\n"
            f"admin_listen = {NODE_B}:{admin}\n"
            "proxy_interfaces = 127.0.0.3\n")
