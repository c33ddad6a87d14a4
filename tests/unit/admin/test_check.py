"""`check` names admin settings that serve would not honour."""

from __future__ import annotations

from backupmx import cli


def test_check_warns_of_an_unknown_admin_group_and_an_open_token_file(tmp_path, capsys):
    token = tmp_path / "admin.token"
    token.write_text("x" * 40 + "\n")
    token.chmod(0o644)
    cf = tmp_path / "backupmx.cf"
    cf.write_text(f"queue_directory = {tmp_path}/spool\n"
                  "admin_group = no-such-group-here\n"
                  f"admin_token_file = {token}\n")
    assert cli.main(["-c", str(cf), "check"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"{cf}:2: warning: admin_group 'no-such-group-here' is no group of this system: " \
        "only root may change the queue" in err
    assert f"{cf}:3: warning: admin_token_file {token} may be read by others than its owner " \
        "(mode 0644): chmod 600 it: queue actions over admin_listen are refused" in err
