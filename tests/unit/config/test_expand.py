"""$name expansion: every form, recursion, loops, and defaults that refer to other parameters."""

import pytest

from backupmx.config import ConfigError, parse
from backupmx.config.expand import ExpansionError, expand

VALUES = {"full": "yes", "empty": "", "three": "3", "ten": "10", "level": "3.6"}


def lookup(name: str) -> str:
    return VALUES.get(name, "")


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("plain text", "plain text"),
        ("$full", "yes"),
        ("a${full}b", "ayesb"),
        ("a$(full)b", "ayesb"),
        ("$full.$three", "yes.3"),
        ("$undefined|", "|"),
        ("$$full", "$full"),
        ("cost: 5$$", "cost: 5$"),
        ("${full?set}", "set"),
        ("${empty?set}", ""),
        ("${full?{set}}", "set"),
        ("${full:unset}", ""),
        ("${empty:unset}", "unset"),
        ("${empty:{ unset }}", "unset"),
        ("${full?{v1}:{v2}}", "v1"),
        ("${empty?{v1}:{v2}}", "v2"),
        ("${full? {v1} : {v2} }", "v1"),
        ("${full?; reason $three}", "; reason 3"),
        ("${full?{$ten}:{$three}}", "10"),
        ("${full?{a{b}c}}", "a{b}c"),
        ("${{$three} < {$ten}?{less}:{more}}", "less"),
        ("${{$three} < {10}?{less}}", "less"),
        ("${{abc} < {abd}?{less}:{more}}", "less"),
        ("${{3} == {03}?{eq}:{ne}}", "eq"),
        ("${{3} != {03}?{ne}:{eq}}", "eq"),
        ("${{9} >= {10}?{ge}:{lt}}", "lt"),
        ("${{9} > {10}:{not greater}}", "not greater"),
        ("${{$level} <level {1} ? {} : {modern}}", "modern"),
        ("${{$level} <level {3.10} ? {older} : {}}", "older"),
        ("${{$level} >=level {3.6} ? {yes}}", "yes"),
    ],
)
def test_expand_forms(text: str, result: str) -> None:
    assert expand(text, lookup) == result


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${full", 'missing "}" in "{full"'),
        ("$(full", 'missing ")" in "(full"'),
        ("cost 5$", '"$" must be followed by a parameter name, "{", "(" or "$" '
         '(write "$$" for a literal "$")'),
        ("${-x}", 'bad parameter name in "${-x}"'),
        ("${full!x}", 'expected "}", "?" or ":" after "full" in "${full!x}"'),
        ("${full?{a}b}", 'unexpected text after "}" in "{a}b"'),
        ("${{a} ~ {b}?{x}}", 'expected an operator (== != < <= > >=) in "${{a} ~ {b}?{x}}"'),
        ("${{a} == {b}}", 'expected "?{text}" and/or ":{text}" in "${{a} == {b}}"'),
        ("${{x} <level {1}?{a}}", 'bad compatibility level "x"'),
    ],
)
def test_expand_errors(text: str, message: str) -> None:
    with pytest.raises(ExpansionError) as info:
        expand(text, lookup)
    assert str(info.value) == message


def test_values_expand_recursively_at_use() -> None:
    cfg = parse(
        "myhostname = mx1.tachtler.net\n"
        "smtpd_banner = $myorigin says hi\n"
        "myorigin = $mydomain\n"
    )
    assert cfg.str("mydomain") == "tachtler.net"
    assert cfg.str("smtpd_banner") == "tachtler.net says hi"


def test_defaults_refer_to_other_parameters() -> None:
    cfg = parse(
        "myhostname = mx1.tachtler.net\n"
        "data_directory = /srv/bmx\n"
        "relay_domains = nausch.org, example.org\n"
        "mynetworks = 192.0.2.0/24\n"
        "reject_tempfail_action = defer\n"
    )
    assert cfg.list("mydestination") == ["mx1.tachtler.net", "localhost.tachtler.net",
                                         "localhost"]
    assert cfg.str("postmaster_address") == "postmaster@tachtler.net"
    assert cfg.str("address_verify_map") == "btree:/srv/bmx/verify_cache"
    assert cfg.list("fast_flush_domains") == ["nausch.org", "example.org"]
    assert cfg.list("smtpd_client_event_limit_exceptions") == ["192.0.2.0/24"]
    assert cfg.str("unverified_recipient_tempfail_action") == "defer"
    assert cfg.str("smtpd_banner") == "mx1.tachtler.net ESMTP backupmx"
    assert cfg.str("address_verify_sender") == "double-bounce"
    assert not cfg.is_set("mydestination")
    assert cfg.raw("mydestination") is None


