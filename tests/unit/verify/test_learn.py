"""What a delivery's RCPT replies teach the verify cache."""

from __future__ import annotations

from pathlib import Path

from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, Recipient
from backupmx.outcome import Outcome, Stage
from backupmx.verify import learn
from backupmx.verify.decide import BOUNCE, OK, PROBE_TTL, Entry, worth_learning
from tests.unit.counts import Counts
from tests.unit.verify.kit import build

RELAY = "mx1.nausch.org[127.0.0.2]:25"
VERIFYING = "smtpd_recipient_restrictions = reject_unverified_recipient, permit_mx_backup, " \
            "reject_unauth_destination\n"
SENT = Outcome(DELIVERED, "2.0.0", "250 2.0.0 Ok: queued", Stage.RECIPIENT, RELAY, rcpt=250)
REFUSED = Outcome(BOUNCED, "5.1.1", "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 no "
                  "(in reply to RCPT TO command)", Stage.RECIPIENT, RELAY, rcpt=550)


LEARNED = ("deliverable", "undeliverable", "failed")


def test_a_2xx_or_5xx_to_rcpt_is_a_lesson_anything_else_is_not() -> None:
    assert learn.lesson(SENT) == OK
    assert learn.lesson(REFUSED) == BOUNCE
    # accepted at RCPT, refused at the end of DATA: RCPT still said the user exists
    data_refused = Outcome(BOUNCED, "5.7.1", "said: 554 (in reply to end of DATA command)",
                           Stage.RECIPIENT, RELAY, rcpt=250)
    assert learn.lesson(data_refused) == OK
    assert learn.lesson(Outcome(DEFERRED, "4.1.1", "said: 450", Stage.RECIPIENT, RELAY,
                                rcpt=450)) is None
    assert learn.lesson(Outcome(DEFERRED, "4.4.1", "refused", Stage.CONNECT)) is None
    assert learn.lesson(Outcome(DELIVERED, "2.0.0", "discarded", Stage.TRANSPORT)) is None


def test_a_fresh_deliverable_record_is_not_rewritten() -> None:
    fresh = Entry(OK, 0.0, 1000.0, "250 2.1.5 Ok")
    assert not worth_learning(fresh, OK, 1000.0 + PROBE_TTL - 1)
    assert worth_learning(fresh, OK, 1000.0 + PROBE_TTL + 1)
    assert worth_learning(fresh, BOUNCE, 1001.0)
    assert worth_learning(None, OK, 1.0)


def test_delivery_results_refresh_the_cache_when_verification_is_used(tmp_path: Path) -> None:
    svc, prober = build(VERIFYING, tmp_path)
    counts = Counts("backupmx_verify_learned_total", "result", *LEARNED)
    learn.from_delivery(svc, [Recipient("carol@nausch.org"), Recipient("nobody@nausch.org")],
                        [SENT, REFUSED])
    carol, nobody = svc.verifier.entry("carol@nausch.org"), svc.verifier.entry(
        "nobody@nausch.org")
    assert carol is not None and carol.status == OK
    assert carol.text == f"{RELAY} accepted the recipient in a delivery"
    assert nobody is not None and nobody.status == BOUNCE and nobody.text == REFUSED.text
    assert counts.delta() == {"deliverable": 1, "undeliverable": 1}
    assert prober.calls == []


def test_a_fresh_deliverable_record_wins_over_a_delivery_refusal(tmp_path: Path) -> None:
    svc, _ = build(VERIFYING, tmp_path)
    learn.from_delivery(svc, [Recipient("alice@nausch.org")], [SENT])
    learn.from_delivery(svc, [Recipient("alice@nausch.org")], [REFUSED])
    entry = svc.verifier.entry("alice@nausch.org")
    assert entry is not None and entry.status == OK  # the optimism of a probe's update


def test_nothing_is_learned_without_verification_or_on_another_route(tmp_path: Path) -> None:
    counts = Counts("backupmx_verify_learned_total", "result", *LEARNED)
    svc, _ = build("", tmp_path)
    learn.from_delivery(svc, [Recipient("carol@nausch.org")], [SENT])
    assert svc.verifier.entry("carol@nausch.org") is None
    svc, _ = build(VERIFYING + "address_verify_relayhost = [probe.example]\n", tmp_path)
    learn.from_delivery(svc, [Recipient("carol@nausch.org")], [SENT])
    assert svc.verifier.entry("carol@nausch.org") is None
    assert counts.delta() == {}
