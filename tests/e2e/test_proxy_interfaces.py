"""proxy_interfaces may name hosts, as in Postfix: their addresses (from the DNS) are this
host for permit_mx_backup and for loop detection; a name that does not resolve is a
FILE:LINE warning from ``check``."""

from __future__ import annotations

from tests.e2e.util import message, send, strip_received, wait_queue

PROXY = "proxy_interfaces = nat.tachtler.example\n"
RECORDS = [
    "nat.tachtler.example. 300 IN A 127.0.0.77",  # the NAT in front of this host
    "viaproxy.example. 300 IN MX 10 mx1.nausch.org.",
    "viaproxy.example. 300 IN MX 20 nat.tachtler.example.",
    "loopy.example. 300 IN MX 10 nat.tachtler.example.",
]


def test_a_named_proxy_makes_this_host_a_backup_mx(backupmx_factory, primary, dns_records):
    for rr in RECORDS:
        dns_records(rr)
    mx = backupmx_factory(PROXY)
    body = message("via proxy")
    out = send(mx, "sender@sender.example", ["u@viaproxy.example"], body)
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    got = primary.wait_for(1, timeout=30)
    assert got[0].rcpts == ["u@viaproxy.example"]
    assert strip_received(got[0].data)[1] == body


def test_a_domain_without_the_proxy_name_is_still_refused(backupmx_factory, primary,
                                                          dns_records):
    for rr in RECORDS:
        dns_records(rr)
    mx = backupmx_factory("proxy_interfaces =\n")
    out = send(mx, "sender@sender.example", ["u@viaproxy.example"], message())
    assert out.rcpts == [(454, b"4.7.1 <u@viaproxy.example>: Relay access denied")]


def test_a_named_proxy_as_best_mx_is_a_loop(backupmx_factory, primary, dns_records):
    for rr in RECORDS:
        dns_records(rr)
    mx = backupmx_factory(PROXY + "relay_domains = loopy.example\n")
    out = send(mx, "sender@sender.example", ["u@loopy.example"], message())
    assert out.rcpts == [(250, b"2.1.5 Ok")]
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0]["attempts"] >= 1)
    rcpt = q[0]["recipients"][0]
    assert rcpt["state"] == "deferred"
    assert rcpt["last_reply"] == "mail for loopy.example loops back to myself"
    assert primary.messages == []


def test_check_warns_about_a_name_that_does_not_resolve(backupmx_factory):
    mx = backupmx_factory("myhostname = mx1.tachtler.net\n"
                          "proxy_interfaces = 127.0.0.8, nosuch.tachtler.example\n", start=False)
    res = mx.cli("check")
    assert res.returncode == 0, res.stderr
    line = mx.config_text.splitlines().index(
        "proxy_interfaces = 127.0.0.8, nosuch.tachtler.example") + 1
    assert res.stderr.splitlines() == [
        f"{mx.config_file}:{line}: warning: proxy_interfaces: cannot resolve host name "
        "nosuch.tachtler.example: Host not found; it does not count as this host",
    ]


def test_check_refuses_what_is_neither_address_nor_name(backupmx_factory):
    mx = backupmx_factory("proxy_interfaces = 127.0.0.0/8\n", start=False)
    res = mx.cli("check")
    assert res.returncode == 2
    line = mx.config_text.splitlines().index("proxy_interfaces = 127.0.0.0/8") + 1
    assert res.stderr.strip() == (
        f"{mx.config_file}:{line}: proxy_interfaces: '127.0.0.0/8' is neither an address "
        "nor a host name")
