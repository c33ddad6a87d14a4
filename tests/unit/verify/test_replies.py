"""reject_unverified_* replies (spec/address-verification.md §5), relay scope, unlisted check."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupmx.restrictions.engine import Context, EvalState, evaluate
from backupmx.restrictions.verify import relay_keys, verify_reply
from backupmx.verify import catchall
from backupmx.verify.decide import BOUNCE, DEFER, OK, TODO
from backupmx.verify.probe import ProbeResult
from backupmx.verify.service import IN_PROGRESS, Answer
from tests.unit.verify.kit import build

R = "nobody@nausch.org"
SAID = ("host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 <nobody@nausch.org>: Recipient address "
        "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)")


def ctx(rcpt: str = R, sender: str = "s@sender.example") -> Context:
    return Context(client_ip="192.0.2.7", client_name="mail.client.example", helo="h.example",
                   sender=sender, recipient=rcpt)


def line(answer: Answer, reject: int = 577, defer: int = 450, reason: str = "",
         kind: str = "recipient") -> str | None:
    detail = "1.7" if kind == "sender" else "1.1"
    r = verify_reply(ctx(), kind, answer, reject, defer, reason, detail)
    return None if r is None else r.line()


def test_undeliverable_with_577() -> None:
    assert line(Answer(BOUNCE, SAID)) == (
        f"577 5.1.1 <{R}>: Recipient address rejected: undeliverable address: {SAID}")


def test_undeliverable_with_the_default_450_is_only_unverified() -> None:
    assert line(Answer(BOUNCE, SAID), reject=450) == (
        f"450 4.1.1 <{R}>: Recipient address rejected: unverified address: {SAID}")


def test_in_progress_and_deferred() -> None:
    assert line(Answer(TODO, IN_PROGRESS)) == (
        f"450 4.1.1 <{R}>: Recipient address rejected: unverified address: "
        "Address verification in progress")
    assert line(Answer(DEFER, "connect to x[1.2.3.4]:25: Connection refused"), defer=421) == (
        f"421 4.1.1 <{R}>: Recipient address rejected: unverified address: "
        "connect to x[1.2.3.4]:25: Connection refused")


def test_ok_and_2xx_codes_pass() -> None:
    assert line(Answer(OK, "250 ok")) is None
    assert line(Answer(BOUNCE, SAID), reject=250) is None


def test_reject_reason_replaces_the_text_and_4xx_reasons_are_cut() -> None:
    assert line(Answer(BOUNCE, SAID), reason="no such user") == (
        f"577 5.1.1 <{R}>: Recipient address rejected: undeliverable address: no such user")
    long = "x" * 400
    got = line(Answer(DEFER, long))
    assert got == f"450 4.1.1 <{R}>: Recipient address rejected: unverified address: {'x' * 250}"


def test_sender_replies_use_x17() -> None:
    r = verify_reply(ctx(), "sender", Answer(BOUNCE, "550 no"), 550, 450, "", "1.7")
    assert r is not None
    assert r.line() == ("550 5.1.7 <s@sender.example>: Sender address rejected: "
                        "undeliverable address: 550 no")


def test_relay_recipient_keys() -> None:
    assert relay_keys("Alice+Tag@Nausch.org", "+") == [
        "alice+tag@nausch.org", "alice@nausch.org", "@nausch.org"]
    assert relay_keys("bob@nausch.org", "") == ["bob@nausch.org", "@nausch.org"]


LIST = "smtpd_recipient_restrictions = reject_unverified_recipient, reject_unauth_destination\n"


async def rcpt(text: str, tmp_path: Path, rcpt: str, answers: dict[str, ProbeResult]
               ) -> tuple[str, list[str]]:
    svc, prober = build(text, tmp_path)
    prober.answers.update(answers)
    v = await evaluate(svc.rcpt_lists(), ctx(rcpt), svc, EvalState())
    return ("250 ok" if v is None or v.reply is None else v.reply.line()), prober.calls


async def test_foreign_recipients_are_not_probed(tmp_path: Path) -> None:
    got, calls = await rcpt(LIST, tmp_path, "x@foreign.example", {})
    assert got == "554 5.7.1 <x@foreign.example>: Relay access denied"
    assert calls == []


async def test_relay_domain_recipients_are_probed(tmp_path: Path) -> None:
    got, calls = await rcpt(LIST + "unverified_recipient_reject_code = 577\n", tmp_path, R,
                            {R: ProbeResult(BOUNCE, SAID, "5.1.1")})
    assert got == f"577 5.1.1 <{R}>: Recipient address rejected: undeliverable address: {SAID}"
    assert [c for c in calls if not c.startswith(catchall.PREFIX)] == [R]  # and its domain's


async def test_deferred_answers_are_defer_if_permit(tmp_path: Path) -> None:
    down = {R: ProbeResult(DEFER, "connect to x[1.2.3.4]:25: Connection refused", "4.4.1")}
    got, _ = await rcpt(LIST.replace("reject_unauth_destination", "reject"), tmp_path, R, down)
    assert got == "554 5.7.1 <nobody@nausch.org>: Recipient address rejected: Access denied"
    got, _ = await rcpt(LIST, tmp_path / "2", R, down)
    assert got == (f"450 4.1.1 <{R}>: Recipient address rejected: unverified address: "
                   "connect to x[1.2.3.4]:25: Connection refused")


async def test_tempfail_action_defer_rejects_at_once(tmp_path: Path) -> None:
    down = {R: ProbeResult(DEFER, "refused", "4.4.1")}
    got, _ = await rcpt(LIST.replace("reject_unauth_destination", "reject")
                        + "unverified_recipient_tempfail_action = defer\n", tmp_path, R, down)
    assert got == f"450 4.1.1 <{R}>: Recipient address rejected: unverified address: refused"


async def test_local_recipients_are_not_probed(tmp_path: Path) -> None:
    _, calls = await rcpt(LIST, tmp_path, "someone@mx1.tachtler.net", {})
    assert calls == []


UNLISTED = ("relay_recipient_maps = inline:{ alice@nausch.org=x }\n"
            "smtpd_recipient_restrictions = reject_unlisted_recipient, reject_unauth_destination\n")


@pytest.mark.parametrize(("address", "want"), [
    ("alice@nausch.org", "250 ok"),
    ("bob@nausch.org", "550 5.1.1 <bob@nausch.org>: Recipient address rejected: "
                       "User unknown in relay recipient table"),
    ("x@foreign.example", "554 5.7.1 <x@foreign.example>: Relay access denied"),
])
async def test_reject_unlisted_recipient(tmp_path: Path, address: str, want: str) -> None:
    got, _ = await rcpt(UNLISTED, tmp_path, address, {})
    assert got == want


async def test_unlisted_without_the_table_name(tmp_path: Path) -> None:
    got, _ = await rcpt(UNLISTED + "show_user_unknown_table_name = no\n"
                        "unknown_relay_recipient_reject_code = 551\n", tmp_path,
                        "bob@nausch.org", {})
    assert got == "551 5.1.1 <bob@nausch.org>: Recipient address rejected: User unknown"
