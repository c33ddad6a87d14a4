"""``make bench``: backupmx beside a private Postfix, same machine, same job.

Both are configured as the same backup MX (relay_domains = nausch.org, the same
restriction list, relayhost = the primary) and driven by Postfix's own
smtp-source; smtp-sink plays the primary. Every figure is the median of
``--runs`` runs; the result is the ratio backupmx/Postfix of the same run.
Figures go to bench/results.json and the table in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.backupmx_target import BackupMX  # noqa: E402
from bench.postfix import Postfix  # noqa: E402
from bench.procs import cpu_seconds  # noqa: E402
from bench.tlssource import Job  # noqa: E402
from bench.tlssource import run as tls_source  # noqa: E402
from tests.peers.unbound import Unbound  # noqa: E402

RESTRICTIONS = ("reject_non_fqdn_sender, reject_non_fqdn_recipient, permit_mynetworks, "
                "reject_unauth_destination")
HOSTS = {"postfix": "127.0.0.20", "backupmx": "127.0.0.22"}
PRIMARY = "127.0.0.21"
SIZE = 4096
SENDER = "sender@sender.example"
RCPT = "alice@nausch.org"


class Target(Protocol):
    host: str
    port: int

    def setup(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def flush(self) -> None: ...
    def clear_queue(self) -> None: ...
    def queue_size(self) -> int: ...
    def pids(self) -> list[int]: ...


def free_port(hosts: list[str]) -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port")


def wait_banner(host: str, port: int, timeout: float = 60) -> float:
    """Seconds until the server greets with 220."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if s.makefile("rb").readline().startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{host}:{port} gave no banner in {timeout} s")


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def source(t: Target, count: int, sessions: int, rcpts: int = 1, reuse: bool = False) -> float:
    """Run smtp-source; seconds until every message got its reply."""
    args = ["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(SIZE),
            "-f", SENDER, "-t", RCPT, "-r", str(rcpts), "-M", "client.example.net"]
    if reuse:
        args.append("-d")
    t0 = time.monotonic()
    subprocess.run([*args, f"{t.host}:{t.port}"], check=True, capture_output=True, timeout=1800)
    return time.monotonic() - t0


def sink(port: int, count: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["smtp-sink", "-u", "postfix", "-M", str(count),
                             f"{PRIMARY}:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection((PRIMARY, port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def wait_queue(t: Target, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while t.queue_size() < n and time.monotonic() < deadline:
        time.sleep(0.5)


# --- the measurements ------------------------------------------------------------


Measured = tuple[float, float]  # messages/s, and the server's CPU ms per message


def accept_down(t: Target, n: int, sessions: int, rcpts: int = 1) -> Measured:
    """Messages/s accepted durably while the primary is down."""
    t.clear_queue()
    cpu = cpu_seconds(t.pids())
    rate = n / source(t, n, sessions, rcpts)
    return rate, (cpu_seconds(t.pids()) - cpu) / n * 1000


def accept_tls(t: Target, n: int, sessions: int, client: dict[str, float]) -> Measured:
    """Messages/s accepted over STARTTLS while the primary is down; the client's own CPU
    (share of one core) goes into ``client``."""
    t.clear_queue()
    cpu = cpu_seconds(t.pids())
    got = tls_source(Job(t.host, t.port, n, sessions, SIZE, SENDER, RCPT,
                         "client.example.net"), os.cpu_count() or 1)
    if got.failed:
        raise RuntimeError(f"{got.failed} STARTTLS sessions failed against {t.host}")
    key = f"accept_tls:{sessions}"
    client[key] = max(client.get(key, 0.0), got.client_cpu_s / got.seconds)
    return got.rate, (cpu_seconds(t.pids()) - cpu) / n * 1000


def certificate(d: Path) -> tuple[Path, Path]:
    """One self-signed ECDSA P-256 certificate, the kind certbot issues by default, for
    both servers."""
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "30", "-subj", "/CN=mx1.tachtler.net"],
                   check=True, capture_output=True, timeout=60)
    key.chmod(0o644)  # Postfix's smtpd reads it too; a benchmark's throwaway key
    return cert, key


def relay(t: Target, port: int, n: int, sessions: int) -> Measured:
    """Messages/s from the first connection until the sink has them all."""
    t.clear_queue()
    s = sink(port, n)
    t.flush()  # forget that the primary was down in the last run (dead-destination cache)
    time.sleep(1)
    cpu = cpu_seconds(t.pids())
    t0 = time.monotonic()
    source(t, n, sessions)
    ok = wait_exit(s, 900)
    rate = n / (time.monotonic() - t0) if ok else 0.0
    return rate, (cpu_seconds(t.pids()) - cpu) / n * 1000


