"""`backupmx check` and SIGHUP reload."""

from __future__ import annotations

import subprocess
import time

from tests.e2e.util import connect, message, send
from tests.peers.backupmx import command


def check(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "main.cf"
    f.write_text(text)
    return subprocess.run([*command(), "check", "-c", str(f)], capture_output=True, text=True)


def test_check_accepts_the_example_config():
    res = subprocess.run([*command(), "-c", "examples/backupmx.cf", "check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "examples/backupmx.cf: configuration OK\n"


def test_unknown_parameter_names_file_line_and_closest_name(tmp_path):
    res = check(tmp_path, "myhostname = mx.example\n# comment\nrelay_domain = nausch.org\n")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f'{tmp_path}/main.cf:3: unknown parameter "relay_domain"; did you mean "relay_domains"?'
    )


def test_bad_value_names_file_line(tmp_path):
    res = check(tmp_path, "myhostname = mx.example\nmessage_size_limit = lots\n")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f'{tmp_path}/main.cf:2: bad value "lots" for parameter message_size_limit: '
        "expected a size in bytes (digits only, 0 or more)"
    )


def test_unknown_restriction_names_file_line(tmp_path):
    res = check(
        tmp_path,
        "# the seed's list with a typo\n"
        "smtpd_recipient_restrictions = permit_mynetworks,\n"
        "    reject_unauth_destinaton\n",
    )
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"{tmp_path}/main.cf:2: smtpd_recipient_restrictions: unknown restriction "
        '"reject_unauth_destinaton"'
    )


def test_open_relay_configuration_is_refused(tmp_path):
    res = check(tmp_path, "smtpd_relay_restrictions = permit\nsmtpd_recipient_restrictions = "
                          "permit_mynetworks\n")
    assert res.returncode == 2
    assert f"{tmp_path}/main.cf:1: in parameter smtpd_relay_restrictions or " in res.stderr
    serve = subprocess.run([*command(), "-c", str(tmp_path / "main.cf"), "serve"],
                           capture_output=True, text=True, timeout=30)
    assert serve.returncode == 2
    assert "specify at least one working instance" in serve.stderr


def test_check_says_that_smtpd_delay_reject_no_is_not_supported(tmp_path):
    res = check(tmp_path, "smtpd_recipient_restrictions = reject_unauth_destination\n"
                          "smtpd_delay_reject = no\n")
    assert res.returncode == 0
    assert (f"{tmp_path}/main.cf:2: warning: smtpd_delay_reject = no is not supported: the "
            "client, HELO and sender restrictions are applied at each RCPT TO, as with yes"
            in res.stderr), res.stderr
    res = check(tmp_path, "smtpd_recipient_restrictions = reject_unauth_destination\n")
    assert "smtpd_delay_reject" not in res.stderr


def test_check_names_each_parameter_that_is_not_supported(tmp_path):
    res = check(tmp_path, "smtpd_recipient_restrictions = reject_unauth_destination\n"
                          "notify_classes = resource, software, bounce\n"
                          "delay_warning_time = 4h\n"  # supported: no warning
                          "inet_interfaces = 192.0.2.1\n"
                          "permit_mx_backup_networks = 192.0.2.0/24\n")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        f"{tmp_path}/main.cf:2: warning: notify_classes is not supported: no notices are sent "
        "to postmaster; problems are logged",
        f"{tmp_path}/main.cf:4: warning: inet_interfaces = 192.0.2.1 is not supported: "
        "backupmx listens on smtpd_listen, and those addresses (with proxy_interfaces) are "
        "the addresses of this host",
    ]
    assert res.stdout == f"{tmp_path}/main.cf: configuration OK\n"


def test_serve_logs_what_check_warns_of(backupmx_factory):
    mx = backupmx_factory("notify_classes = resource, software\n")
    n = next(i for i, text in enumerate(mx.config_text.splitlines(), 1)
             if text.startswith("notify_classes"))
    line = mx.wait_log(r"master\[\d+\]: warning: .*notify_classes.*$").group(0)
    assert line.endswith(f"master[{mx.proc.pid}]: warning: {mx.config_file}:{n}: "
                         "notify_classes is not supported: no notices are sent to postmaster; "
                         "problems are logged")


def test_check_is_quiet_about_the_values_backupmx_has(tmp_path):
    """A Postfix main.cf says inet_interfaces = all; that is what backupmx does anyway."""
    res = check(tmp_path, "smtpd_recipient_restrictions = reject_unauth_destination\n"
                          "inet_interfaces = all\ninet_protocols = all\n"
                          "delay_warning_time = 0\nlocal_recipient_maps =\n"
                          "permit_mx_backup_networks = 192.0.2.0/24\n")
    assert res.returncode == 0
    assert res.stderr == ""


def test_check_warns_about_mx_backup_without_networks(tmp_path):
    res = check(tmp_path, "smtpd_recipient_restrictions = permit_mx_backup, "
                          "reject_unauth_destination\n")
    assert res.returncode == 0
    assert "permit_mx_backup is in effect without permit_mx_backup_networks" in res.stderr


def test_sighup_picks_up_relay_domains(backupmx_factory, primary):
    mx = backupmx_factory("smtpd_recipient_restrictions = permit_mynetworks, "
                          "permit_mx_backup, reject_unauth_destination\n")
    before = send(mx, "sender@sender.example", ["x@foreign.example"])
    assert before.rcpt_line() == "554 5.7.1 <x@foreign.example>: Relay access denied"
    # hold one session open across the reload: it must survive
    s = connect(mx)
    mx.config_file.write_text(mx.config_file.read_text() + "relay_domains = foreign.example\n")
    mx.sighup()
    mx.wait_log(r"reload -- configuration")
    after = send(mx, "sender@sender.example", ["x@foreign.example"])
    assert after.rcpts == [(250, b"2.1.5 Ok")]
    assert s.noop() == (250, b"2.0.0 Ok")
    s.quit()


def test_broken_reload_keeps_the_old_configuration(backupmx_factory, primary):
    mx = backupmx_factory("smtpd_recipient_restrictions = permit_mynetworks, "
                          "permit_mx_backup, reject_unauth_destination\n")
    good = mx.config_file.read_text()
    mx.config_file.write_text(good + "relay_domains = foreign.example\nbogus_param = 1\n")
    mx.sighup()
    line = mx.wait_log(r"warning: reload failed, keeping the running configuration: .*").group(0)
    assert 'unknown parameter "bogus_param"' in line
    time.sleep(0.2)
    out = send(mx, "sender@sender.example", ["x@foreign.example", "alice@nausch.org"], message())
    assert out.rcpt_line(0) == "554 5.7.1 <x@foreign.example>: Relay access denied"
    assert out.rcpts[1] == (250, b"2.1.5 Ok")
