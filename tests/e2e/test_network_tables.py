"""pgsql: and ldap: tables in relay_recipient_maps, relay_domains and access maps,
against a real PostgreSQL server and a real slapd.

A server that is down never permits and never rejects for good: the RCPT gets
451 4.3.0 Temporary lookup failure, and the same RCPT is accepted once it is back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.util import message, send, wait_queue
from tests.peers.ldap import ROOT_DN, ROOT_PW, SUFFIX
from tests.peers.pgsql import DBNAME, HOST, PASSWORD, USER
from tests.peers.primary import RecordingPrimary

RELAY_RECIPIENTS = """
relay_domains = nausch.org
relay_recipient_maps = {table}
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unlisted_recipient,
    reject_unauth_destination
"""
UNKNOWN = ("550 5.1.1 <nobody@nausch.org>: Recipient address rejected: "
           "User unknown in relay recipient table")
ROUTING = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
LOOKUP_FAILED = "451 4.3.0 <alice@nausch.org>: Temporary lookup failure"


def pgsql_cf(directory: Path, port: int, query: str, extra: str = "") -> str:
    path = directory / "table.cf"
    path.write_text(f"hosts = inet:{HOST}:{port}\nuser = {USER}\npassword = {PASSWORD}\n"
                    f"dbname = {DBNAME}\nquery = {query}\nconnect_timeout = 5\n{extra}")
    return f"pgsql:{path}"


def ldap_cf(directory: Path, url: str) -> str:
    path = directory / "ldap-recipients.cf"
    path.write_text(f"server_host = {url}\nsearch_base = ou=people,{SUFFIX}\n"
                    "query_filter = (mail=%s)\nresult_attribute = uid\n"
                    f"bind_dn = {ROOT_DN}\nbind_pw = {ROOT_PW}\nversion = 3\ntimeout = 5\n")
    return f"ldap:{path}"


@pytest.fixture
def recipients_db(pgsql_server):
    pgsql_server.sql("CREATE TABLE recipients (address text PRIMARY KEY)",
                     "INSERT INTO recipients VALUES ('alice@nausch.org'), ('o''hara@nausch.org')")
    return pgsql_server


def test_pgsql_relay_recipient_maps(backupmx_factory, primary, recipients_db, tmp_path):
    table = pgsql_cf(tmp_path, recipients_db.port,
                     "SELECT 'ok' FROM recipients WHERE address = '%s'")
    mx = backupmx_factory(RELAY_RECIPIENTS.format(table=table))
    out = send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org",
                                        "o'hara@nausch.org", "x'or'1'='1@nausch.org"],
               message("pgsql"))
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == UNKNOWN
    assert out.rcpts[2] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(3) == UNKNOWN.replace("nobody", "x'or'1'='1")
    got = primary.wait_for(1)[0]
    assert got.rcpts == ["alice@nausch.org", "o'hara@nausch.org"]

    recipients_db.stop()
    down = send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org"])
    assert down.rcpt_line(0) == LOOKUP_FAILED
    assert down.rcpt_line(1) == LOOKUP_FAILED.replace("alice", "nobody")
    mx.wait_log(r"warning: relay_recipient_maps: lookup failed: pgsql:\S+table\.cf: "
                r"lookup of 'alice@nausch\.org' failed: ConnectionError: ")

    recipients_db.start()  # the table connects again by itself
    again = send(mx, "s@sender.example", ["alice@nausch.org"])
    assert again.rcpts == [(250, b"2.1.5 Ok")]


def test_ldap_relay_recipient_maps(backupmx_factory, primary, ldap_server, tmp_path):
    ldap_server.add(f"""dn: uid=alice,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mail: alice@nausch.org