def drain(t: Target, port: int, n: int) -> float:
    """Messages/s from the primary's return (and a flush) until the sink has all."""
    t.clear_queue()
    source(t, n, 50)
    wait_queue(t, n)
    s = sink(port, n)
    t0 = time.monotonic()
    t.flush()
    ok = wait_exit(s, 1800)
    return n / (time.monotonic() - t0) if ok else 0.0


def recovery(t: Target, port: int, limit: float) -> float:
    """Seconds from the primary's return to the first delivery, with no flush."""
    t.clear_queue()
    source(t, 20, 5)
    wait_queue(t, 20)
    time.sleep(3)  # the first attempts have failed by now
    s = sink(port, 1)
    t0 = time.monotonic()
    ok = wait_exit(s, limit)
    return time.monotonic() - t0 if ok else float("inf")


async def _idle(host: str, port: int, n: int, timeout: float) -> tuple[int, list[Any]]:
    conns: list[Any] = []
    done = 0

    async def one() -> None:
        nonlocal done
        try:
            r, w = await asyncio.open_connection(host, port)
            conns.append(w)
            await r.readline()
            w.write(b"EHLO client.example.net\r\n")
            while (await r.readline())[3:4] == b"-":
                pass
            done += 1
        except OSError:
            pass

    sem = asyncio.Semaphore(500)

    async def limited() -> None:
        async with sem:
            await one()

    try:
        await asyncio.wait_for(asyncio.gather(*(limited() for _ in range(n))), timeout)
    except TimeoutError:
        pass
    return done, conns


async def _banner_times(host: str, port: int, count: int, limit: float = 10.0) -> list[float]:
    """Seconds to the banner for ``count`` new clients, 20 at a time; ``limit`` if none came."""
    sem = asyncio.Semaphore(20)

    async def one() -> float:
        async with sem:
            t0 = time.monotonic()
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
                await asyncio.wait_for(r.readline(), limit)
                w.close()
                return time.monotonic() - t0
            except (OSError, TimeoutError):
                return limit

    return list(await asyncio.gather(*(one() for _ in range(count))))


def idle_sessions(t: Target, n: int) -> dict[str, float]:
    """RSS holding n idle sessions (banner and EHLO reply done), p99 banner meanwhile."""

    async def go() -> dict[str, float]:
        done, conns = await _idle(t.host, t.port, n, 120)
        await asyncio.sleep(1)
        rss = rss_kib(t.pids())
        times = sorted(await _banner_times(t.host, t.port, 200))
        for w in conns:
            w.close()
        return {"sessions": done, "rss_mib": rss / 1024,
                "p99_banner_s": times[int(len(times) * 0.99) - 1]}

    return asyncio.run(go())


def big_queue(t: Target, port: int, n: int, seed: Callable[[int], None]) -> dict[str, float]:
    """A queue of n messages: RSS, and start-up time until it accepts and delivers."""
    t.clear_queue()
    seed(n)
    t.stop()
    s = sink(port, 1)
    t0 = time.monotonic()
    t.start()
    accept = wait_banner(t.host, t.port, 300)
    subprocess.run(["smtp-source", "-m", "1", "-l", str(SIZE), "-f", SENDER, "-t", RCPT,
                    f"{t.host}:{t.port}"], check=True, capture_output=True, timeout=120)
    ok = wait_exit(s, 600)
    delivered = time.monotonic() - t0 if ok else float("inf")
    time.sleep(2)
    return {"accept_s": accept, "deliver_s": delivered, "rss_mib": rss_kib(t.pids()) / 1024,
            "queued": float(t.queue_size())}


# --- the run ------------------------------------------------------------------------


def _name_of(targets: dict[str, Any], t: Target) -> str:
    return next(name for name, x in targets.items() if x is t)


