"""Table definition files (pgsql:, ldap:) and the %s/%u/%d expansion, without a server."""

from __future__ import annotations

import pytest

from backupmx import cli
from backupmx.maps import MapError, open_table
from backupmx.maps.definition import Definition, DefinitionError, read_definition
from backupmx.maps.pgsql import connection_targets
from backupmx.maps.query import fill, in_domains, parse_template


def template(text: str) -> tuple[str, ...]:
    return parse_template(Definition("/x.cf"), "query", text)


def sql_quote(text: str) -> str:
    return text.replace("'", "''")


@pytest.mark.parametrize("key, want", [
    ("alice@nausch.org", "alice|nausch.org|alice@nausch.org|org|nausch"),
    ("Alice.B@mx.nausch.org", "Alice.B|mx.nausch.org|Alice.B@mx.nausch.org|org|nausch"),
    ("a@b@nausch.org", "a@b|nausch.org|a@b@nausch.org|org|nausch"),
])
def test_expansion_of_an_address(key, want):
    assert fill(template("%u|%d|%s|%1|%2"), key, key) == want


@pytest.mark.parametrize("query, key", [
    ("%d", "alice"),         # no domain: no query
    ("%u", "@nausch.org"),   # an empty local part: no query
    ("%3", "a@nausch.org"),  # not that many labels
    ("%1", "nausch"),
])
def test_a_missing_part_suppresses_the_query(query, key):
    assert fill(template(query), key, key) is None


def test_u_of_a_bare_key_is_the_whole_key_and_percent_percent_is_one():
    assert fill(template("%u 100%% %s"), "nausch.org", "nausch.org") == "nausch.org 100% nausch.org"


def test_upper_case_directives_take_the_key_in_result_format():
    assert fill(template("%u+%U@%D"), "box@store.example", "alice@nausch.org") == (
        "box+alice@nausch.org")


def test_the_expanded_value_is_escaped_and_the_template_is_not():
    query = fill(template("SELECT 1 FROM t WHERE a='%s' AND b='%u'"), "o'hara@nausch.org",
                 "o'hara@nausch.org", sql_quote)
    assert query == "SELECT 1 FROM t WHERE a='o''hara@nausch.org' AND b='o''hara'"
    evil = "x' OR '1'='1@nausch.org"
    assert fill(template("a='%s'"), evil, evil, sql_quote) == "a='x'' OR ''1''=''1@nausch.org'"


def test_an_unknown_expansion_is_an_error_at_its_line(tmp_path):
    cf = tmp_path / "bad.cf"
    cf.write_text("hosts = 127.0.0.1\n# comment\nquery = SELECT 1 WHERE a = '%x'\n")
    with pytest.raises(DefinitionError) as info:
        open_table(f"pgsql:{cf}")
    assert (info.value.path, info.value.line) == (str(cf), 3)
    assert str(info.value) == f"{cf}:3: query: invalid expansion %x in \"SELECT 1 WHERE a = '%x'\""


def test_domain_restriction():
    domains = frozenset({"nausch.org"})
    assert in_domains("alice@nausch.org", domains)
    assert not in_domains("@nausch.org", domains)
    assert not in_domains("nausch.org", domains)
    assert not in_domains("alice@other.example", domains)
    assert in_domains("anything", frozenset())


def test_definition_file_lines_continuations_and_unknown_names(tmp_path):
    cf = tmp_path / "t.cf"
    cf.write_text("# a comment\nhosts = db1\n    db2\nquery = SELECT 1\nexpansion_limit = 3\n"
                  "hosts = db3\n")
    definition = read_definition(f"pgsql:{cf}", str(cf), ("hosts", "query"))
    assert definition.get("hosts") == "db3"
    assert definition.line("hosts") == 6
    assert [str(n) for n in definition.notes] == [
        f"{cf}:5: warning: unknown parameter expansion_limit (ignored)",
        f"{cf}:6: warning: parameter hosts is set again; the last value counts",
    ]


