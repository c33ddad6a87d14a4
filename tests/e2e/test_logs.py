"""Log lines in Postfix's format, read by fail2ban's postfix-based filter."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.e2e.util import Raw, message, send

SEED = """
smtpd_recipient_restrictions =
    permit_mynetworks,
    permit_mx_backup,
    reject_unauth_destination
"""
FILTER = Path(__file__).resolve().parents[2] / "contrib/fail2ban/filter.d/backupmx.conf"


def test_maillog_lines_look_like_syslog(backupmx_factory, primary):
    mx = backupmx_factory(SEED)
    send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    primary.wait_for(1)
    mx.wait_log(r"status=sent")
    mx.wait_log(r"disconnect from client\.example\.net")  # the worker writes its own lines
    lines = mx.log_text().splitlines()
    pat = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ backupmx/(\w+)\[\d+\]: .+$")
    assert all(pat.match(ln) for ln in lines), [ln for ln in lines if not pat.match(ln)][:3]
    text = "\n".join(lines)
    assert re.search(r"backupmx/smtpd\[\d+\]: connect from client\.example\.net\[127\.0\.0\.5\]",
                     text)
    assert re.search(
        r"backupmx/smtpd\[\d+\]: [0-9A-F]+: client=client\.example\.net\[127\.0\.0\.5\]", text
    )
    assert re.search(r"backupmx/qmgr\[\d+\]: [0-9A-F]+: from=<sender@sender\.example>, size=\d+, "
                     r"nrcpt=1 \(queue active\)", text)
    assert re.search(r"backupmx/smtpd\[\d+\]: disconnect from client\.example\.net\[127\.0\.0\.5\] "
                     r"ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", text)


def test_fail2ban_filter_finds_the_relay_abuser(backupmx_factory, primary, tmp_path):
    mx = backupmx_factory(SEED)
    for _ in range(3):
        send(mx, "spam@foreign.example", ["victim@foreign.example"])
    send(mx, "sender@sender.example", ["alice@nausch.org"], message())
    mx.wait_log(r"Relay access denied")
    confdir = tmp_path / "fail2ban"
    (confdir / "filter.d").mkdir(parents=True)
    for name in ("common.conf", "postfix.conf"):
        shutil.copy(Path("/etc/fail2ban/filter.d") / name, confdir / "filter.d" / name)
    shutil.copy(FILTER, confdir / "filter.d" / "backupmx.conf")
    res = subprocess.run(
        ["fail2ban-regex", "--config", str(confdir), "-v", str(mx.log_file), "backupmx"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"Failregex: (\d+) total", res.stdout)
    assert m and int(m.group(1)) == 3, res.stdout
    assert "127.0.0.5" in res.stdout


def test_start_line_names_the_version(backupmx_factory):
    mx = backupmx_factory(SEED)
    version = mx.cli("--version").stdout.split()[-1]  # "backupmx 1.2.3"
    mx.wait_log(r"backupmx/master\[\d+\]: daemon started -- version " + re.escape(version)
                + r", configuration " + re.escape(str(mx.config_file)) + "$")


def test_client_control_characters_never_reach_the_maillog(backupmx_factory):
    mx = backupmx_factory(SEED)
    c = Raw(mx)
    assert c.reply().startswith("220 ")
    assert c.cmd(b"HELO evil\x00\x1b[2J.example\r\n") == "250 mx1.tachtler.net"
    assert c.cmd(b'MAIL FROM:<"x\x1b]0;owned\x07"@sender.example>\r\n') == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<victim@foreign.example>") == (
        "554 5.7.1 <victim@foreign.example>: Relay access denied")
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    c.close()
    bad = Raw(mx)
    assert bad.reply().startswith("220 ")
    assert bad.cmd(b"\x1b[31m\x00BAD\r\n") == "221 2.7.0 Error: I can break rules, too. Goodbye."
    bad.close()
    mx.wait_log(r"non-SMTP command from client\.example\.net\[127\.0\.0\.5\]: \?\[31m\?BAD$")
    mx.wait_log(r"reject: RCPT from client\.example\.net\[127\.0\.0\.5\]: 554 5\.7\.1 "
                r"<victim@foreign\.example>: Relay access denied; "
                r"from=<x\?\]0;owned\?@sender\.example> to=<victim@foreign\.example> "
                r"proto=SMTP helo=<evil\?\?\[2J\.example>$")
    raw = mx.log_file.read_bytes()
    assert re.findall(rb"[\x00-\x09\x0b-\x1f\x7f]", raw) == []
