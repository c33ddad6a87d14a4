"""smtpd_upstream_proxy_protocol = haproxy behind a real HAProxy: the client named by the
PROXY header (v1 and v2) is the client for restrictions, logs and the Received: header;
a connection without a valid header is refused before the banner, and logged."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.util import message, strip_received, wait_queue
from tests.peers.backupmx import PROXY_V2_LOCAL, BackupMX
from tests.peers.haproxy import HOST, HAProxy

PROXIED = (
    "smtpd_upstream_proxy_protocol = haproxy\n"
    "smtpd_upstream_proxy_timeout = 2s\n"
    "smtpd_client_restrictions = check_client_access inline:{{ 127.0.0.9=REJECT }}\n"
)
REFUSED = "421 4.3.0 mx1.tachtler.net Server local error"


def behind_haproxy(backupmx_factory, tmp_path: Path, smtp_port: int, workers: str,
                   extra: str = "") -> Iterator[tuple[BackupMX, HAProxy]]:
    balancer = HAProxy(tmp_path / "haproxy", ("127.0.0.3", smtp_port))
    balancer.start()
    try:
        mx = backupmx_factory(PROXIED.replace("{{", "{").replace("}}", "}")
                              + f"smtpd_worker_processes = {workers}\n" + extra)
        yield mx, balancer
    finally:
        balancer.stop()


WORKERS = pytest.mark.parametrize("workers", ["1", "0"], ids=["workers", "no-workers"])


@pytest.fixture(params=["1", "0"], ids=["workers", "no-workers"])
def proxied(request, backupmx_factory, tmp_path: Path, smtp_port: int
            ) -> Iterator[tuple[BackupMX, HAProxy]]:
    """backupmx (with smtpd workers and without) behind HAProxy."""
    yield from behind_haproxy(backupmx_factory, tmp_path, smtp_port, request.param)


def dial(port: int, source: str = "127.0.0.5", host: str = HOST) -> socket.socket:
    return socket.create_connection((host, port), timeout=30, source_address=(source, 0))


def chat(sock: socket.socket) -> Callable[[bytes], bytes]:
    f = sock.makefile("rb")

    def say(line: bytes) -> bytes:
        if line:
            sock.sendall(line + b"\r\n")
        reply = b""
        while True:
            got = f.readline()
            reply += got
            if not got or got[3:4] != b"-":
                return reply
    return say


def refused(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_proxied_client_is_the_client(proxied, primary, version):
    mx, balancer = proxied
    with dial(balancer.port(version)) as s:
        say = chat(s)
        assert say(b"").startswith(b"220 mx1.tachtler.net ESMTP")
        assert say(b"EHLO client.example.net").startswith(b"250-mx1.tachtler.net")
        assert say(b"MAIL FROM:<sender@sender.example>") == b"250 2.1.0 Ok\r\n"
        # the balancer's 127.0.0.1 is in mynetworks; the real client is not
        assert say(b"RCPT TO:<x@foreign.example>") == (
            b"454 4.7.1 <x@foreign.example>: Relay access denied\r\n")
        assert say(b"RCPT TO:<alice@nausch.org>") == b"250 2.1.5 Ok\r\n"
        assert say(b"DATA").startswith(b"354 ")
        body = message("proxied " + version)
        s.sendall(body + b".\r\n")
        assert say(b"").startswith(b"250 2.0.0 Ok: queued as ")
        assert say(b"QUIT").startswith(b"221 ")
    mx.wait_log(r"smtpd\[\d+\]: connect from client\.example\.net\[127\.0\.0\.5\]$")
    mx.wait_log(r"reject: RCPT from client\.example\.net\[127\.0\.0\.5\]: 454 4\.7\.1 ")
    got = primary.wait_for(1, timeout=30)[0]
    received, rest = strip_received(got.data)
    assert re.fullmatch(
        rb"Received: from client\.example\.net \(client\.example\.net \[127\.0\.0\.5\]\)\r\n"
        rb"\tby mx1\.tachtler\.net \(backupmx\) with ESMTP id [0-9A-F]+\r\n"
        rb"\tfor <alice@nausch\.org>; .+\r\n", received), received
    assert rest == body
    wait_queue(mx, lambda q: q == [])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_client_restriction_sees_the_proxied_address(proxied, version):
    mx, balancer = proxied
    with dial(balancer.port(version), source="127.0.0.9") as s:
        say = chat(s)
        assert say(b"").startswith(b"220 ")
        assert say(b"EHLO there.example").startswith(b"250-")
        assert say(b"MAIL FROM:<x@sender.example>") == b"250 2.1.0 Ok\r\n"
        assert say(b"RCPT TO:<alice@nausch.org>") == (
            b"554 5.7.1 <unknown[127.0.0.9]>: Client host rejected: Access denied\r\n")
    mx.wait_log(r"connect from unknown\[127\.0\.0\.9\]$")


@WORKERS
def test_the_connection_limit_counts_the_proxied_client(backupmx_factory, tmp_path,
                                                        smtp_port, workers):
    # The balancer's own address is in mynetworks, which the limits exempt.
    for mx, balancer in behind_haproxy(backupmx_factory, tmp_path, smtp_port, workers,
                                       "smtpd_client_connection_count_limit = 1\n"):
        with dial(balancer.port("v1")) as first:
            assert chat(first)(b"").startswith(b"220 ")
            with dial(balancer.port("v2")) as second:
                assert refused(second) == (
                    b"421 4.7.0 mx1.tachtler.net Error: too many connections from 127.0.0.5\r\n")
            with dial(balancer.port("v2"), source="127.0.0.9") as other:
                assert chat(other)(b"").startswith(b"220 ")
        mx.wait_log(r"too many connections from 127\.0\.0\.5 for client\.example\.net"
                    r"\[127\.0\.0\.5\]")


def _served_after(mx: BackupMX, balancer: HAProxy) -> None:
    """The server still serves a proxied client."""
    with dial(balancer.port("v2")) as s:
        say = chat(s)
        assert say(b"").startswith(b"220 mx1.tachtler.net ESMTP")
        assert say(b"QUIT").startswith(b"221 ")


def test_a_direct_connection_without_a_header_is_refused(proxied):
    mx, balancer = proxied
    start = time.monotonic()
    with dial(mx.port, host=mx.host) as s:
        assert refused(s) == (REFUSED + "\r\n").encode()  # no banner, after the timeout
    assert time.monotonic() - start >= 1.9
    mx.wait_log(r"smtpd\[\d+\]: warning: haproxy read: timeout error \(from \[127\.0\.0\.5\]\)$")
    assert "connect from client.example.net" not in mx.log_text()
    _served_after(mx, balancer)


def test_smtp_instead_of_a_header_is_refused_at_once(proxied):
    mx, balancer = proxied
    with dial(mx.port, host=mx.host) as s:
        s.sendall(b"EHLO client.example.net\r\n")
        assert refused(s) == (REFUSED + "\r\n").encode()
    mx.wait_log(r"warning: haproxy read: unrecognized protocol header: "
                r"EHLO client\.example\.net\\015\\012 \(from \[127\.0\.0\.5\]\)$")
    _served_after(mx, balancer)


@pytest.mark.parametrize("header", [
    b"PROXY UNKNOWN\r\n",
    b"PROXY TCP4 127.0.0.300 127.0.0.3 1025 25\r\n",
    b"PROXY TCP4 127.0.0.5 127.0.0.3 1025\r\n",
])
def test_a_garbage_header_is_refused(proxied, header):
    mx, balancer = proxied
    with dial(mx.port, host=mx.host) as s:
        s.sendall(header)
        assert refused(s) == (REFUSED + "\r\n").encode()
    mx.wait_log(r"warning: haproxy read: bad or missing ")
    _served_after(mx, balancer)


def test_a_slow_header_is_refused_at_the_timeout(proxied):
    mx, balancer = proxied
    with dial(mx.port, host=mx.host) as s:
        start = time.monotonic()
        for c in b"PROXY TCP4 127.0.0.7 127.0.0.3 ":  # a byte now and then: no renewal
            s.sendall(bytes([c]))
            time.sleep(0.1)
            if time.monotonic() - start > 2.5:
                break
        assert refused(s) == (REFUSED + "\r\n").encode()
        assert time.monotonic() - start < 4.5
    mx.wait_log(r"warning: haproxy read: timeout error")
    assert "127.0.0.7" not in mx.log_text()
    _served_after(mx, balancer)


def test_a_health_check_is_served_as_the_balancer(proxied):
    mx, balancer = proxied
    with dial(mx.port, source="127.0.0.8", host=mx.host) as s:
        s.sendall(PROXY_V2_LOCAL)
        say = chat(s)
        assert say(b"").startswith(b"220 mx1.tachtler.net ESMTP")
        assert say(b"QUIT").startswith(b"221 ")
    mx.wait_log(r"connect from unknown\[127\.0\.0\.8\]$")


def test_without_the_parameter_a_header_is_a_bad_command(backupmx_factory):
    mx = backupmx_factory()
    with dial(mx.port, host=mx.host) as s:
        say = chat(s)
        assert say(b"").startswith(b"220 ")
        assert say(b"PROXY TCP4 127.0.0.7 127.0.0.3 1025 25") == (
            b"500 5.5.2 Error: command not recognized\r\n")


def test_check_names_an_unknown_value(backupmx_factory):
    mx = backupmx_factory("smtpd_upstream_proxy_protocol = nginx\n", start=False)
    res = mx.cli("check")
    assert res.returncode != 0
    line = mx.config_text.splitlines().index("smtpd_upstream_proxy_protocol = nginx") + 1
    assert f"{mx.config_file}:{line}: " in res.stderr, res.stderr
    assert "smtpd_upstream_proxy_protocol" in res.stderr
