"""pgsql: and ldap: tables looked up directly against a real PostgreSQL server and a
real slapd: result joining and formats, quoting, the kept connection, and failures."""

from __future__ import annotations

import socket
import time

import pytest

from backupmx.maps import MapError, open_table
from tests.peers.ldap import ROOT_DN, ROOT_PW, SUFFIX
from tests.peers.pgsql import DBNAME, HOST, PASSWORD, USER


@pytest.fixture
def pg_table(pgsql_server, tmp_path):
    pgsql_server.sql(
        "CREATE TABLE aliases (address text, target text, extra text)",
        "INSERT INTO aliases VALUES ('alice@nausch.org', 'a1@store.example', NULL),"
        " ('alice@nausch.org', 'a2@store.example', 'a3@store.example'),"
        " ('o''hara@nausch.org', 'quoted', NULL), ('back\\slash@nausch.org', 'bs', NULL)")

    def make(query: str, extra: str = "", timeout: int = 5):
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.cf"
        path.write_text(f"hosts = {HOST}:{pgsql_server.port}\nuser = {USER}\n"
                        f"password = {PASSWORD}\ndbname = {DBNAME}\nquery = {query}\n"
                        f"connect_timeout = {timeout}\n{extra}")
        return open_table(f"pgsql:{path}")

    return make


def test_pgsql_joins_rows_and_columns_and_skips_null(pg_table):
    table = pg_table("SELECT target, extra FROM aliases WHERE address='%s' ORDER BY target")
    assert table.lookup("Alice@Nausch.org") == (
        "a1@store.example,a2@store.example,a3@store.example")
    assert table.lookup("bob@nausch.org") is None


def test_pgsql_quotes_the_key(pg_table):
    table = pg_table("SELECT target FROM aliases WHERE address='%s'")
    assert table.lookup("o'hara@nausch.org") == "quoted"
    assert table.lookup("back\\slash@nausch.org") == "bs"
    assert table.lookup("x' OR 'a'='a") is None
    assert table.lookup("x'; DROP TABLE aliases; --") is None
    assert table.lookup("o'hara@nausch.org") == "quoted"  # the table is still there


def test_pgsql_u_d_result_format_and_domain(pg_table):
    table = pg_table("SELECT target FROM aliases WHERE address='%u@%d'",
                     "result_format = smtp:[%d]\ndomain = nausch.org\n")
    assert table.lookup("alice@nausch.org") == "smtp:[store.example],smtp:[store.example]"
    assert table.lookup("alice@other.example") is None  # outside the domains: not asked
    assert table.lookup("@nausch.org") is None


def test_pgsql_keeps_its_connection_and_reconnects(pg_table, pgsql_server):
    table = pg_table("SELECT pg_backend_pid()::text WHERE '%s' <> ''")
    first = table.lookup("a")
    assert table.lookup("b") == first  # one connection for every lookup
    pgsql_server.stop()
    with pytest.raises(MapError, match="lookup of 'c' failed"):
        table.lookup("c")
    pgsql_server.start()
    again = table.lookup("d")
    assert again is not None and again != first


def test_pgsql_a_bad_query_and_a_slow_one_fail(pg_table):
    with pytest.raises(MapError, match="UndefinedTable"):
        pg_table("SELECT x FROM no_such_table WHERE a='%s'").lookup("a")
    slow = pg_table("SELECT pg_sleep(30)::text WHERE '%s' <> ''", timeout=1)
    started = time.monotonic()
    with pytest.raises(MapError, match="QueryCanceled"):
        slow.lookup("a")
    assert time.monotonic() - started < 10


def test_pgsql_wrong_password_fails(pg_table, tmp_path, pgsql_server):
    path = tmp_path / "wrong.cf"
    path.write_text(f"hosts = {HOST}:{pgsql_server.port}\nuser = {USER}\npassword = nope\n"
                    f"dbname = {DBNAME}\nquery = SELECT 1 WHERE '%s' <> ''\n")
    with pytest.raises(MapError, match="password authentication failed"):
        open_table(f"pgsql:{path}").lookup("a")


PEOPLE = f"""dn: uid=alice,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mail: alice@nausch.org
mail: alice.example@nausch.org

dn: uid=bob,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Example
mail: bob@nausch.org
"""


