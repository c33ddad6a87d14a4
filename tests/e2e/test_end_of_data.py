"""smtpd_end_of_data_restrictions: evaluated after the final dot, before the message is
stored, with the size of what was received; a reject is the answer to the dot and nothing
is queued."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.e2e.util import Raw, message, queue, send

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
CLIENT = r"client\.example\.net\[127\.0\.0\.5\]"


class SizePolicy(socketserver.ThreadingTCPServer):
    """A policy server that rejects messages over ``limit`` bytes and keeps every request."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.requests: list[dict[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: SizePolicy

    def handle(self) -> None:
        while True:
            attrs: dict[str, str] = {}
            while (line := self.rfile.readline()) not in (b"\n", b""):
                name, _, value = line.decode().rstrip("\n").partition("=")
                attrs[name] = value
            if not attrs:
                return
            self.server.requests.append(attrs)
            big = attrs.get("protocol_state") == "END-OF-MESSAGE" and \
                int(attrs["size"]) > self.server.limit
            action = "REJECT 5.3.4 Message too big for this policy" if big else "DUNNO"
            self.wfile.write(f"action={action}\n\n".encode())


@pytest.fixture
def policy() -> Iterator[SizePolicy]:
    server = SizePolicy(limit=300)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_reject_after_the_dot_answers_the_dot_and_queues_nothing(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtpd_end_of_data_restrictions = reject\n")
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    assert out.data == (554, b"5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied")
    line = mx.wait_log(r"\w+: reject: END-OF-MESSAGE from .*$").group(0)
    qid = line.split(":", 1)[0]
    assert line == (f"{qid}: reject: END-OF-MESSAGE from client.example.net[127.0.0.5]: 554 "
                    "5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied; "
                    "from=<sender@sender.example> to=<alice@nausch.org> proto=ESMTP "
                    "helo=<client.example.net>")
    assert queue(mx) == []
    assert primary.messages == []


def test_the_policy_service_sees_the_size_received(backupmx_factory, primary, policy):
    port = policy.server_address[1]
    mx = backupmx_factory(SEED + "smtpd_end_of_data_restrictions = "
                                 f"check_policy_service inet:127.0.0.1:{port}\n")
    small = message("small")
    big = message("big", body="x" * 400 + "\r\n")
    ok = send(mx, "sender@sender.example", ["alice@nausch.org", "bob@nausch.org"], small)
    assert ok.data is not None and ok.data[0] == 250, ok.data
    refused = send(mx, "sender@sender.example", ["alice@nausch.org", "bob@nausch.org"], big)
    assert refused.data == (554, b"5.3.4 <END-OF-MESSAGE>: End-of-data rejected: Message too "
                                 b"big for this policy")
    assert [(r["protocol_state"], r["size"], r["recipient"], r["recipient_count"])
            for r in policy.requests] == [
        ("END-OF-MESSAGE", str(len(small)), "", "2"),
        ("END-OF-MESSAGE", str(len(big)), "", "2"),
    ]
    # no to=: the restriction is about all recipients alike, as Postfix logs it
    mx.wait_log(rf"reject: END-OF-MESSAGE from {CLIENT}: 554 5.3.4 <END-OF-MESSAGE>: "
                r"End-of-data rejected: Message too big for this policy; "
                r"from=<sender@sender\.example> proto=ESMTP helo=<client\.example\.net>$")
    got = primary.wait_for(1)
    assert [m.rcpts for m in got] == [["alice@nausch.org", "bob@nausch.org"]]
    assert b"Subject: small" in got[0].data


def test_a_421_after_the_dot_ends_the_session(backupmx_factory, primary, tmp_path):
    table = tmp_path / "clients"
    table.write_text("127.0.0.5 421 4.7.0 Try again later\n")
    mx = backupmx_factory(SEED + f"smtpd_end_of_data_restrictions = "
                                 f"check_client_access texthash:{table}\n")
    c = Raw(mx)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.example.net").startswith("250-")
    assert c.cmd("MAIL FROM:<sender@sender.example>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@nausch.org>") == "250 2.1.5 Ok"
    assert c.cmd("DATA").startswith("354 ")
    assert c.cmd(message() + b".\r\n") == (
        "421 4.7.0 <client.example.net[127.0.0.5]>: Client host rejected: Try again later")
    assert c.closed()
    c.close()
    mx.wait_log(rf"disconnect from {CLIENT} ehlo=1 mail=1 rcpt=1 data=0/1")
    assert primary.messages == []


def test_an_unknown_restriction_there_is_a_configuration_error(tmp_path):
    from tests.e2e.test_check_reload import check

    res = check(tmp_path, SEED + "smtpd_end_of_data_restrictions = reject_unknown_restriction\n")
    assert res.returncode == 2
    assert "smtpd_end_of_data_restrictions: unknown restriction \"reject_unknown_restriction\"" \
        in res.stderr
