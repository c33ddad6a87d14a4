"""The queue manager's decisions over plain data and a given time."""

from __future__ import annotations

import pytest

from backupmx.config import parse
from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, DISCARDED, HELD, Envelope, Recipient
from backupmx.outcome import Outcome, Stage
from backupmx.qmgr import core
from backupmx.qmgr.core import Policy

T0 = 1_700_000_000.0
POLICY = Policy(minimal_backoff=300, maximal_backoff=4000, queue_lifetime=5 * 86400,
                bounce_lifetime=86400, concurrency=2)
#: primary_reject_action = bounce: the primary's 5xx is returned to the sender, as Postfix does
BOUNCE = Policy(minimal_backoff=300, maximal_backoff=4000, queue_lifetime=5 * 86400,
                bounce_lifetime=86400, concurrency=2, reject_action="bounce")
REFUSED = Outcome(DEFERRED, "4.4.1", "connect to mx1.nausch.org[127.0.0.2]:25: Connection "
                  "refused", Stage.CONNECT)
LOST = Outcome(DEFERRED, "4.4.2", "lost connection with mx1.nausch.org[127.0.0.2] while "
               "sending end of data", Stage.SESSION, "mx1.nausch.org[127.0.0.2]:25")
UNKNOWN = Outcome(BOUNCED, "5.1.1", "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 unknown "
                  "(in reply to RCPT TO command)", Stage.RECIPIENT,
                  "mx1.nausch.org[127.0.0.2]:25", "smtp; 550 5.1.1 unknown", replied=True)
SENT = Outcome(DELIVERED, "2.0.0", "250 2.0.0 Ok", Stage.RECIPIENT, "mx1.nausch.org[127.0.0.2]:25")


def envelope(*addrs: str, sender: str = "s@sender.example", arrival: float = T0) -> Envelope:
    return Envelope(id="A1", sender=sender, recipients=[Recipient(a) for a in addrs],
                    arrival=arrival, client="mail.sender.example[192.0.2.1]")


@pytest.mark.parametrize(("age", "delay"), [(0, 300), (299, 300), (1000, 1000), (3999, 3999),
                                            (4000, 4000), (90000, 4000)])
def test_backoff_is_the_time_in_queue_clamped(age: float, delay: float) -> None:
    assert core.backoff(T0 + age, T0, 300, 4000) == delay


def test_record_schedules_deferred_recipients_by_backoff() -> None:
    env = envelope("a@nausch.org", "b@nausch.org")
    now = T0 + 1000
    verdict = core.settle(env, [(env.recipients[0], REFUSED), (env.recipients[1], SENT)], now,
                          POLICY)
    core.record(env, verdict, now, POLICY)
    a, b = env.recipients
    assert (a.state, a.next_attempt, a.attempts, a.last_reply) == (
        DEFERRED, now + 1000, 1, REFUSED.text)
    assert (b.state, b.next_attempt) == (DELIVERED, None)
    assert core.due(env, now) == now + 1000
    assert [h["relay"] for h in env.history] == ["none", "mx1.nausch.org[127.0.0.2]:25"]
    assert verdict.failures == [] and not verdict.expired and verdict.attempted


def test_due_is_the_earliest_recipient_or_a_notice_to_retry() -> None:
    env = envelope("a@nausch.org", "b@nausch.org")
    env.recipients[0].next_attempt = T0 + 50
    env.recipients[1].next_attempt = T0 + 10
    assert core.due(env, T0) == T0 + 10
    assert core.due(env, T0, notice_due=T0 + 5) == T0 + 5
    env.recipients[0].state = env.recipients[1].state = BOUNCED
    assert core.due(env, T0) == T0  # nothing open: due now (to be removed)
    assert core.due(env, T0, notice_due=T0 + 300) == T0 + 300


