"""postgrey's greylisting decision over a real (in-memory) store."""

from __future__ import annotations

import pytest

from backupmx.policy.greylist import (
    GreylistSettings,
    Whitelist,
    client_key,
    decide,
    new_recent,
    normalise_sender,
    parse_whitelist,
)
from backupmx.policy.store import GreylistStore, StoreSpecError, store_path

T0 = 1_700_000_000
S = GreylistSettings(delay=300, hostname="mx1.tachtler.net", auto_whitelist=2)


def req(ip: str = "198.51.100.7", sender: str = "alice@sender.example",
        rcpt: str = "bob@nausch.org", instance: str = "i1", **extra: str) -> dict[str, str]:
    attrs = {"request": "smtpd_access_policy", "client_address": ip,
             "client_name": "mail.sender.example", "sender": sender, "recipient": rcpt,
             "instance": instance, "etrn_domain": ""}
    attrs.update(extra)
    return attrs


@pytest.fixture
def store() -> GreylistStore:
    return GreylistStore(":memory:")


def test_first_attempt_is_greylisted_with_postgreys_text(store):
    d = decide(req(), store, S, T0, new_recent())
    assert d.action == ("DEFER_IF_PERMIT 4.2.0 Greylisted, see "
                        "http://postgrey.schweikert.ch/help/nausch.org.html")
    assert (d.verdict, d.reason) == ("greylist", "new")
    assert d.log_line(req()) == ("action=greylist, reason=new, client_name=mail.sender.example, "
                                 "client_address=198.51.100.7, sender=alice@sender.example, "
                                 "recipient=bob@nausch.org")


def test_no_4_2_0_prefix_without_etrn_domain_attribute(store):
    attrs = req()
    del attrs["etrn_domain"]
    assert decide(attrs, store, S, T0, new_recent()).action == (
        "DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/nausch.org.html")


def test_early_retry_then_pass_with_header_then_plain_dunno(store):
    recent = new_recent()
    decide(req(), store, S, T0, recent)
    early = decide(req(), store, S, T0 + 100, recent)
    assert (early.verdict, early.reason) == ("greylist", "early-retry (200s missing)")
    passed = decide(req(instance="i2"), store, S, T0 + 305, recent)
    assert passed.action.startswith("PREPEND X-Greylist: delayed 305 seconds by backupmx-")
    assert " at mx1.tachtler.net; " in passed.action
    assert decide(req(instance="i3"), store, S, T0 + 400, recent).action == "DUNNO"


def test_second_recipient_of_same_message_gets_no_second_header(store):
    recent = new_recent()
    decide(req(rcpt="a@nausch.org"), store, S, T0, recent)
    decide(req(rcpt="b@nausch.org"), store, S, T0, recent)
    first = decide(req(rcpt="a@nausch.org", instance="m"), store, S, T0 + 300, recent)
    second = decide(req(rcpt="b@nausch.org", instance="m"), store, S, T0 + 300, recent)
    assert first.action.startswith("PREPEND X-Greylist: delayed 300 seconds")
    assert (second.action, second.reason) == ("DUNNO", "triplet found")


def test_retry_after_retry_window_starts_over(store):
    decide(req(), store, S, T0, new_recent())
    late = decide(req(), store, S, T0 + S.retry_window + 1, new_recent())
    assert (late.verdict, late.reason) == ("greylist", "new")


def test_other_address_in_same_24_shares_the_triplet(store):
    decide(req(ip="198.51.100.7"), store, S, T0, new_recent())
    assert decide(req(ip="198.51.100.200"), store, S, T0 + 300, new_recent()).verdict == "pass"
    assert decide(req(ip="198.51.101.7"), store, S, T0 + 300, new_recent()).reason == "new"


def test_auto_whitelist_after_n_passes_at_most_one_per_hour(store):
    recent = new_recent()
    for i, rcpt in enumerate(["a@nausch.org", "b@nausch.org"]):
        t = T0 + i * 3600
        decide(req(rcpt=rcpt), store, S, t, recent)
        decide(req(rcpt=rcpt, instance=f"p{i}"), store, S, t + 300, recent)
    assert store.client("198.51.100.7") is not None
    assert store.client("198.51.100.7").count == 2  # type: ignore[union-attr]
    d = decide(req(rcpt="new@nausch.org"), store, S, T0 + 7300, recent)
    assert (d.action, d.reason) == ("DUNNO", "client AWL")


