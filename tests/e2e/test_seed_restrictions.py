"""The seed's whole smtpd_recipient_restrictions, pasted verbatim, over TCP with real DNS.

The list is the wiki's (restrictions.md §3.1): 23 items in that order, comment lines
between its continuation lines and the missing comma after the policyd-weight
whitelist entry.  Table paths point at test files, the policyd-weight port at a
free one; both policy services are small stand-ins that answer like a neutral
policyd-weight (PREPEND a header) and a postgrey that knows the triplet (DUNNO).
"""

from __future__ import annotations

import smtplib
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.util import message, send, strip_received
from tests.peers.ports import free_port

LISTED = "127.0.0.66"  # on zen.spamhaus.org (with TXT) and bl.spamcop.net
URIBL = "127.0.0.67"  # rDNS spammer.example.com, on multi.uribl.com
BLOCKED = "127.0.0.68"  # REJECT in access_client
WHITELISTED = "127.0.0.69"  # OK in policyd_weight_client_whitelist

SEED_LIST = """\
smtpd_recipient_restrictions =
        check_recipient_access hash:{d}/access_recipient-rfc,
        check_client_access hash:{d}/access_client,
        check_helo_access hash:{d}/access_helo,
        check_sender_access hash:{d}/access_sender,
        check_recipient_access hash:{d}/access_recipient,
        reject_non_fqdn_sender,
        reject_non_fqdn_recipient,
        reject_unknown_sender_domain,
        reject_unknown_recipient_domain,
        permit_sasl_authenticated,
        permit_mynetworks,
# DNS based blocklists
        reject_rbl_client zen.spamhaus.org,
        reject_rbl_client ix.dnsbl.manitu.net,
        reject_rbl_client bl.spamcop.net,
        reject_rbl_client dnsbl.njabl.org,
        reject_rhsbl_client multi.uribl.com,
# policyd-weight
        check_client_access hash:{d}/policyd_weight_client_whitelist
        check_policy_service inet:127.0.0.1:{port},
# postgrey
        check_policy_service unix:postgrey/socket,
        reject_unverified_recipient,
        permit_mx_backup,
        reject_unauth_destination,
        permit
"""

TABLES = {
    "access_recipient-rfc": "postmaster@ OK\nabuse@ OK\n",
    "access_client": f"{BLOCKED} REJECT\n",
    "access_helo": "bad.helo.example REJECT\n",
    "access_sender": "spam@sender.example REJECT\n",
    "access_recipient": "nobody@nausch.org 550 5.1.1 User unknown\n",
    "policyd_weight_client_whitelist": f"{WHITELISTED} OK\n",
}

RECORDS = [
    "66.0.0.127.zen.spamhaus.org. 300 IN A 127.0.0.4",
    '66.0.0.127.zen.spamhaus.org. 300 IN TXT "https://www.spamhaus.org/query/ip/127.0.0.66"',
    "66.0.0.127.bl.spamcop.net. 300 IN A 127.0.0.2",
    "67.0.0.127.in-addr.arpa. 300 IN PTR spammer.example.com.",
    "spammer.example.com. 300 IN A 127.0.0.67",
    "spammer.example.com.multi.uribl.com. 300 IN A 127.0.0.2",
]


class _Policy(socketserver.StreamRequestHandler):
    """Answers every request of a connection with the server's fixed action."""

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _PolicyServer)
        while True:
            attrs: dict[str, str] = {}
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                line = line.rstrip(b"\n")
                if not line:
                    break
                key, _, value = line.decode().partition("=")
                attrs[key] = value
            server.requests.append(attrs)
            self.wfile.write(f"action={server.action}\n\n".encode())
            self.wfile.flush()


class _PolicyServer:
    requests: list[dict[str, str]]
    action: str


class TcpPolicy(socketserver.ThreadingTCPServer, _PolicyServer):
    daemon_threads = True
    allow_reuse_address = True


class UnixPolicy(socketserver.ThreadingUnixStreamServer, _PolicyServer):
    daemon_threads = True


