"""The status page in a real browser (Debian's chromium driven by Playwright): a queued
message shown, a login with the admin token, a confirmed flush delivering it, and forms
without their token refused.

``BACKUPMX_SCREENSHOT=docs/status-page.png`` keeps the logged-in page as docs/' picture.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.e2e.util import message, queue, send, strip_received, wait_queue
from tests.peers.backupmx import BackupMX

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
minimal_backoff_time = 300s
maximal_backoff_time = 600s
"""
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: where to keep the screenshot for docs/ (e.g. docs/status-page.png), when set
SCREENSHOT = os.environ.get("BACKUPMX_SCREENSHOT")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """A chromium with a fresh profile (no browser is downloaded: Debian's is used)."""
    profile = tmp_path / "chromium-profile"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def rows(page: Page) -> list[str]:
    return page.locator("#messages tr.message").evaluate_all(
        "rs => rs.map(r => r.dataset.id)")


def test_flush_from_the_page_delivers_the_queued_message(
        backupmx_factory, primary, tmp_path, browser):
    token = secrets.token_hex(32)
    token_file = tmp_path / "admin.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    primary.stop()
    mx: BackupMX = backupmx_factory(SEED + f"admin_token_file = {token_file}\n")
    content = message("page flush")
    qid = send(mx, "sender@sender.example", ["alice@nausch.org"], content).queue_id
    wait_queue(mx, lambda q: len(q) == 1 and q[0]["recipients"][0].get("last_reply"),
               timeout=60)
    denied = send(mx, "sender@sender.example", ["bob@elsewhere.example"])
    assert denied.rcpts[0][0] == 554 and denied.rcpts[0][1].startswith(b"5.7.1 ")
    base = f"http://127.0.0.3:{mx.admin_port}"

    page = browser.new_page()
    page.goto(base + "/")
    assert rows(page) == [qid]
    assert page.locator("#destinations").inner_text().count("nausch.org") >= 1
    assert page.locator("#messages button").count() == 0  # no action before a login
    cells = page.locator("#rejects tr").nth(1).locator("td").all_inner_texts()
    assert cells[:4] == ["RCPT", "reject_unauth_destination", "554 5.7.1", "1"]

    # a form POST without session or form token changes nothing
    refused = page.request.post(base + "/action", form={"op": "delete", "id": qid,
                                                        "confirm": "yes"})
    assert refused.status == 403
    page.fill("input[name=token]", "x" * 64)
    page.click("#login button")
    assert page.locator("#error").inner_text() == "wrong token"
    page.fill("input[name=token]", token)
    page.click("#login button")
    assert page.locator("#messages button", has_text="Delete").count() == 1
    # logged in, but a form without its token is still refused
    for form in ({"op": "delete", "id": qid, "confirm": "yes"},
                 {"op": "delete", "id": qid, "confirm": "yes", "csrf": "0" * 64}):
        assert page.request.post(base + "/action", form=form).status == 403
    assert [m["id"] for m in queue(mx)] == [qid]
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)

    primary.start()
    page.locator("button", has_text="Flush the whole queue").click()
    assert page.locator("#question").inner_text() == "Flush the whole queue?"
    page.click("#confirm")
    got = primary.wait_for(1, timeout=30)[0]
    assert (got.mail_from, got.rcpts) == ("sender@sender.example", ["alice@nausch.org"])
    assert strip_received(got.data)[1] == content
    deadline = time.monotonic() + 30
    while rows(page):
        assert time.monotonic() < deadline, "the delivered message stays on the page"
        time.sleep(0.2)
        page.reload()
    assert page.locator("#messages").inner_text().count("no message") == 1


def test_bounce_from_the_page_returns_a_quarantined_message(
        backupmx_factory, primary, sender_mx, tmp_path, browser):
    token = secrets.token_hex(32)
    token_file = tmp_path / "admin.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    primary.users = {"alice@nausch.org"}  # nobody@ gets 550 5.1.1: quarantined, on hold
    mx: BackupMX = backupmx_factory(SEED + f"admin_token_file = {token_file}\n")
    qid = send(mx, "sender@sender.example", ["nobody@nausch.org"], message("page q")).queue_id
    wait_queue(mx, lambda q: len(q) == 1 and q[0]["state"] == "hold", timeout=30)
    base = f"http://127.0.0.3:{mx.admin_port}"

    page = browser.new_page()
    page.goto(base + "/")
    row = page.locator(f"#messages tr.message[data-id='{qid}']")
    assert "quarantined: refused by the primary" in row.inner_text()
    assert "550 5.1.1 <nobody@nausch.org>" in row.inner_text()
    page.fill("input[name=token]", token)
    page.click("#login button")
    row.locator("button", has_text="Bounce").click()
    assert page.locator("#question").inner_text() == f"Bounce message {qid}?"
    assert sender_mx.messages == []
    page.click("#confirm")
    dsn = sender_mx.wait_for(1, timeout=30)[0]
    assert dsn.rcpts == ["sender@sender.example"]
    assert b"Final-Recipient: rfc822; nobody@nausch.org" in dsn.data
    wait_queue(mx, lambda q: q == [], timeout=30)