@pytest.mark.parametrize(("sender", "key"), [
    ("", ""),
    ("list+bounces-123@lists.example", "list@lists.example"),
    ("prvs=0123456789=alice@sender.example", "alice@sender.example"),
    ("alice=prvs=0123456789@sender.example", "alice=prvs=#@sender.example"),
    ("bounce-12-345@x.example", "bounce-#-#@x.example"),
    ("noatsign", "noatsign"),
])
def test_sender_normalisation(sender, key):
    assert normalise_sender(sender) == key


@pytest.mark.parametrize(("ip", "name", "mode", "key"), [
    ("198.51.100.7", "mail.sender.example", "subnet", "198.51.100.0"),
    ("2001:db8:1:2:3::9", "unknown", "subnet", "2001:db8:1:2::"),
    ("198.51.100.7", "x", "host", "198.51.100.7"),
    ("203.0.113.9", "mail-ot1-f54.google.com", "rdns", "google.com"),
    ("203.0.113.9", "out.mail.example.co.uk", "rdns", "example.co.uk"),
    ("203.0.113.9", "dsl-203-0-113-9.isp.example", "rdns", "203.0.113.0"),
    ("203.0.113.9", "unknown", "rdns", "203.0.113.0"),
])
def test_client_key(ip, name, mode, key):
    s = GreylistSettings(client_key=mode)
    assert client_key(ip, name, s) == key


def test_rdns_key_lets_a_provider_retry_from_another_network(store):
    s = GreylistSettings(client_key="rdns")
    decide(req(ip="192.0.2.1", client_name="a.mail.example.net"), store, s, T0, new_recent())
    d = decide(req(ip="203.0.113.1", client_name="b.mail.example.net"), store, s, T0 + 300,
               new_recent())
    assert d.verdict == "pass"


def test_whitelist_formats():
    wl = parse_whitelist(
        ["# comment", "/^mx\\d\\.big\\.example$/", "friend.example", "10.1.2", "10.9",
         "192.0.2.0/25", "2001:db8::/32", ""],
        ["postmaster@", "abuse@nausch.org", "lists.example", "/^spamtrap@/"],
    )
    assert wl.client("mx3.big.example", "198.51.100.1")
    assert wl.client("smtp.friend.example", "198.51.100.1")
    assert not wl.client("notfriend.example", "198.51.100.1")
    assert wl.client("unknown", "10.1.2.99") and wl.client("unknown", "10.9.0.1")
    assert not wl.client("unknown", "10.9.1.1")  # a.b is a /24 in postgrey 1.37
    assert wl.client("unknown", "192.0.2.100") and not wl.client("unknown", "192.0.2.200")
    assert wl.client("unknown", "2001:db8::5")
    assert wl.recipient("postmaster@any.example") and wl.recipient("postmaster+x@a.example")
    assert wl.recipient("abuse+tag@nausch.org") and not wl.recipient("abuse@other.example")
    assert wl.recipient("x@sub.lists.example") and wl.recipient("spamtrap@a.example")
    assert not wl.recipient("bob@nausch.org")


def test_whitelisted_client_and_recipient_pass(store):
    s = GreylistSettings(whitelist=Whitelist(client_names=("sender.example",)))
    assert decide(req(), store, s, T0, new_recent()).reason == "client whitelist"
    s = GreylistSettings(whitelist=parse_whitelist([], ["postmaster@"]))
    assert decide(req(rcpt="postmaster@nausch.org"), store, s, T0, new_recent()).reason == \
        "recipient whitelist"


def test_missing_attribute_is_dunno(store):
    attrs = req()
    del attrs["sender"]
    assert decide(attrs, store, S, T0, new_recent()).action == "DUNNO"


def test_store_persists_and_purges(tmp_path):
    path = str(tmp_path / "sub" / "greylist")
    st = GreylistStore(path)
    decide(req(), st, S, T0, new_recent())
    st.close()
    st = GreylistStore(path)
    assert decide(req(), st, S, T0 + 300, new_recent()).verdict == "pass"
    decide(req(rcpt="never@nausch.org"), st, S, T0, new_recent())
    assert st.purge(T0 + S.retry_window + 10, S.max_age, S.delay, S.retry_window) == 1
    assert st.purge(T0 + S.max_age + 400, S.max_age, S.delay, S.retry_window) == 2


@pytest.mark.parametrize(("spec", "path"), [
    ("btree:/x/g", "/x/g"), ("hash:/x/g", "/x/g"), ("lmdb:/x/g", "/x/g"), ("sqlite:/x/g", "/x/g"),
])
def test_store_specs(spec, path):
    assert store_path(spec) == path


@pytest.mark.parametrize("spec", ["redis://127.0.0.1:0/0", "cidr:/x", "/plain/path"])
def test_unsupported_store_specs(spec):
    with pytest.raises(StoreSpecError):
        store_path(spec)