def test_a_deferral_after_the_lifetime_bounces_with_its_own_status() -> None:
    env = envelope("a@nausch.org")
    now = T0 + 5 * 86400
    verdict = core.settle(env, [(env.recipients[0], REFUSED)], now, POLICY)
    [(rcpt, o)] = verdict.results
    assert (o.kind, o.status, o.text) == (BOUNCED, "4.4.1", REFUSED.text)
    assert verdict.expired and verdict.failures == [(rcpt, o)]
    core.record(env, verdict, now, POLICY)
    assert env.done and env.recipients[0].next_attempt is None


def test_a_bounce_expires_after_bounce_queue_lifetime() -> None:
    env = envelope("a@nausch.org", sender="")
    assert not core.settle(env, [(env.recipients[0], REFUSED)], T0 + 86399, POLICY).expired
    assert core.settle(env, [(env.recipients[0], REFUSED)], T0 + 86400, POLICY).expired


def test_soft_bounce_turns_a_bounce_into_a_4xx_deferral() -> None:
    env = envelope("a@nausch.org", "b@nausch.org")
    soft = Policy(soft_bounce=True)
    route = Outcome(BOUNCED, "5.1.0", "nullmx.example does not accept mail (nullMX)", Stage.ROUTE)
    verdict = core.settle(env, [(env.recipients[0], UNKNOWN), (env.recipients[1], route)], T0,
                          soft)
    assert [(o.kind, o.status, o.text) for _, o in verdict.results] == [
        (DEFERRED, "4.1.1", UNKNOWN.text), (DEFERRED, "4.1.0", route.text)]
    assert verdict.failures == []
    sent = core.settle(env, [(env.recipients[0], SENT)], T0, soft).results[0][1]
    assert sent == SENT


def test_without_soft_bounce_a_5xx_is_a_failure_to_report() -> None:
    env = envelope("a@nausch.org")
    verdict = core.settle(env, [(env.recipients[0], UNKNOWN)], T0, BOUNCE)
    assert verdict.failures == [(env.recipients[0], UNKNOWN)]


def test_the_message_leaves_only_once_its_notice_is_durable() -> None:
    env = envelope("a@nausch.org")
    verdict = core.settle(env, [(env.recipients[0], UNKNOWN)], T0, BOUNCE)
    core.record(env, verdict, T0, BOUNCE)
    assert env.done
    assert not core.leaves_queue(env, dsn_pending=True)
    assert core.leaves_queue(env, dsn_pending=False)


def test_a_destination_is_dead_when_nobody_answers() -> None:
    dead = core.DeadDestinations()
    assert dead.judge("nausch.org", [REFUSED, REFUSED], T0, POLICY)
    assert dead.reason("nausch.org", T0 + 299) == REFUSED.text
    assert dead.reason("nausch.org", T0 + 300) is None  # for minimal_backoff_time only
    assert dead.listed("nausch.org")
    assert not dead.judge("nausch.org", [REFUSED, SENT], T0 + 1, POLICY)
    assert not dead.listed("nausch.org")


@pytest.mark.parametrize("outcome", [LOST, UNKNOWN, core.suspended("x")])
def test_a_server_that_answered_does_not_make_a_destination_dead(outcome: Outcome) -> None:
    dead = core.DeadDestinations()
    assert not dead.judge("nausch.org", [outcome], T0, POLICY)
    assert not dead.judge("nausch.org", [], T0, POLICY)


def test_mail_for_dead_destinations_only_is_suspended_without_an_attempt() -> None:
    dead = core.DeadDestinations()
    dead.judge("nausch.org", [REFUSED], T0, POLICY)
    env = envelope("a@nausch.org", "b@nausch.org")
    results = dead.suspend(env, T0 + 1, POLICY)
    assert results is not None
    assert [(r.address, o.kind, o.status, o.stage) for r, o in results] == [
        ("a@nausch.org", DEFERRED, "4.4.1", Stage.SUSPENDED),
        ("b@nausch.org", DEFERRED, "4.4.1", Stage.SUSPENDED)]
    assert results[0][1].text == f"delivery temporarily suspended: {REFUSED.text}"
    verdict = core.settle(env, results, T0 + 1, POLICY)
    assert not verdict.attempted  # nothing to persist
    assert dead.suspend(envelope("a@nausch.org", "c@other.example"), T0 + 1, POLICY) is None
    assert dead.suspend(env, T0 + 301, POLICY) is None  # the entry has run out
    expiring = envelope("a@nausch.org", arrival=T0 + 1 - 5 * 86400)
    assert dead.suspend(expiring, T0 + 1, POLICY) is None  # expiry needs the attempt
    dead.revive("nausch.org")
    assert dead.suspend(env, T0 + 1, POLICY) is None


