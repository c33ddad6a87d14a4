"""Loading: unknown names, collected issues, files, overrides, and the parameter table."""

import re
from pathlib import Path

import pytest

from backupmx.config import (
    PARAMS,
    ConfigError,
    ConfigIssue,
    describe,
    load,
    params,
    parse,
    render_reference,
)


def test_unknown_parameter_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse("relay_domain = nausch.org\n", "/etc/backupmx/backupmx.cf")
    assert str(info.value) == (
        '/etc/backupmx/backupmx.cf:1: unknown parameter "relay_domain"; '
        'did you mean "relay_domains"?'
    )


def test_unknown_parameter_without_a_close_name_has_no_hint() -> None:
    with pytest.raises(ConfigError) as info:
        parse("frobnicate = 1\n", "m.cf")
    assert str(info.value) == 'm.cf:1: unknown parameter "frobnicate"'


def test_all_issues_are_reported_together_in_line_order() -> None:
    text = (
        "  orphan\n"
        "smtpd_delay_reject = maybe\n"
        "mynetwork = 10.0.0.0/8\n"
        "no equals sign here\n"
        "maximal_queue_lifetime = 5 days\n"
        "smtpd_banner = ${myhostname\n"
    )
    with pytest.raises(ConfigError) as info:
        parse(text, "all.cf")
    issues = info.value.issues
    assert [i.line for i in issues] == [1, 2, 3, 4, 5, 6]
    assert issues[1] == ConfigIssue(
        "all.cf", 2, 'bad value "maybe" for parameter smtpd_delay_reject: expected yes or no'
    )
    assert issues[2].message == 'unknown parameter "mynetwork"; did you mean "mynetworks"?'
    assert issues[5].message == 'parameter smtpd_banner: missing "}" in "{myhostname"'
    assert str(info.value) == "\n".join(str(i) for i in issues)


def test_issue_and_error_formatting() -> None:
    issue = ConfigIssue("a.cf", 7, "broken")
    assert str(issue) == "a.cf:7: broken"
    error = ConfigError([issue, ConfigIssue("a.cf", 9, "also broken")])
    assert str(error) == "a.cf:7: broken\na.cf:9: also broken"
    assert error.issues[1].line == 9


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "backupmx.cf"
    path.write_text("# backup MX\nmyhostname = mx1.tachtler.net\n"
                    "unverified_recipient_reject_code = 577\n", encoding="utf-8")
    cfg = load(str(path))
    assert cfg.path == str(path)
    assert cfg.str("myhostname") == "mx1.tachtler.net"
    assert cfg.int("unverified_recipient_reject_code") == 577
    assert cfg.line_of("unverified_recipient_reject_code") == 3
    assert cfg.line_of("relay_domains") is None
    assert cfg.warnings == []


def test_load_tolerates_non_utf8_comments(tmp_path: Path) -> None:
    path = tmp_path / "latin1.cf"
    path.write_bytes(b"# Gr\xfc\xdfe\nrelay_domains = nausch.org\n")
    assert load(str(path)).list("relay_domains") == ["nausch.org"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.cf")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}:0: cannot read: No such file or directory"


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.cf"
    path.write_text("soft_bounce = perhaps\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == (
        f'{path}:1: bad value "perhaps" for parameter soft_bounce: expected yes or no'
    )


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.cf"
    path.write_text("queue_directory = /var/spool/backupmx\n", encoding="utf-8")
    cfg = load(str(path), {"queue_directory": "/tmp/q", "soft_bounce": "yes"})
    assert cfg.str("queue_directory") == "/tmp/q"
    assert cfg.bool("soft_bounce") is True
    assert cfg.is_set("soft_bounce")
    assert cfg.raw("queue_directory") == "/tmp/q"
    assert cfg.line_of("queue_directory") is None
    with pytest.raises(ConfigError) as info:
        load(str(path), {"queue_dir": "/x", "soft_bounce": "maybe"})
    assert [str(i) for i in info.value.issues] == [
        f'{path}:0: override: unknown parameter "queue_dir"; did you mean "queue_directory"?',
        f'{path}:0: override: bad value "maybe" for parameter soft_bounce: expected yes or no',
    ]


def test_items_lists_every_parameter_expanded_in_name_order() -> None:
    cfg = parse("myhostname = mx.example.org\n")
    items = dict(cfg.items())
    assert list(items) == sorted(PARAMS)
    assert items["mydestination"] == "mx.example.org, localhost.example.org, localhost"
    assert items["maximal_queue_lifetime"] == "5d"


def test_a_reload_is_a_new_independent_config() -> None:
    first = parse("relay_domains = a.example\n")
    second = parse("relay_domains = b.example\n")
    assert first.list("relay_domains") == ["a.example"]
    assert second.list("relay_domains") == ["b.example"]
    with pytest.raises(AttributeError):
        first.other = 1  # type: ignore[attr-defined]


# -- the table itself ----------------------------------------------------------------------

_REF = re.compile(r"\$\{?\(?([A-Za-z0-9_]+)")


def test_every_default_is_valid_and_refers_only_to_known_parameters() -> None:
    cfg = parse("")
    assert cfg.warnings == []
    for param in describe():
        if param.raw or param.compute is not None:
            continue
        for ref in _REF.findall(param.default):
            assert ref in PARAMS, f"{param.name} refers to unknown {ref}"


def test_every_parameter_has_a_one_line_doc_and_a_sane_declaration() -> None:
    names = [p.name for p in describe()]
    assert len(names) == len(set(names)) == len(PARAMS)
    for p in describe():
        assert p.doc and "\n" not in p.doc and not p.doc.endswith("."), p.name
        if p.type == "time":
            assert p.unit in ("s", "m", "h", "d", "w"), p.name
        if p.type == "code":
            assert 200 <= p.lo < p.hi <= 599, p.name
        if p.type == "choice":
            assert p.choices, p.name


def test_deliberate_differences_from_postfix() -> None:
    assert PARAMS["smtpd_relay_restrictions"].default == (
        "permit_mynetworks, permit_sasl_authenticated, permit_mx_backup, defer_unauth_destination"
    )
    assert PARAMS["smtpd_forbid_bare_newline"].default == "yes"


def test_render_reference_is_a_markdown_table_of_every_parameter() -> None:
    text = render_reference()
    lines = text.splitlines()
    assert lines[:2] == ["| name | default | description |", "| --- | --- | --- |"]
    assert len(lines) == 2 + len(PARAMS)
    assert "| `maximal_queue_lifetime` | `5d` | Age at which undeliverable mail is returned; 0 " \
           "means try once (time; default unit d) |" in lines
    assert "| `relay_domains` | (empty) | Domains this host relays to (besides " \
           "permit_mx_backup domains) |" in lines
    assert "| `myhostname` | this host's fully qualified name |" in text


@pytest.mark.parametrize(
    ("fqdn", "hostname", "expected"),
    [
        ("mx1.tachtler.net", "mx1", "mx1.tachtler.net"),
        ("localhost", "vm.example.org.", "vm.example.org"),
        ("localhost", "vm", "vm.localdomain"),
    ],
)
def test_host_fqdn(monkeypatch: pytest.MonkeyPatch, fqdn: str, hostname: str,
                   expected: str) -> None:
    monkeypatch.setattr(params.socket, "getfqdn", lambda: fqdn)
    monkeypatch.setattr(params.socket, "gethostname", lambda: hostname)
    assert params.host_fqdn.__wrapped__() == expected
