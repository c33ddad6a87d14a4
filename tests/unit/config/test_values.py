"""Typed values: times, booleans, integers, codes, choices, ports, and their error texts."""

import os

import pytest

from backupmx import services
from backupmx.config import ConfigError, parse, parse_time


@pytest.mark.parametrize(
    ("text", "unit", "seconds"),
    [
        ("300s", "s", 300),
        ("300", "s", 300),
        ("5m", "s", 300),
        ("3h", "s", 10800),
        ("5d", "d", 432000),
        ("5", "d", 432000),
        ("0", "h", 0),
        ("2", "h", 7200),
        ("1w", "s", 604800),
        (" 31d ", "s", 2678400),
    ],
)
def test_parse_time(text: str, unit: str, seconds: int) -> None:
    assert parse_time(text, unit) == seconds


@pytest.mark.parametrize("text", ["", "1.5h", "3hours", "1h30m", "-1s", "h", "5D", "5 d"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_time(text, "d")
    assert str(info.value) == ("expected a time: an integer with an optional unit s, m, h, d "
                               "or w (without a unit: days)")


def test_time_parameters_use_their_own_default_unit() -> None:
    cfg = parse(
        "maximal_queue_lifetime = 2\n"
        "delay_warning_time = 4\n"
        "minimal_backoff_time = 60\n"
        "address_verify_negative_refresh_time = 1\n"
        "bounce_queue_lifetime = 12h\n"
    )
    assert cfg.time("maximal_queue_lifetime") == 2 * 86400
    assert cfg.time("delay_warning_time") == 4 * 3600
    assert cfg.time("minimal_backoff_time") == 60
    assert cfg.time("address_verify_negative_refresh_time") == 3600
    assert cfg.time("bounce_queue_lifetime") == 12 * 3600


def test_default_times() -> None:
    cfg = parse("")
    assert cfg.time("maximal_queue_lifetime") == 432000
    assert cfg.time("delay_warning_time") == 0
    assert cfg.time("minimal_backoff_time") == 300
    assert cfg.time("maximal_backoff_time") == 4000
    assert cfg.time("address_verify_positive_expire_time") == 31 * 86400
    assert cfg.time("address_verify_positive_refresh_time") == 7 * 86400
    assert cfg.time("address_verify_negative_expire_time") == 3 * 86400
    assert cfg.time("address_verify_negative_refresh_time") == 3 * 3600
    assert cfg.time("address_verify_poll_delay") == 3
    assert cfg.time("address_verify_cache_cleanup_interval") == 12 * 3600
    assert cfg.time("smtpd_policy_service_timeout") == 100
    assert cfg.time("smtp_data_done_timeout") == 600


@pytest.mark.parametrize(("text", "value"), [("yes", True), ("YES", True), ("No", False),
                                             ("no", False)])
def test_bool_is_case_insensitive(text: str, value: bool) -> None:
    assert parse(f"smtpd_delay_reject = {text}").bool("smtpd_delay_reject") is value


def test_bad_bool_names_file_line_parameter_and_form() -> None:
    with pytest.raises(ConfigError) as info:
        parse("myhostname = mx.example.org\nsmtpd_delay_reject = true\n", "/etc/b.cf")
    assert str(info.value) == (
        '/etc/b.cf:2: bad value "true" for parameter smtpd_delay_reject: expected yes or no'
    )


def test_bad_value_reached_through_expansion_is_reported_where_it_is_set() -> None:
    with pytest.raises(ConfigError) as info:
        parse("reject_tempfail_action = later\n", "t.cf")
    assert str(info.value) == (
        't.cf:1: bad value "later" for parameter reject_tempfail_action: '
        "expected one of: defer_if_permit, defer"
    )


def test_defaults_and_types_of_the_getters() -> None:
    cfg = parse("")
    assert cfg.int("message_size_limit") == 10240000
    assert cfg.int("unverified_recipient_reject_code") == 450
    assert cfg.int("smtp_tcp_port") == 25
    assert cfg.bool("smtpd_delay_reject") is True
    assert cfg.bool("soft_bounce") is False
    assert cfg.str("smtpd_forbid_bare_newline") == "yes"
    assert cfg.list("smtpd_relay_restrictions") == [
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "permit_mx_backup",
        "defer_unauth_destination",
    ]
    assert cfg.list("mynetworks") == ["127.0.0.0/8", "[::1]/128"]
    assert cfg.list("smtpd_listen") == ["127.0.0.1:2525"]
    assert cfg.str("admin_listen") == "127.0.0.1:9025"
    assert cfg.list("dns_nameservers") == []
    assert cfg.get("maximal_queue_lifetime") == 432000
    assert cfg.get("notify_classes") == ["resource", "software"]
    assert cfg.get("smtpd_helo_required") is False
    assert cfg.get("queue_directory") == "/var/spool/backupmx"


def test_getter_of_the_wrong_type_or_name_fails_loudly() -> None:
    cfg = parse("")
    with pytest.raises(TypeError):
        cfg.bool("myhostname")
    with pytest.raises(TypeError):
        cfg.int("maximal_queue_lifetime")
    with pytest.raises(TypeError):
        cfg.time("message_size_limit")
    with pytest.raises(TypeError):
        cfg.list("myhostname")
    with pytest.raises(KeyError):
        cfg.get("relay_domain")


def test_list_results_are_copies() -> None:
    cfg = parse("relay_domains = a.example")
    cfg.list("relay_domains").append("evil.example")
    got = cfg.get("relay_domains")
    assert isinstance(got, list)
    got.append("evil.example")
    assert cfg.list("relay_domains") == ["a.example"]


def test_reply_codes_are_range_checked_per_parameter() -> None:
    cfg = parse("unverified_recipient_reject_code = 577\nunknown_address_reject_code = 550\n")
    assert cfg.int("unverified_recipient_reject_code") == 577
    assert cfg.int("unknown_address_reject_code") == 550
    with pytest.raises(ConfigError) as info:
        parse("unverified_recipient_defer_code = 550\naccess_map_reject_code = 5x4\n"
              "relay_domains_reject_code = 450\n", "c.cf")
    assert [str(i) for i in info.value.issues] == [
        'c.cf:1: bad value "550" for parameter unverified_recipient_defer_code: '
        "expected an SMTP reply code from 200 to 499",
        'c.cf:2: bad value "5x4" for parameter access_map_reject_code: '
        "expected an SMTP reply code from 400 to 599",
        'c.cf:3: bad value "450" for parameter relay_domains_reject_code: '
        "expected an SMTP reply code from 500 to 599",
    ]


@pytest.mark.parametrize(("text", "port"), [("smtp", 25), ("2525", 2525), ("SMTP", 25),
                                            ("submission", 587)])
def test_port_by_number_or_name(text: str, port: int) -> None:
    assert parse(f"smtp_tcp_port = {text}").int("smtp_tcp_port") == port


@pytest.mark.parametrize("text", ["0", "65536", "no-such-service-here", ""])
def test_bad_port(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"smtp_tcp_port = {text}", "p.cf")
    assert str(info.value) == (
        f'p.cf:1: bad value "{text}" for parameter smtp_tcp_port: '
        "expected a TCP port number (1-65535) or a service name such as smtp"
    )


def test_choice_is_case_insensitive_and_canonical() -> None:
    cfg = parse("smtpd_forbid_bare_newline = Normalize\nsyslog_facility = LOCAL3\n")
    assert cfg.str("smtpd_forbid_bare_newline") == "normalize"
    assert cfg.get("syslog_facility") == "local3"


def test_integers_and_sizes() -> None:
    cfg = parse("message_size_limit = 0\nsmtpd_recipient_limit = 100\n")
    assert cfg.int("message_size_limit") == 0
    assert cfg.int("smtpd_recipient_limit") == 100
    with pytest.raises(ConfigError) as info:
        parse("message_size_limit = 10M\nsmtpd_recipient_limit = -1\n", "i.cf")
    assert [str(i) for i in info.value.issues] == [
        'i.cf:1: bad value "10M" for parameter message_size_limit: '
        "expected a size in bytes (digits only, 0 or more)",
        'i.cf:2: bad value "-1" for parameter smtpd_recipient_limit: '
        "expected an integer (digits only, 0 or more)",
    ]


def test_bad_braces_in_a_list_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse("smtpd_recipient_restrictions = check_policy_service { inet:x\n", "l.cf")
    assert str(info.value) == (
        'l.cf:1: bad value "check_policy_service { inet:x" for parameter '
        'smtpd_recipient_restrictions: missing "}" in "check_policy_service { inet:x"'
    )


def test_worker_processes_bounded_and_defaulted_from_the_cpus():
    with pytest.raises(ConfigError) as info:
        services.build(parse("mynetworks = 127.0.0.1/32\nsmtpd_worker_processes = 65\n"))
    assert "smtpd_worker_processes: 65 is not between 0 and 64" in str(info.value)
    cpus = len(os.sched_getaffinity(0))
    default = parse("mynetworks = 127.0.0.1/32\n").int("smtpd_worker_processes")
    assert default == (cpus if cpus > 1 else 0)