def test_due_mail_parks_behind_a_full_destination() -> None:
    slots = core.Slots()
    bound = POLICY.start_bound
    assert bound == 4
    for i in range(bound):
        assert not slots.park(f"m{i}", {"nausch.org"}, bound)
        slots.start({"nausch.org"})
    assert slots.park("p1", {"nausch.org"}, bound)
    assert slots.park("p2", {"nausch.org", "other.example"}, bound)
    assert not slots.park("o1", {"other.example"}, bound)
    assert slots.unpark("nausch.org", bound, dead=False) == []  # still full
    slots.finish({"nausch.org"})
    assert slots.unpark("nausch.org", bound, dead=False) == ["p1"]
    assert slots.unpark("nausch.org", bound, dead=True) == ["p2"]  # dead: all of it
    assert slots.parked == {}
    for _ in range(bound - 1):
        slots.finish({"nausch.org"})
    assert slots.started == {}


def test_a_delay_notice_is_due_once_after_delay_warning_time() -> None:
    policy = Policy(delay_warning=4 * 3600)
    env = envelope("a@nausch.org", "b@nausch.org", "c@nausch.org")
    env.recipients[1].notify = "FAILURE"
    env.recipients[2].notify = "DELAY,FAILURE"
    results = [(r, REFUSED) for r in env.recipients]
    early = core.settle(env, results, T0 + 4 * 3600 - 1, policy)
    assert core.delayed(env, early, T0 + 4 * 3600 - 1, policy) == []
    late = core.settle(env, results, T0 + 4 * 3600, policy)
    assert [r.address for r, _ in core.delayed(env, late, T0 + 4 * 3600, policy)] == [
        "a@nausch.org", "c@nausch.org"]
    env.warned = True
    assert core.delayed(env, late, T0 + 4 * 3600, policy) == []
    assert not Policy().warning_due(envelope("a@nausch.org"), T0 + 86400 * 4)  # 0: off
    assert not policy.warning_due(envelope("a@nausch.org", sender=""), T0 + 86400)


def test_mail_due_a_delay_notice_is_not_suspended() -> None:
    policy = Policy(minimal_backoff=300, delay_warning=3600)
    dead = core.DeadDestinations()
    dead.judge("nausch.org", [REFUSED], T0 + 3600, policy)
    env = envelope("a@nausch.org")
    assert dead.suspend(env, T0 + 3601, policy) is None
    env.warned = True
    assert dead.suspend(env, T0 + 3601, policy) is not None


# --- primary_reject_action -------------------------------------------------------------
MAIL_REFUSED = Outcome(BOUNCED, "5.7.1", "host mx1.nausch.org[127.0.0.2] said: 554 5.7.1 no "
                       "(in reply to MAIL FROM command)", Stage.SESSION,
                       "mx1.nausch.org[127.0.0.2]:25", "smtp; 554 5.7.1 no", replied=True)
TOO_BIG = Outcome(BOUNCED, "5.3.4", "message size 900 exceeds size limit 100 of server "
                  "mx1.nausch.org[127.0.0.2]", Stage.SESSION, "mx1.nausch.org[127.0.0.2]:25")
NULL_MX = Outcome(BOUNCED, "5.1.0", "nullmx.example does not accept mail (nullMX)", Stage.ROUTE)


