"""The evaluation model of spec/restrictions.md §1.4, on compiled lists of fake steps."""

from __future__ import annotations

from typing import Any

import pytest

from backupmx.reply import Reply
from backupmx.restrictions.engine import (
    DUNNO_V,
    PERMIT_V,
    REJECT,
    Context,
    EvalState,
    RestrictionSyntaxError,
    RList,
    Step,
    Verdict,
    compile_list,
    evaluate,
)

R554 = Reply(554, "5.7.1", "<u@x>: Relay access denied")
R450 = Reply(450, "4.2.0", "<u@x>: Recipient address rejected: Greylisted")
R451 = Reply(450, "4.4.4", "<u@x>: Recipient address rejected: Unable to look up")


def step(kind: str, reply: Reply | None = None) -> Step:
    async def fn(ctx: Context, svc: Any, st: EvalState, arg: str | None) -> Verdict:
        if kind == "dip":
            assert reply
            st.set_defer_if_permit(reply)
            return DUNNO_V
        if kind == "dir":
            assert reply
            st.set_defer_if_reject(reply)
            return DUNNO_V
        if kind == "permit":
            return PERMIT_V
        if kind == "reject":
            return Verdict(REJECT, reply)
        if kind == "boom":
            raise RuntimeError("table exploded")
        return DUNNO_V

    return Step(kind, None, fn)


def rl(*steps: Step) -> RList:
    return RList("test", list(steps))


async def run(*lists: tuple[str, RList]) -> Reply | None:
    v = await evaluate(list(lists), Context(client_ip="192.0.2.1", recipient="u@x"), None)  # type: ignore[arg-type]
    return v.reply if v else None


async def test_empty_lists_accept():
    assert await run(("recipient", rl())) is None


async def test_defer_if_permit_turns_a_later_permit_into_its_450():
    assert await run(("recipient", rl(step("dip", R450), step("permit")))) == R450


async def test_a_later_5xx_wins_over_defer_if_permit():
    assert await run(("recipient", rl(step("dip", R450), step("reject", R554)))) == R554


async def test_defer_if_reject_turns_a_later_5xx_into_its_4xx():
    assert await run(("recipient", rl(step("dir", R451), step("reject", R554)))) == R451


async def test_defer_if_reject_is_irrelevant_when_nothing_rejects():
    assert await run(("recipient", rl(step("dir", R451), step("permit")))) is None


async def test_only_the_first_reason_is_kept():
    other = Reply(450, "4.1.1", "second")
    assert await run(("recipient", rl(step("dip", R450), step("dip", other)))) == R450


async def test_defer_if_reject_carries_from_relay_to_recipient_list_but_not_from_client():
    got = await run(("relay", rl(step("dir", R451))), ("recipient", rl(step("reject", R554))))
    assert got == R451
    got = await run(("client", rl(step("dir", R451))), ("recipient", rl(step("reject", R554))))
    assert got == R554


async def test_a_permit_in_one_list_does_not_skip_the_next():
    got = await run(("client", rl(step("permit"))), ("recipient", rl(step("reject", R554))))
    assert got == R554


async def test_a_broken_check_is_a_tempfail_never_a_permit():
    got = await run(("recipient", rl(step("boom"), step("permit"))))
    assert got == Reply(451, "4.3.0", "<u@x>: Temporary lookup failure")


def test_unknown_restriction_is_an_error():
    with pytest.raises(RestrictionSyntaxError, match='unknown restriction "permit_everyone"'):
        compile_list("smtpd_recipient_restrictions", ["permit_mynetworks", "permit_everyone"],
                     "recipient")


def test_restriction_names_are_case_insensitive():
    assert compile_list("x", ["PERMIT_MYNETWORKS", "Reject_Unauth_Destination"],
                        "recipient").names() == ["permit_mynetworks", "reject_unauth_destination"]