def machine() -> dict[str, str]:
    fs = subprocess.run(["df", "-T", tempfile.gettempdir()], capture_output=True,
                        text=True).stdout.splitlines()[-1].split()[1]
    return {"cores": str(os.cpu_count()), "kernel": platform.release(), "filesystem": fs,
            "python": platform.python_version(),
            "postfix": subprocess.run(["postconf", "-d", "-h", "mail_version"],
                                      capture_output=True, text=True).stdout.strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=3000, help="messages per throughput run")
    ap.add_argument("--drain", type=int, default=20000)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--queue", type=int, default=100000)
    ap.add_argument("--recovery-limit", type=float, default=420)
    ap.add_argument("--only", default="", help="comma list of figures to run")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other figures of bench/results.json (with --only)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    only = set(filter(None, args.only.split(",")))
    root = Path(tempfile.mkdtemp(prefix="backupmx-bench-"))
    root.chmod(0o755)  # Postfix's unprivileged processes must reach their queue
    port = free_port([HOSTS["postfix"], HOSTS["backupmx"], PRIMARY])
    dns = Unbound(records=[
        "1.0.0.127.in-addr.arpa. 3600 IN PTR client.example.net.",
        "client.example.net. 3600 IN A 127.0.0.1",
        "nausch.org. 3600 IN MX 10 mx1.nausch.org.",
        f"mx1.nausch.org. 3600 IN A {PRIMARY}",
    ])
    dns.start()
    cert, key = certificate(root)
    targets: dict[str, Any] = {
        "postfix": Postfix(root, HOSTS["postfix"], port, PRIMARY, RESTRICTIONS, cert, key),
        "backupmx": BackupMX(root, HOSTS["backupmx"], port, PRIMARY, RESTRICTIONS, dns.address,
                             free_port(["127.0.0.1"]), cert, key),
    }
    results: dict[str, dict[str, Any]] = {name: {"cpu": {}, "client_cpu": {}}
                                          for name in targets}
    def want(key: str) -> bool:
        return not only or key in only

    try:
        for t in targets.values():
            t.setup()
            t.start()
            wait_banner(t.host, t.port)

        def both(key: str, fn: Callable[[Any], float | Measured]) -> None:
            if not want(key.split(":")[0]):
                return
            # Runs alternate between the servers, so that a slow phase of a shared host
            # falls on both alike rather than on all the runs of one of them.
            vals: dict[str, list[float]] = {name: [] for name in targets}
            cpus: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.runs):
                for name, t in targets.items():
                    got = fn(t)
                    rate, cpu = got if isinstance(got, tuple) else (got, None)
                    vals[name].append(rate)
                    if cpu is not None:
                        cpus[name].append(cpu)
            for name in targets:
                results[name][key] = statistics.median(vals[name])
                line = f"{key:28s} {name:9s} {results[name][key]:10.2f}  runs={vals[name]}"
                if cpus[name]:
                    results[name]["cpu"][key] = statistics.median(cpus[name])
                    line += f"  cpu ms/msg={results[name]['cpu'][key]:.3f}"
                print(line, flush=True)

        for sessions in (10, 50, 100):
            both(f"accept:{sessions}", lambda t, s=sessions: accept_down(t, args.count, s))
        both("accept:50x10rcpt", lambda t: accept_down(t, args.count // 2, 50, 10))
        for sessions in (10, 50, 100):
            both(f"accept_tls:{sessions}", lambda t, s=sessions: accept_tls(
                t, args.count, s, results[_name_of(targets, t)]["client_cpu"]))
        for sessions in (10, 50, 100):
            both(f"relay:{sessions}", lambda t, s=sessions: relay(t, port, args.count, s))
        both("drain", lambda t: drain(t, port, args.drain))
        if want("recovery"):
            for name, t in targets.items():
                results[name]["recovery"] = recovery(t, port, args.recovery_limit)
                print(f"recovery {name}: {results[name]['recovery']:.2f} s", flush=True)
        if want("idle"):
            for name, t in targets.items():
                results[name]["idle"] = idle_sessions(t, args.idle)
                print(f"idle {name}: {results[name]['idle']}", flush=True)
        if want("queue"):
            def seed_postfix(n: int) -> None:
                source(targets["postfix"], n, 50)
                wait_queue(targets["postfix"], n, 1800)

            def seed_backupmx(n: int) -> None:
                from bench.seed import seed_spool
                targets["backupmx"].stop()
                seed_spool(targets["backupmx"].dir / "spool", n, SIZE, SENDER, RCPT)
                targets["backupmx"].start()
                wait_banner(targets["backupmx"].host, targets["backupmx"].port, 300)

            for name, seed in (("postfix", seed_postfix), ("backupmx", seed_backupmx)):
                results[name]["queue"] = big_queue(targets[name], port, args.queue, seed)
                print(f"queue {name}: {results[name]['queue']}", flush=True)
    finally:
        for t in targets.values():
            t.stop()
        dns.stop()
    if args.merge and (REPO / "bench" / "results.json").exists():
        old = json.loads((REPO / "bench" / "results.json").read_text())["results"]
        for name in results:
            merged = {key: {**old.get(name, {}).get(key, {}), **results[name][key]}
                      for key in ("cpu", "client_cpu")}
            results[name] = {**old.get(name, {}), **results[name], **merged}
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "runs": args.runs, "count": args.count, "drain": args.drain, "idle": args.idle,
              "queue": args.queue, "results": results}
    (REPO / "bench" / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    from bench.report import write_markdown
    write_markdown(report, REPO / "docs" / "performance.md")
    print((REPO / "docs" / "performance.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