def serve(server: socketserver.BaseServer, action: str) -> threading.Thread:
    assert isinstance(server, _PolicyServer)
    server.requests, server.action = [], action
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def seed(backupmx_factory, primary, dns_records, tmp_path) -> Iterator[object]:
    for rr in RECORDS:
        dns_records(rr)
    tables = tmp_path / "tables"
    tables.mkdir()
    for name, text in TABLES.items():
        (tables / name).write_text(text)
    port = free_port(("127.0.0.1",))
    weight = TcpPolicy(("127.0.0.1", port), _Policy)
    serve(weight, "PREPEND X-policyd-weight: using cached result; rate: -7.6")
    mx = backupmx_factory(SEED_LIST.format(d=tables, port=port)
                          + "address_verify_poll_delay = 1s\n", start=False)
    sock_dir = Path(str(mx.dir / "spool")) / "postgrey"
    sock_dir.mkdir(parents=True)
    grey = UnixPolicy(str(sock_dir / "socket"), _Policy)
    serve(grey, "DUNNO")
    try:
        mx.start()
        mx.weight, mx.grey = weight, grey  # type: ignore[attr-defined]
        yield mx
    finally:
        for server in (weight, grey):
            server.shutdown()
            server.server_close()


def test_the_verbatim_seed_list_passes_check(seed):
    res = seed.cli("check")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("configuration OK")


def rcpt(mx, sender: str, rcpt: str, source: str = "127.0.0.5",
         helo: str = "client.example.net") -> str:
    s = smtplib.SMTP(mx.host, mx.port, source_address=(source, 0), timeout=60)
    try:
        s.ehlo(helo)
        code, text = s.mail(sender)
        assert code == 250, text
        code, text = s.rcpt(rcpt)
        return f"{code} {text.decode()}"
    finally:
        s.close()


@pytest.mark.parametrize("source,sender,recipient,helo,reply", [
    # 1: role accounts are accepted before anything else, even from a listed client
    (LISTED, "x@sender.example", "postmaster@nausch.org", None, "250 2.1.5 Ok"),
    (LISTED, "x@sender.example", "abuse@nausch.org", None, "250 2.1.5 Ok"),
    # ... but backupmx's default relay list, evaluated first, still refuses to relay for
    # them (Postfix 2.x, without a relay list, would relay abuse@ anywhere), permanently
    # as the seed's own reject_unauth_destination would
    (LISTED, "x@sender.example", "abuse@foreign.example", None,
     "554 5.7.1 <abuse@foreign.example>: Relay access denied"),
    # 2-5: the access maps
    (BLOCKED, "x@sender.example", "alice@nausch.org", None,
     f"554 5.7.1 <unknown[{BLOCKED}]>: Client host rejected: Access denied"),
    ("127.0.0.5", "x@sender.example", "alice@nausch.org", "bad.helo.example",
     "554 5.7.1 <bad.helo.example>: Helo command rejected: Access denied"),
    ("127.0.0.5", "spam@sender.example", "alice@nausch.org", None,
     "554 5.7.1 <spam@sender.example>: Sender address rejected: Access denied"),
    ("127.0.0.5", "x@sender.example", "nobody@nausch.org", None,
     "550 5.1.1 <nobody@nausch.org>: Recipient address rejected: User unknown"),
    # 6-9: address checks
    ("127.0.0.5", "alice", "alice@nausch.org", None,
     "504 5.5.2 <alice>: Sender address rejected: need fully-qualified address"),
    ("127.0.0.5", "x@sender.example", "bob", None,
     "504 5.5.2 <bob>: Recipient address rejected: need fully-qualified address"),
    ("127.0.0.5", "x@nosuch.example", "alice@nausch.org", None,
     "450 4.1.8 <x@nosuch.example>: Sender address rejected: Domain not found"),
    ("127.0.0.1", "x@sender.example", "x@nosuch.example", None,
     "450 4.1.2 <x@nosuch.example>: Recipient address rejected: Domain not found"),
    # ... but a foreign client asking to relay there is told so first
    ("127.0.0.5", "x@sender.example", "x@nosuch.example", None,
     "554 5.7.1 <x@nosuch.example>: Relay access denied"),
    # 11: mynetworks may relay
    ("127.0.0.1", "x@sender.example", "x@foreign.example", None, "250 2.1.5 Ok"),
    # 12-16: DNS lists
    (LISTED, "x@sender.example", "alice@nausch.org", None,
     f"554 5.7.1 Service unavailable; Client host [{LISTED}] blocked using zen.spamhaus.org; "
     "https://www.spamhaus.org/query/ip/127.0.0.66"),
    (URIBL, "x@sender.example", "alice@nausch.org", None,
     "554 5.7.1 Service unavailable; Client host [spammer.example.com] blocked using "
     "multi.uribl.com"),
    # 17: a whitelisted client skips the rest of the recipient list; the relay list remains
    (WHITELISTED, "x@sender.example", "alice@nausch.org", None, "250 2.1.5 Ok"),
    (WHITELISTED, "x@sender.example", "x@foreign.example", None,
     "554 5.7.1 <x@foreign.example>: Relay access denied"),
    # 22: relay attempts, refused before any recipient check (the relay list runs first)
    ("127.0.0.5", "x@sender.example", "x@foreign.example", None,
     "554 5.7.1 <x@foreign.example>: Relay access denied"),
    ("127.0.0.5", "x@sender.example", "x@foreign", None,
     "554 5.7.1 <x@foreign>: Relay access denied"),
])
def test_each_restriction_of_the_seed_list(seed, source, sender, recipient, helo, reply):
    got = rcpt(seed, sender, recipient, source, helo or "client.example.net")
    assert got == reply


