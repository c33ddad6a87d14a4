"""smtp_tls_policy_maps values, lookup keys and certificate name matching."""

from __future__ import annotations

import ssl

import pytest

from backupmx.smtp import tlspolicy
from backupmx.smtp.tlspolicy import PolicyError, TlsPolicy


def test_values_parse_as_postfix_writes_them():
    assert tlspolicy.parse("secure match=nexthop:dot-nexthop ciphers=high") == TlsPolicy(
        "secure", ("nexthop", "dot-nexthop"), "high")
    assert tlspolicy.parse("fingerprint match=ab:cd|EF:01").match == ("ABCD", "EF01")
    assert tlspolicy.parse("encrypt protocols=!TLSv1:!TLSv1.1").protocols == "!TLSv1:!TLSv1.1"
    assert tlspolicy.min_version("!SSLv3:!TLSv1:!TLSv1.1") == ssl.TLSVersion.TLSv1_2
    assert tlspolicy.min_version(">=TLSv1.3") == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(("value", "problem"), [
    ("strict", "unknown TLS security level 'strict'"),
    ("encrypt match=nexthop", "match= applies to verify, secure and fingerprint"),
    ("verify cafile=/x", "unknown TLS policy attribute 'cafile=/x'"),
    ("encrypt ciphers=export", "ciphers=export"),
    ("fingerprint match=XYZ", "not a certificate fingerprint"),
    ("", "empty TLS policy"),
])
def test_bad_values(value, problem):
    with pytest.raises(PolicyError, match=problem):
        tlspolicy.parse(value)


def test_lookup_keys():
    assert tlspolicy.keys("mail.nausch.org", None, None, False) == [
        "mail.nausch.org", ".nausch.org", ".org"]
    assert tlspolicy.keys("nausch.org", "10.0.0.5", 2525, True) == ["[10.0.0.5]:2525",
                                                                    "[10.0.0.5]"]


def test_names_match():
    assert tlspolicy.names_match(["mx1.nausch.org"], [".nausch.org"])
    assert not tlspolicy.names_match(["mx1.nausch.org"], ["nausch.org"])
    assert tlspolicy.names_match(["*.nausch.org"], ["mx1.nausch.org"])
    assert not tlspolicy.names_match(["*.nausch.org"], ["a.mx1.nausch.org"])