def test_hold_quarantines_the_primarys_5xx_without_a_notice() -> None:
    env = envelope("gone@nausch.org", "ok@nausch.org")
    gone, ok = env.recipients
    verdict = core.settle(env, [(gone, UNKNOWN), (ok, SENT)], T0, POLICY)
    [(r, o), _] = verdict.results
    assert (o.kind, o.status, o.text, o.relay) == (HELD, "5.1.1", UNKNOWN.text, UNKNOWN.relay)
    assert verdict.failures == [] and verdict.held == [(gone, o)]
    core.record(env, verdict, T0, POLICY)
    assert env.hold and not env.done
    assert (gone.state, gone.next_attempt, gone.last_reply) == (HELD, None, UNKNOWN.text)
    assert core.quarantined(env) == [gone]
    assert env.history[0]["result"] == HELD
    # What is kept is what the DSN reports when the administrator bounces it.
    assert core.refused_outcome(gone) == UNKNOWN


def test_a_refused_mail_from_is_quarantined_for_every_recipient() -> None:
    env = envelope("a@nausch.org", "b@nausch.org")
    verdict = core.settle(env, [(r, MAIL_REFUSED) for r in env.recipients], T0, POLICY)
    assert [o.kind for _, o in verdict.results] == [HELD, HELD]
    core.record(env, verdict, T0, POLICY)
    assert core.refused_outcome(env.recipients[1]) == MAIL_REFUSED


def test_discard_drops_the_refused_recipients_without_a_notice() -> None:
    env = envelope("gone@nausch.org")
    policy = Policy(reject_action="discard")
    verdict = core.settle(env, [(env.recipients[0], UNKNOWN)], T0, policy)
    assert [o.kind for _, o in verdict.results] == [DISCARDED]
    assert verdict.failures == [] and verdict.held == []
    core.record(env, verdict, T0, policy)
    assert env.done and not env.hold and env.recipients[0].refusal is None


@pytest.mark.parametrize("action", ["hold", "bounce", "discard"])
def test_bounces_decided_here_keep_their_notice(action: str) -> None:
    env = envelope("a@nausch.org", "b@nullmx.example")
    policy = Policy(reject_action=action)
    verdict = core.settle(env, [(env.recipients[0], TOO_BIG), (env.recipients[1], NULL_MX)], T0,
                          policy)
    assert [o for _, o in verdict.failures] == [TOO_BIG, NULL_MX]
    assert verdict.held == []


def test_a_notice_of_our_own_is_never_quarantined() -> None:
    notice = Envelope(id="N1", sender="", recipients=[Recipient("s@sender.example")],
                      arrival=T0)
    verdict = core.settle(notice, [(notice.recipients[0], UNKNOWN)], T0, POLICY)
    assert [o for _, o in verdict.failures] == [UNKNOWN] and verdict.held == []


def test_expiry_still_bounces_under_hold() -> None:
    env = envelope("a@nausch.org")
    verdict = core.settle(env, [(env.recipients[0], REFUSED)], T0 + 5 * 86400, POLICY)
    assert [o.kind for _, o in verdict.failures] == [BOUNCED] and verdict.held == []


def test_soft_bounce_defers_the_primarys_5xx_before_any_quarantine() -> None:
    env = envelope("a@nausch.org")
    verdict = core.settle(env, [(env.recipients[0], UNKNOWN)], T0, Policy(soft_bounce=True))
    assert [(o.kind, o.status) for _, o in verdict.results] == [(DEFERRED, "4.1.1")]
    assert verdict.held == []


def test_a_released_quarantine_is_due_at_once() -> None:
    env = envelope("gone@nausch.org", "later@nausch.org")
    gone, later = env.recipients
    verdict = core.settle(env, [(gone, UNKNOWN), (later, REFUSED)], T0, POLICY)
    core.record(env, verdict, T0, POLICY)
    assert later.next_attempt == T0 + 300
    assert core.due(env, T0 + 1) == T0 + 1  # the held recipient has no next attempt: now


def test_the_parameter_reaches_the_policy() -> None:
    assert Policy.from_config(parse("")).reject_action == "hold"
    assert Policy.from_config(
        parse("primary_reject_action = discard\n")).reject_action == "discard"
