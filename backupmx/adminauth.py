"""Who may do what through the admin endpoint: reading, asking for work, changing the queue.

As with Postfix's tools, anyone on the host may read the queue (``mailq``) and ask for
work (``postqueue -f``, a verification probe), while changing it (``postsuper``:
delete, hold, release, bounce) is for root, the account the server runs as (which owns
the spool files anyway) and the members of ``admin_group``.  Over the Unix socket the
kernel names the peer (SO_PEERCRED), and its groups are looked up in the group database
at each request, so adding or removing a member takes effect at once.  Over TCP no peer
is known: a bearer token from a file only root reads stands for an administrator, and
without it HTTP may only read.  The token is a secret key, so that the status page's
form tokens can later be derived from it (HMAC) without a second secret.
"""

from __future__ import annotations

import enum
import grp
import hmac
import os
import pwd
import socket
import stat
import struct
from collections.abc import Collection, Mapping

from backupmx.config import Config

#: the shortest token accepted: 32 characters, e.g. ``openssl rand -hex 32`` gives 64
MIN_TOKEN_LENGTH = 32
#: what follows from a token file that cannot be used
NO_TOKEN = "queue actions over admin_listen are refused"


class Level(enum.IntEnum):
    """What a request needs, and what a caller may: each level includes those below."""

    READ = 0  # health, metrics, the queue listing, a verify cache entry
    OPERATE = 1  # flush, a verification probe: work the server would do anyway
    CHANGE = 2  # delete, hold, release, bounce


def required(method: str, path: str, query: Mapping[str, object]) -> Level:
    """The level a request needs.

    A GET only reads (the one exception, a probe, is named here); any other request
    needs CHANGE unless it is flush, so an action added later is refused to all but
    the admins until it is classified.
    """
    if method == "GET":
        return Level.OPERATE if path == "/verify" and query.get("probe") else Level.READ
    if method == "POST" and path == "/queue/flush":
        return Level.OPERATE
    return Level.CHANGE


def may_change(uid: int, gid: int, groups: Collection[int], admin_gid: int | None,
               owner_uid: int | None) -> bool:
    """Root, the owner of the queue, or a member of admin_group (primary or supplementary)."""
    if uid == 0 or uid == owner_uid:
        return True
    return admin_gid is not None and (gid == admin_gid or admin_gid in groups)


def admin_gid(cfg: Config) -> int | None:
    """The gid of admin_group now, or None when it is empty or names no group."""
    name = cfg.str("admin_group")
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def group_problem(cfg: Config) -> str | None:
    """Why admin_group admits no one, when it names a group this system does not have."""
    name = cfg.str("admin_group")
    if name and admin_gid(cfg) is None:
        return f"admin_group {name!r} is no group of this system: only root may change the queue"
    return None


def groups_of(uid: int, gid: int) -> list[int]:
    """The groups of the account ``uid`` in the group database, ``gid`` included."""
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:  # a uid without an account: only the group it runs with
        return [gid]


def local_level(cfg: Config, uid: int, gid: int, owner_uid: int | None) -> Level:
    """What a local user may do: CHANGE for root and admin_group, else OPERATE."""
    if may_change(uid, gid, groups_of(uid, gid), admin_gid(cfg), owner_uid):
        return Level.CHANGE
    return Level.OPERATE


def caller_level(cfg: Config) -> Level:
    """This process's level, for the CLI acting on the spool when no server answers."""
    try:
        owner: int | None = os.stat(cfg.str("queue_directory")).st_uid
    except OSError:
        owner = None
    return local_level(cfg, os.getuid(), os.getgid(), owner)


def peer_ids(sock: socket.socket) -> tuple[int, int]:
    """The uid and gid of the process at the other end of a Unix socket."""
    fmt = "3i"  # struct ucred: pid, uid, gid
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    _, uid, gid = struct.unpack(fmt, data)
    return uid, gid


def socket_path(cfg: Config) -> str:
    """The admin socket, in the queue directory's public/ as Postfix's public services."""
    return os.path.join(cfg.str("queue_directory"), "public", "admin.sock")


def read_token(path: str) -> tuple[str | None, str | None]:
    """``(token, None)`` from the file at ``path``, or ``(None, why it is refused)``.

    A file that its group or others may read is refused: the token would not be a
    secret of root's.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        return None, f"cannot read admin_token_file {path}: {e.strerror}"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, f"admin_token_file {path} is not a regular file"
        if st.st_mode & 0o077:
            return None, (f"admin_token_file {path} may be read by others than its owner "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 it")
        token = f.read().decode("utf-8", "replace").strip()
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        return None, (f"admin_token_file {path} must hold one word of at least "
                      f"{MIN_TOKEN_LENGTH} characters")
    return token, None


def bearer_ok(authorization: str, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer TOKEN``, compared in constant time."""
    scheme, _, given = authorization.strip().partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
