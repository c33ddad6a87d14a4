"""The master's shell: deferrals from the queue manager, a look, and where alerts go."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from backupmx.alerts import watch
from backupmx.alerts.send import Notice, Post
from backupmx.config import parse
from backupmx.envelope import DEFERRED, Envelope, Recipient
from backupmx.health import Health
from backupmx.log import log
from backupmx.outcome import Outcome, Stage
from backupmx.qmgr.core import Verdict
from backupmx.qmgr.quarantine import LogAlert

REFUSED = Outcome(DEFERRED, "4.4.1", "connect to mx1.nausch.org[127.0.0.2]:25: Connection "
                  "refused", Stage.CONNECT)


def server(text: str) -> Any:
    qmgr = SimpleNamespace(listeners=[], alert=LogAlert(), msgs={}, health=Health(),
                           submit=lambda env: None)
    return SimpleNamespace(svc=SimpleNamespace(cfg=parse(text)), qmgr=qmgr, spool=None)


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    got: list[str] = []
    monkeypatch.setattr(log, "emit", lambda component, text, priority=0: got.append(text))
    return got


def test_a_deferral_of_real_mail_is_held_and_a_notice_of_our_own_is_not(lines: list[str]):
    srv = server("alert_disk_free_threshold = 0\n")
    alerts = watch.Alerts(srv)
    mine = Envelope("N", "", [Recipient("s@sender.example")], time.time())
    theirs = Envelope("A", "s@sender.example", [Recipient("a@nausch.org")], time.time())
    for env in (mine, theirs):
        srv.qmgr.msgs[env.id] = env
        srv.qmgr.listeners[0](env, Verdict([(env.recipients[0], REFUSED)], [], [], False, True))
    alerts.check()
    assert lines == ["warning: alert=holding destination=nausch.org messages=1 recipients=1: "
                     f"mail for nausch.org is being held: {REFUSED.text}"]


def test_quarantined_goes_to_the_log_the_webhook_and_the_postmaster(
        monkeypatch: pytest.MonkeyPatch, lines: list[str]):
    srv = server("myhostname = mx1.tachtler.net\nalert_webhook_url = http://127.0.0.1:1/h\n"
                 "alert_notify_postmaster = yes\npostmaster_address = pm@nausch.org\n")
    alerts = watch.Alerts(srv)
    posts: list[Post] = []
    notices: list[Notice] = []
    monkeypatch.setattr(alerts.webhook.channel, "put", lambda item, what: posts.append(item))
    monkeypatch.setattr(alerts.mail.channel, "put", lambda item, what: notices.append(item))
    alerts.quarantined("3C1F51A2B3", "nausch.org", "550 5.1.1 unknown user")
    assert lines[0].startswith("warning: alert=quarantined destination=nausch.org "
                               "queue_id=3C1F51A2B3 messages=1: ")
    (p,) = posts
    assert p.url == "http://127.0.0.1:1/h" and p.timeout == 10.0
    assert p.payload["queue_id"] == "3C1F51A2B3" and p.payload["host"] == "mx1.tachtler.net"
    (n,) = notices
    assert n.to == "pm@nausch.org" and n.alert.kind == "quarantined"


def test_without_a_webhook_or_postmaster_mail_an_alert_is_only_logged(
        monkeypatch: pytest.MonkeyPatch, lines: list[str]):
    alerts = watch.Alerts(server(""))
    monkeypatch.setattr(alerts.webhook.channel, "put", lambda item, what: pytest.fail("posted"))
    monkeypatch.setattr(alerts.mail.channel, "put", lambda item, what: pytest.fail("mailed"))
    alerts.quarantined("3C1F51A2B3", "nausch.org", "550 5.7.1 rejected")
    assert len(lines) == 1
