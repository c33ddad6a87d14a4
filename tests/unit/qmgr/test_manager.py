"""The queue manager's shell with fakes for every port and a clock the test sets."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, HELD, Envelope, Recipient
from backupmx.log import log
from backupmx.outcome import Outcome, Stage
from backupmx.qmgr import Policy, Qmgr
from backupmx.qmgr.ports import Delivery
from backupmx.queue.store import SpoolError
from backupmx.smtp.nexthop import Server as Hop
from backupmx.smtp.session import ClientSettings
from tests.unit.counts import Counts

T0 = 1_700_000_000.0
HOP = Hop("mx1.nausch.org", "127.0.0.2", 25, 10)
REFUSED = Outcome(DEFERRED, "4.4.1", "connect to mx1.nausch.org[127.0.0.2]:25: Connection "
                  "refused", Stage.CONNECT)
UNKNOWN = Outcome(BOUNCED, "5.1.1", "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 unknown "
                  "(in reply to RCPT TO command)", Stage.RECIPIENT,
                  "mx1.nausch.org[127.0.0.2]:25", "smtp; 550 5.1.1 unknown", replied=True)
SENT = Outcome(DELIVERED, "2.0.0", "250 2.0.0 Ok", Stage.RECIPIENT, "mx1.nausch.org[127.0.0.2]:25")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeSpool:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def content(self, entry_id: str) -> bytes:
        return b"Subject: x\r\n\r\nbody\r\n"

    async def update(self, env: Envelope) -> bool:
        self.events.append(f"update {env.id}")
        return True

    async def remove(self, entry_id: str) -> None:
        self.events.append(f"remove {entry_id}")

    async def set_hold(self, entry_id: str, hold: bool) -> bool:
        self.events.append(f"{'hold' if hold else 'release'} {entry_id}")
        return True

    async def delete(self, entry_id: str) -> bool:
        return True


class FakeDeliverer:
    """Answers every recipient with ``outcome`` (a function of the address)."""

    def __init__(self, events: list[str], outcome: Callable[[str], Outcome]) -> None:
        self.events = events
        self.outcome = outcome

    async def deliver(self, env: Envelope, domain: str, rcpts: list[Recipient],
                      content: Callable[[], bytes]) -> Delivery:
        self.events.append(f"deliver {env.id} {domain}")
        return Delivery([self.outcome(r.address) for r in rcpts], [HOP])

    def client_settings(self) -> ClientSettings:
        return ClientSettings(helo_name="mx1.tachtler.net")

    async def close(self) -> None:
        pass


class FakeBouncer:
    """Fails while ``full`` (the spool cannot store the notice)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.full = False

    async def notify(self, env: Envelope, failures: list[tuple[Recipient, Outcome]],
                     content: bytes, now: float,
                     delayed_until: float | None = None) -> Envelope | None:
        kind = "notify" if delayed_until is None else f"delay-until-{delayed_until - T0:.0f}"
        if self.full:
            self.events.append(f"{kind} failed {env.id}")
            raise SpoolError("queue write failed: database or disk is full")
        what = ",".join(f"{r.address}={o.status}" for r, o in failures)
        self.events.append(f"{kind} {env.id} {what}")
        return Envelope(id=f"N{env.id}", sender="", recipients=[Recipient(env.sender)],
                        arrival=now)


class FakeProbe:
    async def answering(self, servers: list[Hop], timeout: float) -> Hop | None:
        return None


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(log, "stderr", buf)
    monkeypatch.setattr(log, "file", None)
    monkeypatch.setattr(log, "facility", None)
    return buf


class World:
    def __init__(self, outcome: Callable[[str], Outcome], policy: Policy) -> None:
        self.events: list[str] = []
        self.clock = Clock()
        self.bouncer = FakeBouncer(self.events)
        self.deliverer = FakeDeliverer(self.events, outcome)
        self.qm = Qmgr(FakeSpool(self.events), self.deliverer, self.bouncer, FakeProbe(),
                       lambda: policy, clock=self.clock)

    def envelope(self, qid: str, *addrs: str) -> Envelope:
        env = Envelope(id=qid, sender="s@sender.example",
                       recipients=[Recipient(a) for a in addrs], arrival=T0,
                       client="mail.sender.example[192.0.2.1]")
        self.qm.msgs[qid] = env
        return env

    async def attempt(self, env: Envelope) -> None:
        """One attempt as the scheduler starts it (the decision to start is tested apart)."""
        await self.qm._attempt(env, {r.domain for r in env.open_recipients})


