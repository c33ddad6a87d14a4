"""Give up root after binding the ports: run as ``mail_owner``, own the spool.

``serve`` started as root binds port 25 first, then hands the queue and data
directories (and the log file) to the mail owner and switches user and group
for good, so a flaw in the SMTP code cannot reach beyond that account.  Files
are created 0600 and directories 0700 from then on (umask 077).  Started as
another user, nothing changes: that user already is unprivileged.
"""

from __future__ import annotations

import os
import pwd

from backupmx.config import Config
from backupmx.log import log


class PrivilegeError(Exception):
    """The switch to the mail owner is impossible; serving as root is not an option."""


def _chown_tree(path: str, uid: int, gid: int) -> None:
    """Give ``path`` and everything below it to uid:gid, without following links."""
    if not os.path.lexists(path):
        return
    os.chown(path, uid, gid, follow_symlinks=False)
    if not os.path.isdir(path) or os.path.islink(path):
        return
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def drop(cfg: Config) -> str | None:
    """As root: switch to mail_owner; the account name, or None when not root.

    A mail_owner that does not exist is logged and the server stays root
    (there is no safe account to switch to); one with uid 0 is refused.
    """
    os.umask(0o077)
    if os.geteuid() != 0:
        return None
    owner = cfg.str("mail_owner")
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        log.warning("master", f"mail_owner {owner!r} is no user of this system: "
                    "running as root; create the account or set mail_owner")
        return None
    if pw.pw_uid == 0:
        raise PrivilegeError(f"mail_owner {owner!r} has uid 0; it must be unprivileged")
    for path in (cfg.str("queue_directory"), cfg.str("data_directory")):
        if path:
            os.makedirs(path, mode=0o700, exist_ok=True)
            _chown_tree(path, pw.pw_uid, pw.pw_gid)
    logfile = cfg.str("maillog_file")
    if logfile and logfile not in ("-", "/dev/stdout", "/dev/stderr") and os.path.isfile(logfile):
        os.chown(logfile, pw.pw_uid, pw.pw_gid)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PrivilegeError("still root after setuid")
    log.info("master", f"running as {owner} (uid {pw.pw_uid}, gid {pw.pw_gid})")
    return owner
