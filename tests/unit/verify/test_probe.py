"""Probe routing, the probe sender and the classification of the primary's RCPT reply."""

from __future__ import annotations

from pathlib import Path

from backupmx.smtp.nexthop import NextHop, Server
from backupmx.verify.decide import BOUNCE, DEFER, OK
from backupmx.verify.probe import ProbeResult, probe_sender, rcpt_result, route
from tests.unit.verify.kit import build

MX1 = Server("mx1.nausch.org", "127.0.0.2", 25, 10)


def test_probe_sender_is_qualified_with_myorigin(tmp_path: Path) -> None:
    svc, _ = build("", tmp_path)
    assert probe_sender(svc.cfg) == "double-bounce@mx1.tachtler.net"
    svc, _ = build("address_verify_sender = <>\n", tmp_path / "a")
    assert probe_sender(svc.cfg) == ""
    svc, _ = build("address_verify_sender = probe@example.net\n", tmp_path / "b")
    assert probe_sender(svc.cfg) == "probe@example.net"


def test_probes_follow_the_domain_by_default(tmp_path: Path) -> None:
    svc, _ = build("", tmp_path)
    assert route(svc, "alice@nausch.org") == ("smtp", None)


def test_address_verify_relayhost_overrides_relayhost(tmp_path: Path) -> None:
    svc, _ = build("relayhost = [relay.example]\naddress_verify_relayhost = [10.0.0.1]:2525\n",
                   tmp_path)
    assert route(svc, "alice@nausch.org") == ("smtp", NextHop("10.0.0.1", 2525, False))
    svc, _ = build("relayhost = [relay.example]\n", tmp_path / "a")
    assert route(svc, "alice@nausch.org") == ("smtp", NextHop("relay.example", None, False))


def test_address_verify_transport_maps(tmp_path: Path) -> None:
    svc, _ = build("address_verify_transport_maps = inline:{ nausch.org=smtp:[mx1.nausch.org]:26,"
                   " .sub.example=error:refused }\n", tmp_path)
    assert route(svc, "a@nausch.org") == ("smtp", NextHop("mx1.nausch.org", 26, False))
    assert route(svc, "a@x.sub.example") == ("error", "refused")


def test_rcpt_replies_classify_as_deliverable_undeliverable_undecided() -> None:
    assert rcpt_result(MX1, 250, "2.1.5 Ok") == ProbeResult(
        OK, "250 2.1.5 Ok", "2.1.5", "mx1.nausch.org[127.0.0.2]:25")
    assert rcpt_result(MX1, 550, "5.1.1 <n@nausch.org>: unknown") == ProbeResult(
        BOUNCE, "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <n@nausch.org>: unknown "
        "(in reply to RCPT TO command)", "5.1.1", "mx1.nausch.org[127.0.0.2]:25")
    greylisted = rcpt_result(MX1, 450, "4.2.0 greylisted")
    assert (greylisted.status, greylisted.dsn) == (DEFER, "4.2.0")