POLICY = Policy(minimal_backoff=300, maximal_backoff=4000, queue_lifetime=5 * 86400)
#: primary_reject_action = bounce: a 5xx of the primary is returned to the sender
BOUNCE = Policy(minimal_backoff=300, maximal_backoff=4000, queue_lifetime=5 * 86400,
                reject_action="bounce")


RESULTS = ("delivered", "deferred", "bounced", "held", "discarded")


async def test_the_dsn_is_durable_before_the_original_leaves(logged: io.StringIO) -> None:
    w = World(lambda a: UNKNOWN, BOUNCE)
    env = w.envelope("A1", "nobody@nausch.org")
    w.bouncer.full = True
    await w.attempt(env)
    # The notice could not be stored: the original stays, bounced, and is not persisted
    # in that state (on disk it is still open, so a restart tries it again).
    assert w.events == ["deliver A1 nausch.org", "notify failed A1"]
    assert w.qm.knows("A1") and "A1" in w.qm.msgs
    assert env.recipients[0].state == BOUNCED
    assert w.qm._due(env, w.clock.now) == T0 + 300
    w.clock.now += 300
    await w.attempt(env)  # the next pass: no delivery, the notice again
    assert w.events[2:] == ["notify failed A1"]
    w.bouncer.full = False
    w.clock.now += 300
    await w.attempt(env)
    assert w.events[3:] == ["notify A1 nobody@nausch.org=5.1.1", "remove A1"]
    assert "A1" not in w.qm.msgs and w.qm.knows("A1")
    assert "NA1" in w.qm.msgs  # the notice is queued for delivery
    # One result line for the one delivery attempt, however often the notice was retried.
    assert logged.getvalue().count("A1: to=<nobody@nausch.org>") == 1


async def test_a_flush_retries_a_notice_at_once() -> None:
    w = World(lambda a: UNKNOWN, BOUNCE)
    env = w.envelope("A1", "nobody@nausch.org")
    w.bouncer.full = True
    await w.attempt(env)
    w.qm.flush()
    assert w.qm._due(env, w.clock.now) == 0.0


async def test_every_result_is_logged_once_in_postfix_format(logged: io.StringIO) -> None:
    outcomes = {"ok@nausch.org": SENT, "gone@nausch.org": UNKNOWN, "later@nausch.org": REFUSED}
    w = World(outcomes.__getitem__, BOUNCE)
    env = w.envelope("A1", *outcomes)
    w.clock.now = T0 + 12.3
    counts = Counts("backupmx_delivery_results_total", "result", *RESULTS,
                    destination="nausch.org")
    await w.attempt(env)
    lines = logged.getvalue().splitlines()
    assert [ln.split(": ", 1)[1] for ln in lines if ": to=<" in ln] == [
        "A1: to=<ok@nausch.org>, relay=mx1.nausch.org[127.0.0.2]:25, delay=12, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok)",
        f"A1: to=<gone@nausch.org>, relay=mx1.nausch.org[127.0.0.2]:25, delay=12, dsn=5.1.1, "
        f"status=bounced ({UNKNOWN.text})",
        f"A1: to=<later@nausch.org>, relay=none, delay=12, dsn=4.4.1, "
        f"status=deferred ({REFUSED.text})",
    ]
    assert w.events == ["deliver A1 nausch.org", "notify A1 gone@nausch.org=5.1.1",
                        "update A1"]
    assert counts.delta() == {"delivered": 1, "bounced": 1, "deferred": 1}


async def test_soft_bounce_keeps_the_mail_and_sends_no_notice(logged: io.StringIO) -> None:
    w = World(lambda a: UNKNOWN, Policy(minimal_backoff=300, soft_bounce=True))
    env = w.envelope("A1", "nobody@nausch.org")
    await w.attempt(env)
    assert w.events == ["deliver A1 nausch.org", "update A1"]
    assert (env.recipients[0].state, env.recipients[0].next_attempt) == (DEFERRED, T0 + 300)
    assert "dsn=4.1.1, status=deferred (host mx1.nausch.org" in logged.getvalue()


async def test_expiry_returns_the_mail_with_the_last_reason(logged: io.StringIO) -> None:
    w = World(lambda a: REFUSED, POLICY)
    env = w.envelope("A1", "alice@nausch.org")
    w.clock.now = T0 + 5 * 86400
    await w.attempt(env)
    assert w.events == ["deliver A1 nausch.org", "notify A1 alice@nausch.org=4.4.1",
                        "remove A1"]
    text = logged.getvalue()
    assert "A1: to=<alice@nausch.org>, relay=none, delay=432000, dsn=4.4.1, status=bounced" \
        in text
    assert "A1: from=<s@sender.example>, status=expired, returned to sender" in text


