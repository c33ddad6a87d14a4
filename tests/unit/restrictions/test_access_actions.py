"""Access maps: key order, every access(5) action and the §4.1 reply-code rules."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from backupmx.cleanup.actions import MessageActions
from backupmx.config import ConfigError
from backupmx.log import log
from backupmx.restrictions.access import (
    MAX_DEPTH,
    about,
    action_log,
    interpret_action,
)
from backupmx.restrictions.engine import EvalState, evaluate
from tests.unit.restrictions.spamkit import build, ctx, rcpt


def table(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def one(tmp_path: Path, check: str, entries: str, after: str = "", **kw: object) -> str:
    spec = table(tmp_path, "map", entries)
    svc = build(f"smtpd_recipient_restrictions = {check} hash:{spec} {after}\n", tmp_path)
    return await rcpt(svc, ctx(**kw))


async def test_client_name_is_tried_before_its_address(tmp_path: Path) -> None:
    entries = "192.0.2.7 OK\nclient.example REJECT\n"
    assert await one(tmp_path, "check_client_access", entries) == (
        "554 5.7.1 <mail.client.example[192.0.2.7]>: Client host rejected: Access denied")


async def test_client_network_prefix_matches(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_client_access", "192.0.2 REJECT no\n",
                     client_name="unknown") == (
        "554 5.7.1 <unknown[192.0.2.7]>: Client host rejected: no")


async def test_helo_parent_domain_and_class(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_helo_access", "client.example 550 go away\n") == (
        "550 5.7.1 <mail.client.example>: Helo command rejected: go away")


async def test_helo_map_is_skipped_without_helo(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_helo_access", "unknown REJECT\n", helo=None) == "250 ok"


async def test_sender_dsn_is_corrected_to_a_sender_code(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_sender_access", "sender.example REJECT 5.1.1 no such\n") \
        == "554 5.1.7 <alice@sender.example>: Sender address rejected: no such"


async def test_recipient_dsn_correction_and_forced_class_digit(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_recipient_access", "bob@ 550 4.1.8 gone\n") == (
        "550 5.1.2 <bob@nausch.org>: Recipient address rejected: gone")


async def test_client_address_detail_becomes_x00(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_client_access", "192.0.2.7 REJECT 5.1.1 odd\n") == (
        "554 5.0.0 <mail.client.example[192.0.2.7]>: Client host rejected: odd")


async def test_null_sender_uses_the_null_key(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_sender_access", "<> REJECT no bounces\n", sender="") == (
        "554 5.7.1 <>: Sender address rejected: no bounces")


@pytest.mark.parametrize("value", ["OK", "RELAY", "1234567890", "550", "ok trailing text"])
async def test_permit_values_stop_the_list(tmp_path: Path, value: str) -> None:
    assert await one(tmp_path, "check_recipient_access", f"bob@nausch.org {value}\n",
                     "reject") == "250 ok"


async def test_defer_uses_the_defer_code(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_recipient_access", "nausch.org DEFER\n") == (
        "450 4.7.1 <bob@nausch.org>: Recipient address rejected: Access denied")


async def test_defer_if_permit_turns_a_later_permit_into_450(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_sender_access", "alice@ DEFER_IF_PERMIT\n", "permit") == (
        "450 4.7.1 <alice@sender.example>: Sender address rejected: Service unavailable")


async def test_defer_if_reject_turns_a_later_reject_into_450(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_sender_access", "alice@ DEFER_IF_REJECT try later\n",
                     "reject") == (
        "450 4.7.1 <alice@sender.example>: Sender address rejected: try later")


async def test_bad_reply_code_becomes_450_service_unavailable(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_recipient_access", "bob@ 250 fine\n") == (
        "450 4.7.1 Service unavailable")


async def test_421_disconnects(tmp_path: Path) -> None:
    spec = table(tmp_path, "map", "192.0.2.7 421 bye now\n")
    svc = build(f"smtpd_recipient_restrictions = check_client_access hash:{spec}\n", tmp_path)
    v = await evaluate([("recipient", svc.lists["recipient"])], ctx(), svc, EvalState())
    assert v is not None and v.reply is not None and v.disconnect is True
    assert v.reply.line() == (
        "421 4.7.1 <mail.client.example[192.0.2.7]>: Client host rejected: bye now")


async def test_dunno_stops_the_search_of_that_table(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_recipient_access",
                     "bob@nausch.org DUNNO\nnausch.org REJECT\n") == "250 ok"


async def test_warn_continues(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_recipient_access", "bob@ WARN look\n", "reject") == (
        "554 5.7.1 <bob@nausch.org>: Recipient address rejected: Access denied")


async def test_hold_prepend_redirect_bcc_are_recorded(tmp_path: Path) -> None:
    a = table(tmp_path, "a", "bob@ HOLD\n")
    b = table(tmp_path, "b", "bob@ PREPEND X-Test: yes\n")
    c = table(tmp_path, "c", "bob@ REDIRECT spam@tachtler.net\n")
    d = table(tmp_path, "d", "bob@ BCC copy@tachtler.net\n")
    e = table(tmp_path, "e", "bob@ PREPEND not a header\n")
    svc = build("smtpd_recipient_restrictions = " + " ".join(
        f"check_recipient_access hash:{x}" for x in (a, b, c, d, e)) + "\n", tmp_path)
    st = EvalState()
    assert await rcpt(svc, ctx(), st) == "250 ok"
    assert st.actions == MessageActions(
        hold=True, prepend=("X-Test: yes",), redirect="spam@tachtler.net",
        bcc=("copy@tachtler.net",))


async def test_discard_permits_and_skips_later_lists(tmp_path: Path) -> None:
    spec = table(tmp_path, "map", "192.0.2.7 DISCARD\n")
    svc = build(f"smtpd_client_restrictions = check_client_access hash:{spec}\n"
                "smtpd_recipient_restrictions = reject\n", tmp_path)
    st = EvalState()
    lists = [("client", svc.lists["client"]), ("recipient", svc.lists["recipient"])]
    assert await evaluate(lists, ctx(), svc, st) is None
    assert st.actions.discard is True


async def test_filter_is_a_configuration_error(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_recipient_access", "bob@ FILTER smtp:[127.0.0.1]:10025\n") \
        == "451 4.3.5 Server configuration error"


async def test_restriction_list_value_runs_under_the_map_class(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_sender_access",
                     "sender.example permit_mynetworks, reject\n") == (
        "554 5.7.1 <alice@sender.example>: Sender address rejected: Access denied")


@pytest.mark.parametrize("value", ["reject_nonsense", "check_client_access hash:/etc/x"])
async def test_bad_restriction_values_are_configuration_errors(tmp_path: Path, value: str) -> None:
    assert await one(tmp_path, "check_recipient_access", f"bob@ {value}\n") == (
        "451 4.3.5 Server configuration error")


async def test_nesting_is_limited(tmp_path: Path) -> None:
    svc = build("", tmp_path)
    st = EvalState(depth=MAX_DEPTH)
    v = await interpret_action("permit", ctx(), svc, st, "test", "recipient")
    assert v.reply is not None and v.reply.line() == "451 4.3.5 Server configuration error"


async def test_routed_recipient_ok_is_downgraded(tmp_path: Path) -> None:
    assert await one(tmp_path, "check_recipient_access", "nausch.org OK\n", "reject",
                     recipient="x%foreign.example@nausch.org") == (
        "554 5.7.1 <x%foreign.example@nausch.org>: Recipient address rejected: Access denied")


async def test_bare_table_is_an_access_map_of_the_list_kind(tmp_path: Path) -> None:
    spec = table(tmp_path, "map", "bob@nausch.org REJECT bare\n")
    svc = build(f"smtpd_recipient_restrictions = hash:{spec}\n", tmp_path)
    assert await rcpt(svc, ctx()) == (
        "554 5.7.1 <bob@nausch.org>: Recipient address rejected: bare")


def test_missing_table_is_a_config_error_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build("\nsmtpd_recipient_restrictions = check_recipient_access hash:/nonexistent/x\n",
              tmp_path)
    assert f"{tmp_path}/backupmx.cf:8: smtpd_recipient_restrictions: check_recipient_access " \
        "hash:/nonexistent/x: hash:/nonexistent/x: cannot open /nonexistent/x" in str(e.value)


def test_broken_pattern_table_names_its_file_and_line(tmp_path: Path) -> None:
    spec = table(tmp_path, "re", "/ok/ OK\n/bad(/ REJECT\n")
    with pytest.raises(ConfigError) as e:
        build(f"smtpd_recipient_restrictions = check_recipient_access regexp:{spec}\n", tmp_path)
    assert f"{spec}:2: bad regular expression /bad(/" in str(e.value)


async def test_broken_table_at_run_time_is_a_tempfail(tmp_path: Path) -> None:
    spec = table(tmp_path, "dup", "a@x.example OK\na@x.example REJECT\n")
    svc = build(f"smtpd_recipient_restrictions = check_recipient_access texthash:{spec}\n",
                tmp_path)
    assert await rcpt(svc, ctx()) == "451 4.3.0 <bob@nausch.org>: Temporary lookup failure"


async def test_changed_table_file_is_reloaded(tmp_path: Path) -> None:
    spec = table(tmp_path, "map", "bob@ REJECT first\n")
    svc = build(f"smtpd_recipient_restrictions = check_recipient_access hash:{spec}\n", tmp_path)
    assert await rcpt(svc, ctx()) == (
        "554 5.7.1 <bob@nausch.org>: Recipient address rejected: first")
    Path(spec).write_text("bob@ REJECT second, a longer text\n")
    os.utime(spec, ns=(1, 1))
    assert svc.maps.reload_changed() == []
    assert await rcpt(svc, ctx()) == (
        "554 5.7.1 <bob@nausch.org>: Recipient address rejected: second, a longer text")


async def test_trace_shows_each_key_and_value(tmp_path: Path) -> None:
    spec = table(tmp_path, "map", "nausch.org OK\n")
    svc = build(f"smtpd_recipient_restrictions = check_recipient_access hash:{spec}\n", tmp_path)
    st = EvalState(trace=[])
    await evaluate([("recipient", svc.lists["recipient"])], ctx(), svc, st)
    assert st.trace == [
        f"smtpd_recipient_restrictions: check_recipient_access hash:{spec}",
        f"    hash:{spec} 'bob@nausch.org': -",
        f"    hash:{spec} 'nausch.org': OK",
        "    => permit",
    ]


async def test_unknown_name_counts_only_when_evaluation_reaches_it(tmp_path: Path) -> None:
    entries = "bob@ permit_mynetworks, no_such_restriction\n"
    assert await one(tmp_path, "check_recipient_access", entries, "reject",
                     client_ip="127.0.0.1") == "250 ok"
    assert await one(tmp_path, "check_recipient_access", entries, "reject") == (
        "451 4.3.5 Server configuration error")


async def test_a_521_turned_into_the_defer_if_reject_450_does_not_disconnect(
        tmp_path: Path) -> None:
    a = table(tmp_path, "a", "alice@ DEFER_IF_REJECT\n")
    b = table(tmp_path, "b", "bob@ 521 go away\n")
    svc = build(f"smtpd_recipient_restrictions = check_sender_access hash:{a}"
                f" check_recipient_access hash:{b}\n", tmp_path)
    v = await evaluate([("recipient", svc.lists["recipient"])], ctx(), svc, EvalState())
    assert v is not None and v.reply is not None and v.disconnect is False
    assert v.reply.line() == (
        "450 4.7.1 <alice@sender.example>: Sender address rejected: Service unavailable")


async def test_defer_if_permit_uses_the_defer_code(tmp_path: Path) -> None:
    spec = table(tmp_path, "map", "alice@ DEFER_IF_PERMIT\n")
    svc = build(f"access_map_defer_code = 451\nsmtpd_recipient_restrictions = "
                f"check_sender_access hash:{spec} permit\n", tmp_path)
    assert await rcpt(svc, ctx()) == (
        "451 4.7.1 <alice@sender.example>: Sender address rejected: Service unavailable")


def test_action_log_lines_name_the_class_as_postfix_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    logged = io.StringIO()
    monkeypatch.setattr(log, "stderr", logged)
    c = ctx(state="RCPT")
    action_log(c, "hold", about(c, "sender", "spam check"))
    action_log(c, "warn", "look at this")
    lines = [line.split(": ", 1)[1] for line in logged.getvalue().splitlines()]
    assert lines == [
        "NOQUEUE: hold: RCPT from mail.client.example[192.0.2.7]: <alice@sender.example>: "
        "Sender address spam check; from=<alice@sender.example> to=<bob@nausch.org> "
        "proto=SMTP helo=<mail.client.example>",
        "NOQUEUE: warn: RCPT from mail.client.example[192.0.2.7]: look at this; "
        "from=<alice@sender.example> to=<bob@nausch.org> proto=SMTP helo=<mail.client.example>",
    ]