def test_malformed_and_missing_definition_files(tmp_path):
    cf = tmp_path / "t.cf"
    cf.write_text("hosts = db1\nthis is no assignment\n")
    with pytest.raises(DefinitionError, match=rf"^{cf}:2: expected name = value"):
        open_table(f"pgsql:{cf}")
    cf.write_text("query = SELECT 1\nhosts = db1:pg\n")
    with pytest.raises(DefinitionError, match=rf"^{cf}:2: hosts: bad port in db1:pg"):
        open_table(f"pgsql:{cf}")
    cf.write_text("hosts = db1\n")
    with pytest.raises(DefinitionError, match=rf"^{cf}:0: missing required parameter query"):
        open_table(f"pgsql:{cf}")
    with pytest.raises(MapError, match="cannot open"):
        open_table(f"ldap:{tmp_path}/none.cf")
    with pytest.raises(MapError, match="absolute path"):
        open_table("ldap:ldapsource")


def test_ldap_definition_values_are_checked(tmp_path):
    cf = tmp_path / "l.cf"
    cf.write_text("server_host = ldap://127.0.0.1:3890\nscope = tree\n")
    with pytest.raises(DefinitionError, match=rf"^{cf}:2: scope: expected sub, one or base"):
        open_table(f"ldap:{cf}")
    cf.write_text("server_host = ldapi:///run/slapd\n")
    with pytest.raises(DefinitionError, match="unsupported URL scheme"):
        open_table(f"ldap:{cf}")
    cf.write_text("server_host = ldap://127.0.0.1:ldap\n")
    with pytest.raises(DefinitionError, match=rf"^{cf}:1: server_host: bad port"):
        open_table(f"ldap:{cf}")
    cf.write_text("timeout = soon\n")
    with pytest.raises(DefinitionError, match=rf"^{cf}:1: timeout: expected a number"):
        open_table(f"ldap:{cf}")


def test_pgsql_hosts_forms():
    assert connection_targets("db1, inet:db2:5433 unix:/run/postgresql [::1]:6000 "
                              "postgresql://u@db3/mail") == [
        {"host": "db1", "port": "5432"},
        {"host": "db2", "port": "5433"},
        {"host": "/run/postgresql"},
        {"host": "::1", "port": "6000"},
        {"conninfo": "postgresql://u@db3/mail"},
    ]


def test_opening_a_table_does_not_connect(tmp_path):
    cf = tmp_path / "t.cf"
    cf.write_text("hosts = 127.0.0.1:1\nquery = SELECT 1\n")
    table = open_table(f"pgsql:{cf}")
    with pytest.raises(MapError, match=r"lookup of 'a@b\.example' failed"):
        table.lookup("A@b.example")  # nothing listens on port 1: a temporary failure


def test_check_names_the_definition_file_lines(tmp_path, capsys):
    good = tmp_path / "good.cf"
    good.write_text("hosts = 127.0.0.1:1\nquery = SELECT 1\nselect_field = x\n")
    bad = tmp_path / "bad.cf"
    bad.write_text("server_host = ldap://127.0.0.1:1\nscope = everything\n")
    cf = tmp_path / "backupmx.cf"
    cf.write_text(f"queue_directory = {tmp_path}/spool\n"
                  f"relay_recipient_maps = pgsql:{good}\n")
    assert cli.main(["-c", str(cf), "check"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"{good}:3: warning: unknown parameter select_field (ignored)" in err

    cf.write_text(f"queue_directory = {tmp_path}/spool\n"
                  f"transport_maps = ldap:{bad}\n"
                  f"relay_recipient_maps = pgsql:{tmp_path}/missing.cf\n")
    assert cli.main(["-c", str(cf), "check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"{bad}:2: ldap:{bad}: scope: expected sub, one or base, got 'everything'" in err
    assert (f"{cf}:3: relay_recipient_maps: pgsql:{tmp_path}/missing.cf: cannot open "
            f"{tmp_path}/missing.cf: No such file or directory") in err


def test_values_keep_their_inner_white_space(tmp_path):
    cf = tmp_path / "t.cf"
    cf.write_text("password =  two  spaces \nquery = SELECT a\n    FROM t\n")
    definition = read_definition(f"pgsql:{cf}", str(cf), ("password", "query"))
    assert definition.get("password") == "two  spaces"
    assert definition.get("query") == "SELECT a    FROM t"