async def test_a_dead_destination_defers_new_mail_without_an_attempt(
        logged: io.StringIO) -> None:
    w = World(lambda a: REFUSED, POLICY)
    first = w.envelope("A1", "alice@nausch.org")
    await w.attempt(first)
    assert w.qm.dead.reason("nausch.org", w.clock.now) == REFUSED.text
    assert "nausch.org" in w.qm._watchers  # the health probe knocks
    second = w.envelope("A2", "bob@nausch.org")
    w.clock.now += 1
    assert w.qm._defer_suspended(second, w.clock.now, POLICY)
    assert w.events == ["deliver A1 nausch.org", "update A1"]  # A2: no attempt, not persisted
    assert second.recipients[0].state == DEFERRED
    assert ("A2: to=<bob@nausch.org>, relay=none, delay=1, dsn=4.4.1, status=deferred "
            f"(delivery temporarily suspended: {REFUSED.text})") in logged.getvalue()
    w.clock.now += 300  # the dead entry runs out: the next message is tried
    assert not w.qm._defer_suspended(w.envelope("A3", "carol@nausch.org"), w.clock.now, POLICY)
    await w.qm.stop(1)


async def test_an_answering_destination_is_alive_again() -> None:
    outcome = {"o": REFUSED}
    w = World(lambda a: outcome["o"], POLICY)
    await w.attempt(w.envelope("A1", "alice@nausch.org"))
    assert w.qm.dead.listed("nausch.org")
    outcome["o"] = SENT
    w.qm.dead.entries["nausch.org"].until = 0  # as if minimal_backoff_time had passed
    await w.attempt(w.envelope("A2", "bob@nausch.org"))
    assert not w.qm.dead.listed("nausch.org")
    await w.qm.stop(1)


async def test_the_delay_notice_goes_once_and_is_persisted(logged: io.StringIO) -> None:
    w = World(lambda a: REFUSED, Policy(minimal_backoff=300, queue_lifetime=86400,
                                         delay_warning=3600))
    env = w.envelope("A1", "alice@nausch.org")
    await w.attempt(env)
    assert w.events == ["deliver A1 nausch.org", "update A1"]
    w.clock.now = T0 + 3600
    w.qm.dead.revive()
    await w.attempt(env)
    assert w.events[2:] == ["deliver A1 nausch.org", "delay-until-86400 A1 alice@nausch.org=4.4.1",
                            "update A1"]
    assert env.warned and "NA1" in w.qm.msgs
    w.clock.now += 600
    w.qm.dead.revive()
    await w.attempt(env)
    assert w.events[5:] == ["deliver A1 nausch.org", "update A1"]  # not again
    await w.qm.stop(1)


async def test_a_delay_notice_that_cannot_be_stored_is_tried_again() -> None:
    w = World(lambda a: REFUSED, Policy(minimal_backoff=300, delay_warning=3600))
    env = w.envelope("A1", "alice@nausch.org")
    w.clock.now = T0 + 3600
    w.bouncer.full = True
    await w.attempt(env)
    assert not env.warned
    w.bouncer.full = False
    w.qm.dead.revive()
    await w.attempt(env)
    assert env.warned
    await w.qm.stop(1)


async def test_attempts_feed_the_destination_health_but_notices_do_not() -> None:
    from backupmx.health import State

    answer = {"now": REFUSED}
    w = World(lambda a: answer["now"], POLICY)
    notice = Envelope(id="N1", sender="", recipients=[Recipient("s@sender.example")],
                      arrival=T0)
    w.qm.msgs["N1"] = notice
    await w.attempt(notice)
    assert w.qm.health.get("sender.example") is None
    env = w.envelope("A1", "alice@nausch.org")
    await w.attempt(env)
    assert w.qm.health.snapshot() == [("nausch.org", State.DOWN, T0)]
    w.clock.now += 60
    answer["now"] = SENT
    w.qm.flush()
    await w.attempt(env)
    dest = w.qm.health.get("nausch.org")
    assert dest is not None and (dest.state, dest.since, dest.last_ok) == (
        State.RECOVERING, T0 + 60, T0 + 60)


