"""TLS: inbound STARTTLS (with the CVE-2011-0411 defence), and outbound TLS levels.

The certificates are made here with openssl: a test CA, a server certificate for
backupmx (mx1.tachtler.net) and one for the primary (mx1.nausch.org).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.util import OUTSIDE, message, queue, reload, send, wait_queue
from tests.peers.primary import RecordingPrimary

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
HOST = "mx1.tachtler.net"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = d / "ca.key", d / "ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
             "-out", str(ca), "-days", "2", "-subj", "/CN=backupmx test CA")
    out: dict[str, Path] = {"ca": ca}
    for name in ("mx1.tachtler.net", "mx1.nausch.org"):
        key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName=DNS:{name}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
        out[name] = crt
        out[name + ".key"] = key
    other = d / "other-ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "o.key"),
             "-out", str(other), "-days", "2", "-subj", "/CN=another CA")
    out["other-ca"] = other
    return out


class Client:
    """Raw SMTP over a socket that can switch to TLS mid-session (no buffering past a reply)."""

    def __init__(self, mx) -> None:
        self.sock: socket.socket = socket.create_connection(
            (mx.host, mx.port), timeout=20, source_address=(OUTSIDE, 0)
        )
        self.pending = b""

    def _line(self) -> bytes:
        while b"\n" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> str:
        lines = []
        while True:
            line = self._line()
            lines.append(line.decode())
            if line[3:4] != b"-":
                return "\n".join(lines)

    def cmd(self, data: str | bytes) -> str:
        self.sock.sendall(data.encode() + b"\r\n" if isinstance(data, str) else data)
        return self.reply()

    def starttls(self) -> ssl.SSLSocket:
        assert self.pending == b"", self.pending
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOST)
        return self.sock

    def close(self) -> None:
        self.sock.close()


def tls_config(pki, level: str = "may") -> str:
    return (
        SEED + f"smtpd_tls_cert_file = {pki[HOST]}\nsmtpd_tls_key_file = {pki[HOST + '.key']}\n"
        f"smtpd_tls_security_level = {level}\n"
    )


def test_starttls_offered_after_etrn_and_works(backupmx_factory, primary, pki):
    mx = backupmx_factory(tls_config(pki))
    c = Client(mx)
    c.reply()
    ehlo = c.cmd("EHLO client.example.net").split("\n")
    assert ehlo[3:6] == ["250-VRFY", "250-ETRN", "250-STARTTLS"]
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    tls = c.starttls()
    version, cipher = tls.version(), tls.cipher()
    assert version in ("TLSv1.2", "TLSv1.3") and cipher is not None
    ehlo = c.cmd("EHLO client.example.net").split("\n")
    assert "250-STARTTLS" not in ehlo
    assert c.cmd("STARTTLS") == "554 5.5.1 Error: TLS already active"
    assert c.cmd("MAIL FROM:<sender@sender.example>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@nausch.org>") == "250 2.1.5 Ok"
    assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
    assert c.cmd(message("over tls") + b".\r\n").startswith("250 2.0.0 Ok: queued as ")
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    c.close()
    data = primary.wait_for(1, timeout=30)[0].data
    expect = (
        f"\r\n\t(using {version} with cipher {cipher[0]} ({cipher[2]}/{cipher[2]} bits))"
        "\r\n\tby mx1.tachtler.net (backupmx) with ESMTPS id "
    ).encode()
    assert expect in data.split(b"\r\n\r\n")[0]
    mx.wait_log(
        r"Anonymous TLS connection established from client\.example\.net\[127\.0\.0\.5\]: "
        + version.replace(".", r"\.") + " with cipher " + cipher[0]
    )


def test_pipelined_command_after_starttls_is_discarded(backupmx_factory, primary, pki):
    mx = backupmx_factory(tls_config(pki))
    c = Client(mx)
    c.reply()
    c.cmd("EHLO client.example.net")
    c.sock.sendall(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@sender.example>\r\n")
    assert c.reply() == "220 2.0.0 Ready to start TLS"
    c.starttls()
    # The first reply over TLS answers what we send now: NOOP and MAIL were not executed,
    # and the session state is reset (no transaction, no HELO name).
    assert c.cmd("RCPT TO:<alice@nausch.org>") == "503 5.5.1 Error: need MAIL command"
    assert c.cmd("EHLO client.example.net").startswith("250-mx1.tachtler.net\n")
    c.sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        c.sock.recv(100)  # nothing else is waiting
    c.close()
    log = mx.log_text()
    assert "evil@sender.example" not in log


def test_mail_state_before_starttls_is_forgotten(backupmx_factory, pki):
    mx = backupmx_factory(tls_config(pki))
    c = Client(mx)
    c.reply()
    c.cmd("EHLO client.example.net")
    assert c.cmd("MAIL FROM:<sender@sender.example>") == "250 2.1.0 Ok"
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.starttls()
    assert c.cmd("EHLO client.example.net").startswith("250-")
    assert c.cmd("RCPT TO:<alice@nausch.org>") == "503 5.5.1 Error: need MAIL command"
    c.close()


def test_encrypt_level_requires_starttls(backupmx_factory, primary, pki):
    mx = backupmx_factory(tls_config(pki, "encrypt"))
    c = Client(mx)
    c.reply()
    c.cmd("EHLO client.example.net")
    assert c.cmd("MAIL FROM:<sender@sender.example>") == (
        "530 5.7.0 Must issue a STARTTLS command first"
    )
    assert c.cmd("VRFY alice@nausch.org") == "530 5.7.0 Must issue a STARTTLS command first"
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.starttls()
    c.cmd("EHLO client.example.net")
    assert c.cmd("MAIL FROM:<sender@sender.example>") == "250 2.1.0 Ok"
    c.close()


def test_no_certificate_means_no_starttls(backupmx_factory):
    mx = backupmx_factory(SEED + "smtpd_tls_security_level = may\n")
    c = Client(mx)
    c.reply()
    assert "STARTTLS" not in c.cmd("EHLO client.example.net")
    assert c.cmd("STARTTLS") == "454 4.7.0 TLS not available due to local problem"
    c.close()
    mx.stop()
    mx = backupmx_factory(SEED, name="plain")
    c = Client(mx)
    c.reply()
    assert c.cmd("STARTTLS") == "502 5.5.1 Error: command not implemented"
    c.close()


def test_failed_handshake_does_not_hurt_the_server(backupmx_factory, pki):
    mx = backupmx_factory(tls_config(pki) + "smtpd_starttls_timeout = 3s\n")
    c = Client(mx)
    c.reply()
    c.cmd("EHLO client.example.net")
    assert c.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    c.sock.sendall(b"this is not a TLS ClientHello\r\n" * 10)
    c.sock.settimeout(10)
    try:
        while c.sock.recv(4096):
            pass
    except OSError:
        pass
    c.close()
    mx.wait_log(r"SSL_accept error from client\.example\.net\[127\.0\.0\.5\]")
    c = Client(mx)
    assert c.reply() == f"220 {HOST} ESMTP backupmx"
    c.close()


# --- outbound ---------------------------------------------------------------------------


@pytest.fixture
def tls_primary(smtp_port, pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["mx1.nausch.org"], pki["mx1.nausch.org.key"])
    server = RecordingPrimary("127.0.0.2", smtp_port, hostname="mx1.nausch.org",
                              ssl_context=ctx)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _used_starttls(server: RecordingPrimary) -> bool:
    return any(b"STARTTLS" in c.upper() for s in server.sessions for c in s.commands)


@pytest.mark.parametrize("level", ["may", "encrypt"])
def test_outbound_tls_levels_deliver_over_tls(backupmx_factory, tls_primary, level):
    mx = backupmx_factory(SEED + f"smtp_tls_security_level = {level}\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message(f"out {level}"))
    assert out.data is not None and out.data[0] == 250
    tls_primary.wait_for(1, timeout=30)
    assert _used_starttls(tls_primary)
    mx.wait_log(r"Untrusted TLS connection established to mx1\.nausch\.org")


def test_a_reload_to_encrypt_is_not_met_with_a_pooled_plain_session(backupmx_factory,
                                                                   tls_primary):
    mx = backupmx_factory(SEED + "smtp_tls_security_level = none\n")
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("plain"))
    tls_primary.wait_for(1, timeout=30)
    assert not _used_starttls(tls_primary)
    reload(mx, "smtp_tls_security_level = encrypt\n")
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("encrypted"))
    tls_primary.wait_for(2, timeout=30)
    carried = [s.commands for s in tls_primary.sessions if b"DATA" in s.commands]
    assert len(carried) == 2, carried  # the second message had a session of its own
    assert b"STARTTLS" not in carried[0]
    assert carried[1][:2] == [b"EHLO mx1.tachtler.net", b"STARTTLS"]
    mx.wait_log(r"Untrusted TLS connection established to mx1\.nausch\.org")


def test_outbound_verify_with_the_right_ca(backupmx_factory, tls_primary, pki):
    mx = backupmx_factory(
        SEED + f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {pki['ca']}\n"
    )
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("verified"))
    tls_primary.wait_for(1, timeout=30)
    mx.wait_log(r"Verified TLS connection established to mx1\.nausch\.org")


def test_outbound_verify_with_a_wrong_ca_defers(backupmx_factory, tls_primary, pki):
    mx = backupmx_factory(
        SEED + f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {pki['other-ca']}\n"
    )
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("unverified"))
    qid = out.queue_id
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"), timeout=30)
    assert q[0]["id"] == qid
    time.sleep(1.0)
    assert tls_primary.messages == []


def test_outbound_encrypt_to_a_plain_primary_defers(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtp_tls_security_level = encrypt\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("must encrypt"))
    assert out.data is not None and out.data[0] == 250
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"), timeout=30)
    assert "TLS is required, but was not offered by host mx1.nausch.org" in (
        q[0]["recipients"][0]["last_reply"]
    )
    assert primary.messages == []
    assert len(queue(mx)) == 1
