"""The command line: thin, calls into the rooms.

Exit status: 0 success, 1 a failure the command reports, 2 bad usage or an
invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from backupmx import __version__, config, services

if TYPE_CHECKING:
    from backupmx.queue.store import Spool

DEFAULT_CONFIG = "/etc/backupmx/backupmx.cf"


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``-c FILE`` (or ``--config FILE``, ``-cFILE``, ``--config=FILE``) from anywhere."""
    path = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-c", "--config"):
            if i + 1 >= len(argv):
                raise SystemExit(_usage_error(f"{a} needs a file name"))
            path = argv[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a.startswith("-c") and len(a) > 2 and not a.startswith("--"):
            path = a[2:]
        else:
            rest.append(a)
        i += 1
    return path, rest


def _usage_error(msg: str) -> int:
    print(f"backupmx: {msg}", file=sys.stderr)
    return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backupmx",
        description="Store-and-forward backup MX mail server. Every command takes -c FILE.",
    )
    p.add_argument("--version", action="store_true", help="print the version")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("serve", help="run the server in the foreground")
    sub.add_parser("check", help="validate the configuration")
    q = sub.add_parser("queue", help="list and act on the mail queue")
    qs = q.add_subparsers(dest="qcmd")
    ql = qs.add_parser("list", help="the queue, like mailq")
    ql.add_argument("--json", action="store_true")
    qsh = qs.add_parser("show", help="one message: envelope, headers, history")
    qsh.add_argument("id")
    qsh.add_argument("--json", action="store_true")
    qf = qs.add_parser("flush", help="attempt delivery now (of one domain)")
    qf.add_argument("domain", nargs="?")
    qf.add_argument("--wait", action="store_true", help="return when the attempts have ended")
    for name, helptext in (
        ("delete", "delete a message (ID or ALL)"),
        ("hold", "put a message on hold"),
        ("release", "release a message from hold"),
        ("bounce", "return a quarantined message to its sender now (ID or ALL)"),
    ):
        x = qs.add_parser(name, help=helptext)
        x.add_argument("id")
    st = sub.add_parser("status", help="each destination's state and its queue")
    st.add_argument("--json", action="store_true")
    st.add_argument("--cluster", action="store_true",
                    help="every node that publishes to cluster_store instead")
    sub.add_parser("demo", help="a walk-through of an outage on loopback")
    ex = sub.add_parser("explain", help="evaluate the restrictions for one transaction")
    ex.add_argument("--client", required=True, help="client IP address")
    ex.add_argument("--helo", help="HELO/EHLO name (none: no HELO was sent)")
    ex.add_argument("--sender", required=True, help="MAIL FROM address; <> for the null sender")
    ex.add_argument("--recipient", required=True, help="RCPT TO address")
    vf = sub.add_parser("verify", help="the address-verification cache entry of an address")
    vf.add_argument("address")
    vf.add_argument("--probe", action="store_true", help="probe the primary now")
    vf.add_argument("--json", action="store_true")
    ps = sub.add_parser("policy-server", help="serve built-in greylisting over the Postfix "
                        "policy protocol (for check_policy_service in Postfix)")
    ps.add_argument("--listen", default="inet:127.0.0.1:10023",
                    help="inet:HOST:PORT or unix:PATH (default inet:127.0.0.1:10023)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path, rest = split_config(argv)
    except SystemExit as e:
        return int(e.code or 2)
    p = parser()
    try:
        args = p.parse_args(rest)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    if args.version:
        print(f"backupmx {__version__}")
        return 0
    if args.cmd is None:
        p.print_help(sys.stderr)
        return 2
    if args.cmd == "demo":
        from backupmx import demo

        return demo.run()
    cfg_path = path or os.environ.get("BACKUPMX_CONFIG") or DEFAULT_CONFIG
    try:
        cfg = config.load(cfg_path)
        svc = services.build(cfg)
    except config.ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    if args.cmd == "check":
        for w in list(cfg.warnings) + services.warnings(svc):
            print(str(w), file=sys.stderr)
        from backupmx.verify import catchall  # what the running server found, if one runs

        for line in catchall.check_warnings(_admin(cfg, "GET", "/status", timeout=10)):
            print(line, file=sys.stderr)
        print(f"{cfg_path}: configuration OK")
        return 0
    if args.cmd == "explain":
        from backupmx import explain, standby

        if cfg.bool(standby.PARAM):  # decide with the running server's knowledge
            standby.learn(_admin(cfg, "GET", "/status", timeout=10))
        return explain.run(svc, args.client, args.helo, args.sender, args.recipient)
    if args.cmd == "serve":
        from backupmx import server

        return server.run(cfg)
    if args.cmd == "policy-server":
        from backupmx import server
        from backupmx.policy import server as policy_server

        server.configure_logging(cfg)
        return policy_server.run(cfg, args.listen)
    if args.cmd == "verify":
        return verify_command(svc, args)
    if args.cmd == "status":
        return status_command(cfg, args)
    if args.cmd == "queue":
        if args.qcmd is None:
            print("backupmx: queue needs a command: list, show, flush, delete, hold, release, "
                  "bounce", file=sys.stderr)
            return 2
        return queue_command(cfg, args)
    return 2


# --- queue commands ------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the server's Unix socket, where it learns who we are."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _admin(cfg: config.Config, method: str, path: str, timeout: float = 600) -> Any | None:
    """Ask the running server over its admin socket; None when no server answers there."""
    from backupmx import adminauth

    conn = _UnixHTTPConnection(adminauth.socket_path(cfg), timeout)
    try:
        conn.request(method, path)
        return json.loads(conn.getresponse().read() or b"null")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _denied(what: str) -> int:
    print(f"backupmx: {what}: permission denied", file=sys.stderr)
    return 1


async def _on_files(cfg: config.Config, spool: Spool, q: str, qid: str) -> bool:
    """delete, hold, release or bounce straight in the spool, when no server answers."""
    if q == "bounce":  # logged where the server logs: a result line per recipient
        from backupmx.qmgr import quarantine
        from backupmx.smtpd.host import configure_logging

        configure_logging(cfg)
        return await quarantine.bounce_on_files(spool, lambda: cfg, qid)
    if q == "delete" and qid == "ALL":
        await spool.delete_all()
        return True
    if q == "delete":
        return await spool.delete(qid)
    return await spool.set_hold(qid, q == "hold")


def queue_command(cfg: config.Config, args: argparse.Namespace) -> int:
    from backupmx.queue.store import SpoolError

    try:
        return _queue_command(cfg, args)
    except SpoolError as e:  # no server answers and the spool is not ours to open
        print(f"backupmx: queue {args.qcmd}: {e}", file=sys.stderr)
        return 1


def _queue_command(cfg: config.Config, args: argparse.Namespace) -> int:
    from backupmx import adminauth
    from backupmx.queue import listing
    from backupmx.queue.store import Spool

    q = args.qcmd
    if q == "list":
        data = _admin(cfg, "GET", "/queue")
        if data is None:
            spool = Spool(cfg.str("queue_directory"))
            spool.open()
            try:
                envs = sorted(spool.envelopes(), key=lambda e: e.arrival)
            finally:
                spool.close()
            data = listing.as_json(envs)
            active: set[str] = set()
        else:
            envs = [listing.from_json(d) for d in data]
            active = {d["id"] for d in data if d["state"] == "active"}
        if args.json:
            print(json.dumps(data, indent=1))
        else:
            sys.stdout.write(listing.mailq_text(envs, time.time(), active=active))
        return 0
    if q == "show":
        res = _admin(cfg, "GET", f"/queue/{args.id}")
        if res is not None:
            if not res.get("ok"):
                print(f"backupmx: {args.id}: no such message", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(res["json"], indent=1))
            else:
                sys.stdout.write(res["text"])
            return 0
        spool = Spool(cfg.str("queue_directory"))
        spool.open()
        try:
            env = spool.envelope(args.id)
            if env is None:
                print(f"backupmx: {args.id}: no such message", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(listing.as_json([env])[0], indent=1))
            else:
                sys.stdout.write(listing.show_text(env, spool.content(args.id)))
        finally:
            spool.close()
        return 0
    if q == "flush":
        target = "/queue/flush?" + "&".join(
            x for x in (f"domain={args.domain}" if args.domain else "",
                        "wait=1" if args.wait else "") if x
        )
        res = _admin(cfg, "POST", target)
        if res is None:
            from backupmx import oneshot

            return oneshot.flush(cfg, args.domain)
        return 0
    res = _admin(cfg, "POST", f"/queue/{q}?id={args.id}")
    if res is None:
        if adminauth.caller_level(cfg) < adminauth.Level.CHANGE:
            return _denied(f"queue {q}")  # before the spool is touched
        spool = Spool(cfg.str("queue_directory"))
        spool.open()
        try:
            ok = asyncio.run(_on_files(cfg, spool, q, args.id))
        finally:
            spool.close()
        what = "quarantined message" if q == "bounce" else "message"
        res = {"ok": ok, "error": f"{args.id}: no such {what}"}
    if res.get("denied"):
        return _denied(f"queue {q}")
    if not res.get("ok"):
        print(f"backupmx: {res.get('error')}", file=sys.stderr)
        return 1
    return 0


# --- status --------------------------------------------------------------------


def status_command(cfg: config.Config, args: argparse.Namespace) -> int:
    """The running server's view; without one, the queue from the spool, states unknown
    (exit 1: the command could not learn them)."""
    from backupmx import standby, status
    from backupmx.queue.store import Spool, SpoolError

    if args.cluster:
        return cluster_status(cfg, args.json)
    data = _admin(cfg, "GET", "/status", timeout=30)
    if data is None:
        spool = Spool(cfg.str("queue_directory"))
        try:
            spool.open()
            envs = spool.envelopes()
        except SpoolError as e:
            print(f"backupmx: status: {e}", file=sys.stderr)
            return 1
        finally:
            spool.close()
        data = status.report(None, envs, cfg.time("standby_health_expire_time"),
                             cfg.bool(standby.PARAM))
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        sys.stdout.write(status.text(data))
    return 0 if data["states_known"] else 1


def cluster_status(cfg: config.Config, as_json: bool) -> int:
    """The records of the nodes in cluster_store, read from that Redis (no server asked:
    it answers also when this node is down)."""
    from backupmx.cluster import PARAM, registry
    from backupmx.redisstore import Link, StoreUnavailable, parse_url

    if not cfg.str(PARAM):
        print(f"backupmx: status --cluster: {PARAM} is not set: this node is alone",
              file=sys.stderr)
        return 1
    url = parse_url(cfg.str(PARAM))
    link = Link(url)
    try:
        records = registry.nodes(link)
    except StoreUnavailable as e:
        print(f"backupmx: status --cluster: {e}", file=sys.stderr)
        return 1
    finally:
        link.close()
    if as_json:
        print(json.dumps({"store": str(url), "nodes": records}, indent=1))
    else:
        sys.stdout.write(registry.text(str(url), records))
    return 0


# --- verify --------------------------------------------------------------------


def verify_command(svc: services.Services, args: argparse.Namespace) -> int:
    """Ask the running server; without one, read (or, with --probe, update) the cache file."""
    from urllib.parse import quote

    from backupmx.verify import report
    from backupmx.verify.cache import Store
    from backupmx.verify.decide import Timing

    cfg = svc.cfg
    address = args.address
    d = _admin(cfg, "GET", f"/verify?address={quote(address, safe='')}"
               + ("&probe=1" if args.probe else ""))
    if d is None and args.probe:
        import asyncio

        async def probe() -> dict[str, Any]:
            v = svc.verifier
            v.open()
            try:
                entry = await v.probe_now(address, svc.resolve(address).address, svc)
            finally:
                await v.close()
            return report.describe(address, entry, Timing.from_cfg(cfg), time.time())

        d = asyncio.run(probe())
    elif d is None:
        store = Store(svc.verifier.store.path, readonly=True)
        try:
            store.open()
            entry = store.get(address)
        except Exception:
            entry = None  # no cache file yet
        finally:
            store.close()
        d = report.describe(address, entry, Timing.from_cfg(cfg), time.time())
    if "error" in d:
        print(f"backupmx: {d['error']}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        sys.stdout.write(report.text(d))
    return 0 if d["status"] != "unknown" else 1