class Alerts:
    """The quarantine alert port, recording its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str], str]] = []

    def quarantined(self, queue_id: str, destination: str, recipients: list[str],
                    reply: Outcome) -> None:
        self.calls.append((queue_id, destination, recipients, reply.status))


async def test_hold_quarantines_and_alerts_without_a_notice(logged: io.StringIO) -> None:
    outcomes = {"ok@nausch.org": SENT, "gone@nausch.org": UNKNOWN}
    w = World(outcomes.__getitem__, POLICY)
    alerts = Alerts()
    w.qm.alert = alerts
    env = w.envelope("A1", *outcomes)
    counts = Counts("backupmx_delivery_results_total", "result", *RESULTS,
                    destination="nausch.org")
    await w.attempt(env)
    assert w.events == ["deliver A1 nausch.org", "update A1"]  # no notice, kept
    assert env.hold and [r.state for r in env.recipients] == [DELIVERED, HELD]
    assert alerts.calls == [("A1", "nausch.org", ["gone@nausch.org"], "5.1.1")]
    assert counts.delta() == {"delivered": 1, "held": 1}
    assert (f"A1: to=<gone@nausch.org>, relay=mx1.nausch.org[127.0.0.2]:25, delay=0, "
            f"dsn=5.1.1, status=held ({UNKNOWN.text})") in logged.getvalue()
    w.qm.flush()  # a flush does not touch held mail
    assert w.qm._heap == []


async def test_the_log_alert_says_the_message_is_quarantined(logged: io.StringIO) -> None:
    w = World(lambda a: UNKNOWN, POLICY)
    env = w.envelope("A1", "gone@nausch.org", "lost@nausch.org")
    await w.attempt(env)
    assert ("warning: A1: quarantined, no DSN sent: nausch.org refused <gone@nausch.org>, "
            f"<lost@nausch.org>: {UNKNOWN.text}; the message is on hold "
            "(queue release, bounce or delete A1)") in logged.getvalue()


async def test_release_tries_the_held_recipients_again() -> None:
    answers = [UNKNOWN, SENT]
    w = World(lambda a: answers.pop(0), POLICY)
    env = w.envelope("A1", "gone@nausch.org")
    await w.attempt(env)
    assert await w.qm.release("A1")
    assert not env.hold and w.qm._due(env, w.clock.now) == w.clock.now
    await w.attempt(env)
    assert w.events[2:] == ["release A1", "deliver A1 nausch.org", "remove A1"]
    assert env.recipients[0].state == DELIVERED and env.recipients[0].refusal is None


async def test_bounce_returns_the_primarys_reply_then_removes(logged: io.StringIO) -> None:
    w = World(lambda a: UNKNOWN, POLICY)
    env = w.envelope("A1", "gone@nausch.org")
    await w.attempt(env)
    assert not await w.qm.bounce("B9")  # no such message
    assert await w.qm.bounce("A1")
    assert w.events[2:] == ["notify A1 gone@nausch.org=5.1.1", "remove A1"]
    assert "NA1" in w.qm.msgs and "A1" not in w.qm.msgs
    assert (f"A1: to=<gone@nausch.org>, relay=mx1.nausch.org[127.0.0.2]:25, delay=0, "
            f"dsn=5.1.1, status=bounced ({UNKNOWN.text})") in logged.getvalue()


async def test_bounce_changes_nothing_while_the_notice_cannot_be_stored() -> None:
    w = World(lambda a: UNKNOWN, POLICY)
    env = w.envelope("A1", "gone@nausch.org")
    await w.attempt(env)
    w.bouncer.full = True
    with pytest.raises(SpoolError):
        await w.qm.bounce("A1")
    assert env.hold and env.recipients[0].state == HELD and "A1" in w.qm.msgs


async def test_bounce_releases_what_else_is_open() -> None:
    outcomes = {"gone@nausch.org": UNKNOWN, "later@nausch.org": REFUSED}
    w = World(outcomes.__getitem__, POLICY)
    env = w.envelope("A1", *outcomes)
    await w.attempt(env)
    assert await w.qm.bounce_all() == 1
    assert w.events[2:] == ["notify A1 gone@nausch.org=5.1.1", "update A1"]
    assert not env.hold and [r.state for r in env.recipients] == [BOUNCED, DEFERRED]
    assert await w.qm.bounce_all() == 0  # nothing quarantined any more


async def test_discard_drops_the_refused_recipients(logged: io.StringIO) -> None:
    w = World(lambda a: UNKNOWN, Policy(reject_action="discard"))
    env = w.envelope("A1", "gone@nausch.org")
    await w.attempt(env)
    assert w.events == ["deliver A1 nausch.org", "remove A1"]
    assert "dsn=5.1.1, status=discarded (host mx1.nausch.org" in logged.getvalue()
