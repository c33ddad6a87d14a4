"""main.cf logical lines and the list splitter."""

import pytest

from backupmx.config import ConfigError, parse, split_list
from backupmx.config.syntax import Assignment, parse_main_cf


def test_continuation_lines_are_glued_with_their_leading_space() -> None:
    text = "relay_domains = a.example,\n    b.example\n\tc.example\n"
    assignments, issues = parse_main_cf(text, "main.cf")
    assert issues == []
    assert assignments == [Assignment("relay_domains", "a.example,    b.example\tc.example", 1)]


def test_comment_and_blank_lines_between_continuation_lines_do_not_end_the_line() -> None:
    text = (
        "# header comment\n"
        "smtpd_recipient_restrictions =\n"
        "    permit_mynetworks,\n"
        "#   reject_rbl_client old.example,\n"
        "\n"
        "      # indented comment\n"
        "    reject_unauth_destination\n"
        "myhostname = mx.example.org\n"
    )
    assignments, issues = parse_main_cf(text, "main.cf")
    assert issues == []
    assert [(a.name, a.line) for a in assignments] == [
        ("smtpd_recipient_restrictions", 2),
        ("myhostname", 8),
    ]
    cfg = parse(text)
    assert cfg.list("smtpd_recipient_restrictions") == [
        "permit_mynetworks",
        "reject_unauth_destination",
    ]


def test_whitespace_around_equals_and_at_the_end_is_removed() -> None:
    cfg = parse("smtpd_banner   =   $myhostname  ready  \t\nmyhostname=mx.example.org")
    assert cfg.str("smtpd_banner") == "mx.example.org  ready"
    assert cfg.raw("smtpd_banner") == "$myhostname  ready"


def test_empty_value_is_allowed() -> None:
    cfg = parse("smtpd_relay_restrictions =\n")
    assert cfg.list("smtpd_relay_restrictions") == []
    assert cfg.raw("smtpd_relay_restrictions") == ""
    assert cfg.is_set("smtpd_relay_restrictions")


def test_no_trailing_comments() -> None:
    cfg = parse("mynetworks = 10.0.0.0/8 # lan\n")
    assert cfg.list("mynetworks") == ["10.0.0.0/8", "#", "lan"]


def test_last_definition_wins_and_its_line_is_remembered() -> None:
    cfg = parse("relay_domains = a.example\n\nrelay_domains = b.example\n", "f.cf")
    assert cfg.list("relay_domains") == ["b.example"]
    assert cfg.line_of("relay_domains") == 3
    assert [str(w) for w in cfg.warnings] == [
        "f.cf:3: parameter relay_domains is set again; this replaces the value from line 1"
    ]


def test_crlf_line_ends() -> None:
    cfg = parse("myhostname = mx.example.org\r\nmydestination = $myhostname,\r\n  localhost\r\n")
    assert cfg.list("mydestination") == ["mx.example.org", "localhost"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "  permit_mynetworks\nmyhostname = a.example\n",
            "x.cf:1: continuation line without a parameter line before it "
            "(a line that starts with white space continues the previous one)",
        ),
        ("myhostname = a.example\nrelay_domains\n", 'x.cf:2: missing "=" in "relay_domains" '
         '(expected "name = value")'),
        ("\n\nrelay-domains = a.example\n", 'x.cf:3: bad parameter name "relay-domains" '
         "(letters, digits and _ only)"),
    ],
)
def test_syntax_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "x.cf")
    assert str(info.value) == message


def test_continuation_of_a_bad_line_is_not_an_orphan() -> None:
    with pytest.raises(ConfigError) as info:
        parse("bogus line\n  more\n", "x.cf")
    assert [i.line for i in info.value.issues] == [1]


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("", []),
        (" , ,, ", []),
        ("a,b c\td\n e", ["a", "b", "c", "d", "e"]),
        ("a ,  b,c", ["a", "b", "c"]),
        (
            "check_policy_service { inet:127.0.0.1:9998, timeout=10s, default_action=DUNNO }",
            ["check_policy_service", "inet:127.0.0.1:9998, timeout=10s, default_action=DUNNO"],
        ),
        ("{a b}, {  }, c", ["a b", "", "c"]),
        (
            "check_client_access inline:{ 1.2.3.4=OK, { 5.6.7.8 = REJECT no } }, permit",
            ["check_client_access", "inline:{ 1.2.3.4=OK, { 5.6.7.8 = REJECT no } }", "permit"],
        ),
        ("{x {y} z}", ["x {y} z"]),
    ],
)
def test_split_list(text: str, items: list[str]) -> None:
    assert split_list(text) == items


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a, {b c", 'missing "}" in "a, {b c"'),
        ("a }", 'unexpected "}" in "a }"'),
        ("{a}b", 'text after "}" in "{a}b" (separate list items with a comma)'),
    ],
)
def test_split_list_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        split_list(text)
    assert str(info.value) == message


def test_seed_recipient_restrictions_with_a_missing_comma() -> None:
    text = (
        "smtpd_recipient_restrictions =\n"
        "        check_recipient_access hash:/etc/postfix/access_recipient-rfc,\n"
        "        permit_mynetworks,\n"
        "        reject_rbl_client zen.spamhaus.org,\n"
        "        check_client_access hash:/etc/postfix/policyd_weight_client_whitelist\n"
        "        check_policy_service inet:127.0.0.1:12525,\n"
        "        check_policy_service unix:postgrey/socket,\n"
        "        reject_unverified_recipient,\n"
        "        permit_mx_backup,\n"
        "        reject_unauth_destination\n"
    )
    assert parse(text).list("smtpd_recipient_restrictions") == [
        "check_recipient_access",
        "hash:/etc/postfix/access_recipient-rfc",
        "permit_mynetworks",
        "reject_rbl_client",
        "zen.spamhaus.org",
        "check_client_access",
        "hash:/etc/postfix/policyd_weight_client_whitelist",
        "check_policy_service",
        "inet:127.0.0.1:12525",
        "check_policy_service",
        "unix:postgrey/socket",
        "reject_unverified_recipient",
        "permit_mx_backup",
        "reject_unauth_destination",
    ]
