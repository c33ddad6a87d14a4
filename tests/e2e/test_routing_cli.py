"""Next hops other than the MX, ETRN, and the command line around the server."""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from tests.e2e.util import message, send, strip_received, wait_queue
from tests.peers.backupmx import command
from tests.peers.primary import RecordingPrimary

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""


@pytest.fixture
def other_hop(smtp_port):
    server = RecordingPrimary("127.0.0.9", smtp_port, hostname="relay.example")
    server.start()
    yield server
    server.stop()


def test_relayhost_overrides_the_mx(backupmx_factory, primary, other_hop, smtp_port):
    mx = backupmx_factory(SEED + f"relayhost = [127.0.0.9]:{smtp_port}\n")
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("via relayhost"))
    got = other_hop.wait_for(1)
    assert strip_received(got[0].data)[1] == message("via relayhost")
    assert primary.messages == []


def test_transport_maps_route_one_domain(backupmx_factory, primary, other_hop, tmp_path,
                                         smtp_port):
    table = tmp_path / "transport"
    table.write_text(f"# transport map\nnausch.org   smtp:[127.0.0.9]:{smtp_port}\n")
    mx = backupmx_factory(SEED + f"transport_maps = hash:{table}\n")
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("via transport"))
    assert other_hop.wait_for(1)[0].rcpts == ["alice@nausch.org"]
    assert primary.messages == []


def test_smtp_bind_address_is_the_source_of_deliveries(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "smtp_bind_address = 127.0.0.3\n")
    send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    primary.wait_for(1)
    assert primary.sessions[-1].peer[0] == "127.0.0.3"


def test_etrn_flushes_a_fast_flush_domain(backupmx_factory, primary):
    mx = backupmx_factory(SEED + "fast_flush_domains = nausch.org\nminimal_backoff_time = 1h\n"
                                 "maximal_backoff_time = 2h\n")
    primary.stop()
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("etrn"))
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] == 1)
    primary.start()
    s = smtplib.SMTP(mx.host, mx.port, source_address=("127.0.0.5", 0))
    s.ehlo("client.example.net")
    assert s.docmd("ETRN", "foreign.example") == (459, b"<foreign.example>: service unavailable")
    assert s.docmd("ETRN", "nausch.org") == (250, b"Queuing started")
    s.quit()
    assert primary.wait_for(1)[0].rcpts == ["alice@nausch.org"]


def test_version_and_config_option_anywhere(backupmx_factory, primary, monkeypatch):
    res = subprocess.run([*command(), "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert res.stdout.startswith("backupmx ")
    mx = backupmx_factory(SEED)
    primary.stop()
    send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    a = subprocess.run([*command(), "-c", str(mx.config_file), "queue", "list", "--json"],
                       capture_output=True, text=True)
    b = subprocess.run([*command(), "queue", "list", "--json", "-c", str(mx.config_file)],
                       capture_output=True, text=True)
    c = subprocess.run([*command(), "queue", "list", "--json"], capture_output=True, text=True,
                       env={"BACKUPMX_CONFIG": str(mx.config_file), "PATH": "/usr/bin:/bin"})
    assert a.returncode == b.returncode == c.returncode == 0, (a.stderr, b.stderr, c.stderr)
    assert a.stdout == b.stdout == c.stdout
    bad = subprocess.run([*command(), "queue", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2


def test_queue_show_of_a_running_server(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.stop()
    qid = send(mx, "sender@sender.example", ["alice@nausch.org"], message("shown")).queue_id
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    res = mx.cli("queue", "show", qid)
    assert res.returncode == 0, res.stderr
    assert "Subject: shown" in res.stdout
    assert "alice@nausch.org" in res.stdout
    assert mx.cli("queue", "show", "NOSUCH").returncode == 1


def test_queue_flush_without_a_server_delivers_from_the_spool(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    primary.stop()
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("offline flush"))
    wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    mx.stop()
    primary.start()
    res = mx.cli("queue", "flush")
    assert res.returncode == 0, res.stderr
    assert strip_received(primary.wait_for(1)[0].data)[1] == message("offline flush")
    assert mx.cli("queue", "list").stdout.strip() == "Mail queue is empty"


def test_demo_walks_through_an_outage():
    res = subprocess.run([*command(), "demo"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "RCPT TO:<alice@nausch.org>     -> 250 2.1.5 Ok" in out
    assert "Connection refused" in out
    assert "the primary has the message from <bob@sender.example>" in out
    assert "Subject: during the outage" in out
    assert "7. backupmx queue list: Mail queue is empty" in out
