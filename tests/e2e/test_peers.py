"""The test peers themselves: real unbound answers and the recording primary."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import SEED_RECORDS
from tests.peers.backupmx import merge_config, parameter
from tests.peers.ports import free_port, port_is_free
from tests.peers.primary import Received, RecordingPrimary
from tests.peers.unbound import Unbound


def ask(server: Unbound, name: str, rtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    if tcp:
        return dns.query.tcp(query, server.host, port=server.port, timeout=5)
    return dns.query.udp(query, server.host, port=server.port, timeout=5)


def answers(server: Unbound, name: str, rtype: str) -> list[str]:
    reply = ask(server, name, rtype)
    assert reply.rcode() == dns.rcode.NOERROR
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


# -- unbound -----------------------------------------------------------------------------


def test_unbound_address_is_ip_and_port(unbound: Unbound) -> None:
    assert unbound.address == f"127.0.0.1:{unbound.port}"


def test_unbound_serves_seed_mx_and_a(unbound: Unbound) -> None:
    assert answers(unbound, "nausch.org", "MX") == ["10 mx1.nausch.org.", "20 mx1.tachtler.net."]
    assert answers(unbound, "mx1.nausch.org", "A") == ["127.0.0.2"]
    assert answers(unbound, "mx1.tachtler.net", "A") == ["127.0.0.3"]
    assert answers(unbound, "self.example", "MX") == ["10 mx1.tachtler.net."]
    reply = ask(unbound, "nausch.org", "MX")
    assert reply.answer[0].ttl == 300


def test_unbound_answers_over_tcp(unbound: Unbound) -> None:
    reply = ask(unbound, "evil.example", "MX", tcp=True)
    assert sorted(rd.to_text() for rd in reply.answer[0]) == [
        "10 mx.evil.example.",
        "20 mx1.tachtler.net.",
    ]


def test_unbound_ptr_for_loopback_client(unbound: Unbound) -> None:
    assert answers(unbound, "5.0.0.127.in-addr.arpa", "PTR") == ["client.example.net."]
    assert answers(unbound, "client.example.net", "A") == ["127.0.0.5"]
    # the rest of 127/8 has no reverse name, not even unbound's built-in localhost
    assert ask(unbound, "1.0.0.127.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_unbound_unknown_name_is_nxdomain_at_once(unbound: Unbound) -> None:
    started = time.monotonic()
    reply = ask(unbound, "no-such-host.example.com", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert time.monotonic() - started < 1.0


def test_unbound_known_name_other_type_is_nodata(unbound: Unbound) -> None:
    reply = ask(unbound, "mx1.nausch.org", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []


@pytest.mark.parametrize(
    "name", ["broken.example", "mx.broken.example", "2.0.0.127.rbl.broken.example"]
)
def test_unbound_servfail_zone_fails_quickly(unbound: Unbound, name: str) -> None:
    started = time.monotonic()
    reply = ask(unbound, name, "MX")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - started < 3.0


def test_dns_records_fixture_serves_rbl_zone(
    unbound: Unbound, dns_records: Callable[[str], None]
) -> None:
    dns_records("2.0.0.127.zen.example. 60 IN A 127.0.0.2")
    dns_records('2.0.0.127.zen.example. 60 IN TXT "Listed, see https://zen.example/q?ip=127.0.0.2"')
    assert answers(unbound, "2.0.0.127.zen.example", "A") == ["127.0.0.2"]
    assert answers(unbound, "2.0.0.127.zen.example", "TXT") == [
        '"Listed, see https://zen.example/q?ip=127.0.0.2"'
    ]
    assert ask(unbound, "3.0.0.127.zen.example", "A").rcode() == dns.rcode.NXDOMAIN


def test_unbound_remove_one_record_keeps_the_rest_of_the_name(unbound: Unbound) -> None:
    unbound.add("nausch.org. 300 IN MX 30 mx3.nausch.org.")
    try:
        assert answers(unbound, "nausch.org", "MX") == [
            "10 mx1.nausch.org.",
            "20 mx1.tachtler.net.",
            "30 mx3.nausch.org.",
        ]
    finally:
        unbound.remove("nausch.org.  300 IN MX 30 MX3.nausch.org.")
    assert answers(unbound, "nausch.org", "MX") == ["10 mx1.nausch.org.", "20 mx1.tachtler.net."]


def test_unbound_remove_a_whole_name(unbound: Unbound) -> None:
    unbound.add("gone.example. 300 IN MX 10 mx.gone.example.")
    unbound.add("gone.example. 300 IN A 127.0.0.11")
    assert answers(unbound, "gone.example", "A") == ["127.0.0.11"]
    unbound.remove("gone.example")
    assert ask(unbound, "gone.example", "MX").rcode() == dns.rcode.NXDOMAIN
    assert ask(unbound, "gone.example", "A").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(KeyError):
        unbound.remove("gone.example")


def test_session_dns_is_back_to_the_seed(unbound: Unbound) -> None:
    """Runs after the tests above: what they added is gone again."""
    assert unbound.records == SEED_RECORDS
    assert ask(unbound, "2.0.0.127.zen.example", "A").rcode() == dns.rcode.NXDOMAIN


def test_unbound_stop_frees_the_port() -> None:
    server = Unbound(records=["a.example. 60 IN A 127.0.0.1"])
    server.start()
    try:
        assert answers(server, "a.example", "A") == ["127.0.0.1"]
        directory = server.directory
        assert "a.example. A IN" in server.log_text()
    finally:
        server.stop()
    assert not directory.exists()
    assert port_is_free("127.0.0.1", server.port, udp=True)


def test_unbound_start_failure_reports_unbounds_own_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        server = Unbound(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="(?s)exited at start.*could not open ports"):
            server.start()
    with pytest.raises(RuntimeError, match="not started"):
        server.log_text()


def test_unbound_rejects_a_malformed_record() -> None:
    with pytest.raises(ValueError, match="bad resource record"):
        Unbound(records=["a.example. 60 IN A not-an-address"])


# -- the recording primary -------------------------------------------------------------


def test_primary_advertises_the_extensions(primary: RecordingPrimary) -> None:
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        code, _ = client.ehlo("client.example.net")
        assert code == 250
        assert sorted(client.esmtp_features) == [
            "8bitmime",
            "dsn",
            "enhancedstatuscodes",
            "pipelining",
            "size",
            "smtputf8",
        ]
        assert client.esmtp_features["size"] == "10240000"


def test_primary_records_message_byte_for_byte(primary: RecordingPrimary) -> None:
    body = (
        b"From: a@sender.example\r\nTo: u@nausch.org\r\nSubject: dots\r\n\r\n"
        b".starts with a dot\r\n..two dots\r\n.\tdot tab\r\n\xc3\xa4 8bit\r\nlast\r\n"
    )
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        client.ehlo("client.example.net")
        refused = client.sendmail(
            "a@sender.example",
            ["u@nausch.org", "v@nausch.org"],
            body,
            mail_options=["BODY=8BITMIME"],
            rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;v@nausch.org"],
        )
    assert refused == {}
    [message] = primary.wait_for(1)
    assert message == Received(
        mail_from="a@sender.example",
        mail_params=[f"size={len(body)}", "BODY=8BITMIME"],
        rcpts=["u@nausch.org", "v@nausch.org"],
        rcpt_params=[
            ["NOTIFY=FAILURE", "ORCPT=rfc822;v@nausch.org"],
            ["NOTIFY=FAILURE", "ORCPT=rfc822;v@nausch.org"],
        ],
        data=body,
    )
    [session] = primary.wait_for_sessions(1)
    assert session.commands[:4] == [
        b"ehlo client.example.net",
        b"mail FROM:<a@sender.example> size=%d BODY=8BITMIME" % len(body),
        b"rcpt TO:<u@nausch.org> NOTIFY=FAILURE ORCPT=rfc822;v@nausch.org",
        b"rcpt TO:<v@nausch.org> NOTIFY=FAILURE ORCPT=rfc822;v@nausch.org",
    ]
    data = [raw for kind, raw in session.transcript if kind == "D"]
    assert data == [body.replace(b"\r\n.", b"\r\n..") + b".\r\n"]


def raw_session(primary: RecordingPrimary, payload: bytes) -> bytes:
    """Send ``payload`` after a fixed envelope and return everything the server said."""
    with socket.create_connection((primary.host, primary.port), timeout=5) as s:
        s.sendall(b"EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<u@nausch.org>\r\nDATA\r\n" + payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_primary_ends_data_only_on_crlf_dot_crlf(primary: RecordingPrimary) -> None:
    payload = b"a\n.\nb\r\n.\nc\n.\r\nd\r\n.\r\nQUIT\r\n"
    replies = raw_session(primary, payload)
    assert replies.endswith(
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 Ok: queued as 00000001\r\n221 2.0.0 Bye\r\n"
    )
    [message] = primary.wait_for(1)
    assert message.mail_from == ""
    # ".\nc\n." begins a line (after CRLF): its first dot is transparency, removed
    assert message.data == b"a\n.\nb\r\n\nc\n.\r\nd\r\n"


def test_primary_users_and_reply_knobs(primary: RecordingPrimary) -> None:
    primary.users = {"u@nausch.org", "v@nausch.org"}
    primary.rcpt_reply["v@nausch.org"] = "450 4.2.0 <v@nausch.org>: try later"
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        client.ehlo("c.example")
        client.mail("s@sender.example")
        assert client.rcpt("U@nausch.org") == (250, b"2.1.5 Ok")
        assert client.rcpt("x@nausch.org") == (
            550,
            b"5.1.1 <x@nausch.org>: Recipient address rejected: "
            b"User unknown in virtual mailbox table",
        )
        assert client.rcpt("v@nausch.org") == (450, b"4.2.0 <v@nausch.org>: try later")
        primary.data_reply = "451 4.3.0 later"
        assert client.data(b"Subject: x\r\n\r\nx\r\n") == (451, b"4.3.0 later")
        primary.mail_reply = "554 5.7.1 no senders today"
        assert client.mail("s@sender.example") == (554, b"5.7.1 no senders today")
    assert primary.messages == []


def test_primary_rejects_data_without_valid_recipients(primary: RecordingPrimary) -> None:
    primary.users = set()
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        client.ehlo("c.example")
        client.mail("s@sender.example")
        assert client.rcpt("u@nausch.org")[0] == 550
        assert client.docmd("DATA") == (554, b"5.5.1 Error: no valid recipients")


def test_primary_greeting_override(primary: RecordingPrimary) -> None:
    primary.greeting = "421 4.3.2 Service shutting down"
    with pytest.raises(smtplib.SMTPConnectError) as err:
        smtplib.SMTP(primary.host, primary.port, timeout=5)
    assert err.value.smtp_code == 421
    assert err.value.smtp_error == b"4.3.2 Service shutting down"


def test_primary_drop_in_data(primary: RecordingPrimary) -> None:
    primary.drop_in_data = True
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        client.ehlo("c.example")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("s@sender.example", ["u@nausch.org"], b"Subject: x\r\n\r\n" * 1000)
    [session] = primary.wait_for_sessions(1)
    assert session.closed
    assert primary.messages == []
    assert session.replies[-1] == b"354 End data with <CR><LF>.<CR><LF>\r\n"


def test_primary_stall_delays_the_final_reply(primary: RecordingPrimary) -> None:
    primary.stall_seconds = 1.0
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        client.ehlo("c.example")
        client.mail("s@sender.example")
        client.rcpt("u@nausch.org")
        started = time.monotonic()
        code, _ = client.data(b"Subject: x\r\n\r\nx\r\n")
        waited = time.monotonic() - started
    assert code == 250
    assert 1.0 <= waited < 3.0
    assert len(primary.messages) == 1


def test_primary_stop_refuses_connections_and_start_again(primary: RecordingPrimary) -> None:
    primary.stop()
    assert not primary.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((primary.host, primary.port), timeout=2)
    primary.start()
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        assert client.noop() == (250, b"2.0.0 Ok")


def test_primary_stop_closes_open_sessions(primary: RecordingPrimary) -> None:
    client = smtplib.SMTP(primary.host, primary.port, timeout=5)
    client.ehlo("c.example")
    primary.stop()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()


def test_primary_wait_for_times_out(primary: RecordingPrimary) -> None:
    with pytest.raises(AssertionError, match="got 0 message"):
        primary.wait_for(1, timeout=0.2)


def test_primary_clear(primary: RecordingPrimary) -> None:
    with smtplib.SMTP(primary.host, primary.port, timeout=5) as client:
        client.sendmail("s@sender.example", ["u@nausch.org"], b"x\r\n")
    primary.wait_for(1)
    primary.clear()
    assert primary.messages == []
    assert primary.sessions == []


def test_primary_and_sender_mx_share_the_port(
    primary: RecordingPrimary, sender_mx: RecordingPrimary, smtp_port: int
) -> None:
    assert (primary.host, primary.port) == ("127.0.0.2", smtp_port)
    assert (sender_mx.host, sender_mx.port) == ("127.0.0.4", smtp_port)
    with smtplib.SMTP(sender_mx.host, sender_mx.port, timeout=5) as client:
        client.sendmail("", ["s@sender.example"], b"Subject: bounce\r\n\r\nx\r\n")
    assert [m.rcpts for m in sender_mx.wait_for(1)] == [["s@sender.example"]]
    assert primary.messages == []


@pytest.fixture
def tls_context(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            *"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=mx1.nausch.org".split(),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_primary_starttls(tls_context: ssl.SSLContext, smtp_port: int) -> None:
    server = RecordingPrimary("127.0.0.2", smtp_port, ssl_context=tls_context)
    trusting = ssl.create_default_context()
    trusting.check_hostname = False
    trusting.verify_mode = ssl.CERT_NONE
    server.start()
    try:
        with smtplib.SMTP(server.host, server.port, timeout=5) as client:
            client.ehlo("c.example")
            assert client.has_extn("starttls")
            client.starttls(context=trusting)
            client.ehlo("c.example")
            assert not client.has_extn("starttls")
            client.sendmail("s@sender.example", ["u@nausch.org"], b"Subject: tls\r\n\r\nx\r\n")
        assert server.wait_for(1)[0].data == b"Subject: tls\r\n\r\nx\r\n"
    finally:
        server.stop()


# -- helpers -------------------------------------------------------------------------


def test_free_port_is_free_on_every_host() -> None:
    hosts = ("127.0.0.2", "127.0.0.3")
    port = free_port(hosts, udp=True)
    assert all(port_is_free(h, port, udp=True) for h in hosts)
    with socket.socket() as s:
        s.bind(("127.0.0.2", port))
        s.listen()
        assert not port_is_free("127.0.0.2", port)
        assert port_is_free("127.0.0.3", port)


def test_backupmx_config_extra_lines_win() -> None:
    text = merge_config(
        {"myhostname": "mx1.tachtler.net", "smtp_tcp_port": "2526"},
        "smtp_tcp_port = 25\nrelay_domains = nausch.org,\n    example.org\n",
    )
    assert text == (
        "myhostname = mx1.tachtler.net\n"
        "smtp_tcp_port = 25\nrelay_domains = nausch.org,\n    example.org\n"
    )
    assert parameter(text, "smtp_tcp_port") == "25"
    assert parameter(text, "mynetworks") is None