def test_unknown_sender_domain_550_when_configured(backupmx_factory, primary, tmp_path):
    mx = backupmx_factory("unknown_address_reject_code = 550\n"
                          "smtpd_recipient_restrictions = reject_unknown_sender_domain, "
                          "permit_mx_backup, reject_unauth_destination\n")
    assert rcpt(mx, "x@nosuch.example", "alice@nausch.org") == (
        "550 5.1.8 <x@nosuch.example>: Sender address rejected: Domain not found")


def test_sender_domain_dns_trouble_defers_a_later_permit(seed):
    assert rcpt(seed, "x@host.broken.example", "postmaster@nausch.org") == "250 2.1.5 Ok"
    # reject_unknown_sender_domain sets defer_if_permit; permit_mx_backup then turns into it
    assert rcpt(seed, "x@host.broken.example", "alice@nausch.org") == (
        "450 4.1.8 <x@host.broken.example>: Sender address rejected: Domain not found")


def test_a_clean_client_reaches_the_primary_with_the_policy_header(seed, primary):
    out = send(seed, "x@sender.example", ["alice@nausch.org"], message("seed ok"))
    assert out.rcpts == [(250, b"2.1.5 Ok")], out.rcpts
    got = primary.wait_for(1, timeout=60)
    headers, rest = got[0].data.split(b"Received: ", 1)
    assert headers == b"X-policyd-weight: using cached result; rate: -7.6\r\n"
    assert strip_received(b"Received: " + rest)[1] == message("seed ok")
    weight = seed.weight.requests
    assert weight and weight[0]["request"] == "smtpd_access_policy"
    assert weight[0]["client_address"] == "127.0.0.5"
    assert seed.grey.requests[0]["recipient"] == "alice@nausch.org"


def test_whitelisted_client_is_not_asked_about(seed):
    assert rcpt(seed, "x@sender.example", "alice@nausch.org", WHITELISTED) == "250 2.1.5 Ok"
    assert seed.weight.requests == [] and seed.grey.requests == []


def test_empty_relay_list_makes_role_accounts_relayable_as_in_postfix(
        backupmx_factory, primary, tmp_path):
    tables = tmp_path / "t"
    tables.mkdir()
    (tables / "rfc").write_text("postmaster@ OK\n")
    mx = backupmx_factory(f"smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = "
                          f"check_recipient_access hash:{tables}/rfc, permit_mx_backup, "
                          "reject_unauth_destination\n")
    assert rcpt(mx, "x@sender.example", "postmaster@foreign.example") == "250 2.1.5 Ok"
    assert rcpt(mx, "x@sender.example", "x@foreign.example") == (
        "554 5.7.1 <x@foreign.example>: Relay access denied")