""")
    mx = backupmx_factory(RELAY_RECIPIENTS.format(table=ldap_cf(tmp_path, ldap_server.url)))
    out = send(mx, "s@sender.example", ["alice@nausch.org", "nobody@nausch.org",
                                        "*@nausch.org"], message("ldap"))
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == UNKNOWN
    assert out.rcpt_line(2) == UNKNOWN.replace("nobody", "*")  # no wildcard in the filter
    assert primary.wait_for(1)[0].rcpts == ["alice@nausch.org"]

    ldap_server.stop()
    down = send(mx, "s@sender.example", ["alice@nausch.org"])
    assert down.rcpt_line() == LOOKUP_FAILED
    ldap_server.start()
    assert send(mx, "s@sender.example", ["alice@nausch.org"]).rcpts == [(250, b"2.1.5 Ok")]


def test_pgsql_access_map_reject(backupmx_factory, primary, pgsql_server, tmp_path):
    pgsql_server.sql("CREATE TABLE access (key text PRIMARY KEY, action text)",
                     "INSERT INTO access VALUES ('blocked@nausch.org', 'REJECT'),"
                     " ('nausch.org', 'OK')")
    table = pgsql_cf(tmp_path, pgsql_server.port, "SELECT action FROM access WHERE key='%s'")
    mx = backupmx_factory(f"""
smtpd_recipient_restrictions =
    check_recipient_access {table},
    reject_unauth_destination
""")
    out = send(mx, "s@sender.example", ["blocked@nausch.org", "alice@nausch.org"])
    assert out.rcpt_line(0) == (
        "554 5.7.1 <blocked@nausch.org>: Recipient address rejected: Access denied")
    assert out.rcpts[1] == (250, b"2.1.5 Ok")
    pgsql_server.stop()
    assert send(mx, "s@sender.example", ["blocked@nausch.org"]).rcpt_line() == (
        "451 4.3.0 <blocked@nausch.org>: Temporary lookup failure")


def test_pgsql_relay_domains(backupmx_factory, pgsql_server, tmp_path):
    pgsql_server.sql("CREATE TABLE domains (name text PRIMARY KEY)",
                     "INSERT INTO domains VALUES ('foreign.example')")
    table = pgsql_cf(tmp_path, pgsql_server.port, "SELECT name FROM domains WHERE name='%s'")
    mx = backupmx_factory(f"""
relay_domains = {table}
smtpd_recipient_restrictions =
    permit_auth_destination,
    reject
""")
    out = send(mx, "s@sender.example", ["x@foreign.example", "y@evil.example"])
    assert out.rcpts[0] == (250, b"2.1.5 Ok")
    assert out.rcpt_line(1) == "454 4.7.1 <y@evil.example>: Relay access denied"
    pgsql_server.stop()
    assert send(mx, "s@sender.example", ["x@foreign.example"]).rcpt_line() == (
        "451 4.3.0 <x@foreign.example>: Temporary lookup failure")


def test_pgsql_transport_maps_defer_while_the_database_is_down(
        backupmx_factory, primary, pgsql_server, tmp_path, smtp_port):
    other_hop = RecordingPrimary("127.0.0.9", smtp_port, hostname="relay.example")
    other_hop.start()
    try:
        pgsql_server.sql("CREATE TABLE transport (domain text PRIMARY KEY, nexthop text)",
                         f"INSERT INTO transport VALUES ('nausch.org', 'smtp:[127.0.0.9]:"
                         f"{smtp_port}')")
        table = pgsql_cf(tmp_path, pgsql_server.port,
                         "SELECT nexthop FROM transport WHERE domain='%s'")
        mx = backupmx_factory(ROUTING + f"transport_maps = {table}\n")
        send(mx, "sender@sender.example", ["alice@nausch.org"], message("via pgsql"))
        assert other_hop.wait_for(1)[0].rcpts == ["alice@nausch.org"]

        pgsql_server.stop()
        out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("deferred"))
        assert out.rcpts == [(250, b"2.1.5 Ok")]
        queued = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
        rcpt = queued[0]["recipients"][0]
        assert rcpt["state"] == "deferred"
        assert "transport_maps lookup failure" in rcpt["last_reply"]
        pgsql_server.start()
        assert mx.cli("queue", "flush").returncode == 0
        assert [m.rcpts for m in other_hop.wait_for(2)] == [["alice@nausch.org"]] * 2
        assert primary.messages == []
    finally:
        other_hop.stop()