def test_mydomain_without_a_dot_in_myhostname_is_localdomain() -> None:
    assert parse("myhostname = gateway").str("mydomain") == "localdomain"


def test_conditional_on_a_parameter() -> None:
    cfg = parse("relayhost = [10.0.0.1]\nsmtpd_banner = ${relayhost?{relaying}:{direct}}\n")
    assert cfg.str("smtpd_banner") == "relaying"
    cfg = parse("smtpd_banner = ${relayhost?{relaying}:{direct}}\n")
    assert cfg.str("smtpd_banner") == "direct"


def test_expansion_loop_is_an_error_naming_the_parameter() -> None:
    with pytest.raises(ConfigError) as info:
        parse("myorigin = $mydomain\n\nmydomain = x.$myorigin\n", "loop.cf")
    assert [str(i) for i in info.value.issues] == [
        "loop.cf:1: parameter myorigin: $name expansion loop: myorigin -> mydomain -> myorigin",
        "loop.cf:3: parameter mydomain: $name expansion loop: mydomain -> myorigin -> mydomain",
    ]


def test_self_reference_through_a_computed_default_is_a_loop() -> None:
    with pytest.raises(ConfigError) as info:
        parse("myhostname = mx.$mydomain\n", "x.cf")
    assert str(info.value) == (
        "x.cf:1: parameter myhostname: $name expansion loop: myhostname -> mydomain -> myhostname"
    )


def test_undefined_reference_expands_to_nothing_with_a_warning() -> None:
    cfg = parse("myhostname = mx.example.org\nsmtpd_banner = $myhostname $nonesuch\n", "w.cf")
    assert cfg.str("smtpd_banner") == "mx.example.org "
    assert [str(w) for w in cfg.warnings] == [
        'w.cf:2: parameter smtpd_banner refers to undefined parameter "nonesuch" '
        "(it expands to nothing)"
    ]


def test_raw_template_is_kept_and_expanded_with_extra_variables() -> None:
    cfg = parse("myhostname = mx.example.org\n")
    template = cfg.str("default_rbl_reply")
    assert template == ("$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
                        "$rbl_domain${rbl_reason?; $rbl_reason}")
    extra = {"rbl_code": "554", "rbl_class": "Client host", "rbl_what": "198.51.100.7",
             "rbl_domain": "zen.spamhaus.org", "rbl_reason": ""}
    assert cfg.expand(template, extra) == (
        "554 Service unavailable; Client host [198.51.100.7] blocked using zen.spamhaus.org"
    )
    extra["rbl_reason"] = "see https://example.org"
    assert cfg.expand(template, extra).endswith("zen.spamhaus.org; see https://example.org")
    assert cfg.expand("$myhostname/$rbl_code", {"rbl_code": "5"}) == "mx.example.org/5"


def test_expand_reports_a_malformed_text() -> None:
    cfg = parse("", "c.cf")
    with pytest.raises(ConfigError) as info:
        cfg.expand("${broken")
    assert str(info.value) == 'c.cf:0: in "${broken": missing "}" in "{broken"'


def test_braced_list_item_survives_expansion() -> None:
    cfg = parse(
        "smtpd_policy_service_timeout = 10s\n"
        "smtpd_recipient_restrictions = check_policy_service "
        "{ inet:127.0.0.1:9998, timeout=$smtpd_policy_service_timeout }\n"
    )
    assert cfg.list("smtpd_recipient_restrictions") == [
        "check_policy_service",
        "inet:127.0.0.1:9998, timeout=10s",
    ]