@pytest.fixture
def ldap_table(ldap_server, tmp_path):
    ldap_server.add(PEOPLE)

    def make(lines: str):
        path = tmp_path / f"l{len(list(tmp_path.iterdir()))}.cf"
        path.write_text(f"server_host = {ldap_server.url}\nbind_dn = {ROOT_DN}\n"
                        f"bind_pw = {ROOT_PW}\ntimeout = 5\n{lines}")
        return open_table(f"ldap:{path}")

    return make


def test_ldap_attributes_filter_and_format(ldap_table):
    table = ldap_table(f"search_base = ou=people,{SUFFIX}\nquery_filter = (uid=%u)\n"
                       "result_attribute = mail\nresult_format = <%s>\n")
    assert table.lookup("alice@anything.example") == (
        "<alice@nausch.org>,<alice.example@nausch.org>")
    assert table.lookup("carol@nausch.org") is None
    assert table.lookup("*@nausch.org") is None  # a '*' in the key is no wildcard


def test_ldap_scope_and_a_missing_base(ldap_table):
    one = ldap_table(f"search_base = {SUFFIX}\nscope = one\nquery_filter = (mail=%s)\n"
                     "result_attribute = uid\n")
    assert one.lookup("bob@nausch.org") is None  # people are one level further down
    sub = ldap_table(f"search_base = {SUFFIX}\nquery_filter = (mail=%s)\nresult_attribute = uid\n")
    assert sub.lookup("bob@nausch.org") == "bob"
    missing = ldap_table(f"search_base = ou=nobody,{SUFFIX}\nquery_filter = (mail=%s)\n")
    assert missing.lookup("bob@nausch.org") is None


def test_ldap_bad_credentials_and_a_stopped_server_fail(ldap_table, ldap_server, tmp_path):
    table = ldap_table(f"search_base = {SUFFIX}\nquery_filter = (mail=%s)\n"
                       "result_attribute = uid\n")
    assert table.lookup("bob@nausch.org") == "bob"
    ldap_server.stop()
    with pytest.raises(MapError, match="lookup of 'bob@nausch.org' failed"):
        table.lookup("bob@nausch.org")
    ldap_server.start()
    assert table.lookup("bob@nausch.org") == "bob"
    wrong = tmp_path / "wrong.cf"
    wrong.write_text(f"server_host = {ldap_server.url}\nbind_dn = {ROOT_DN}\nbind_pw = x\n"
                     f"search_base = {SUFFIX}\n")
    with pytest.raises(MapError, match="bind failed: invalidCredentials"):
        open_table(f"ldap:{wrong}").lookup("bob@nausch.org")


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_pgsql_tries_the_next_host_and_gives_up_on_a_silent_one(
        pgsql_server, tmp_path, silent_port):
    path = tmp_path / "hosts.cf"
    base = (f"user = {USER}\npassword = {PASSWORD}\ndbname = {DBNAME}\n"
            "query = SELECT 'found' WHERE '%s' <> ''\nconnect_timeout = 1\n")
    path.write_text(f"hosts = {HOST}:1, {HOST}:{pgsql_server.port}\n" + base)
    assert open_table(f"pgsql:{path}").lookup("a") == "found"
    path.write_text(f"hosts = {HOST}:{silent_port}\n" + base)
    started = time.monotonic()
    with pytest.raises(MapError, match="timeout"):
        open_table(f"pgsql:{path}").lookup("a")
    assert time.monotonic() - started < 10


def test_ldap_tries_the_next_server_and_gives_up_on_a_silent_one(
        ldap_table, ldap_server, tmp_path, silent_port):
    path = tmp_path / "hosts.cf"
    base = f"search_base = {SUFFIX}\nquery_filter = (mail=%s)\nresult_attribute = uid\n"
    path.write_text(f"server_host = ldap://{HOST}:1 {ldap_server.url}\n" + base)
    assert open_table(f"ldap:{path}").lookup("bob@nausch.org") == "bob"
    path.write_text(f"server_host = {HOST}:{silent_port}\ntimeout = 1\n" + base)
    started = time.monotonic()
    with pytest.raises(MapError, match="lookup of 'bob@nausch.org' failed"):
        open_table(f"ldap:{path}").lookup("bob@nausch.org")
    assert time.monotonic() - started < 10
