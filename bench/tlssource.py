"""A load generator that does what smtp-source cannot: STARTTLS in every session.

Each session connects, reads the banner, says EHLO, STARTTLS, EHLO again and sends one
message (MAIL, RCPT, DATA), then QUIT, as an MTA that delivers one message per
connection does. The sessions run in several processes (one event loop each), so that
the client is not the limit; it reports its own CPU time beside the rate, which shows
whether it was. The client does not verify the server's certificate, as an MTA at
security level ``may`` does not, and starts every session with a full handshake.

    python -m bench.tlssource -s 50 -m 3000 -l 4096 -f a@b.example -t c@d.example HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import ssl
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection


@dataclass
class Job:
    host: str
    port: int
    count: int
    sessions: int
    size: int
    sender: str
    rcpt: str
    helo: str


@dataclass
class Result:
    messages: int  # got 250 after DATA
    failed: int  # sessions that broke or got another reply
    seconds: float
    client_cpu_s: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class ReplyError(Exception):
    """The server answered something other than the expected code."""


def body(size: int) -> bytes:
    """A message of about ``size`` bytes: a few headers, then 72-character lines."""
    head = b"Subject: tlssource\r\nFrom: <bench@sender.example>\r\n\r\n"
    line = b"x" * 70 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def _reply(r: asyncio.StreamReader, code: bytes) -> None:
    while True:
        line = await r.readline()
        if not line:
            raise ReplyError("connection closed")
        if line[3:4] != b"-":
            break
    if line[:3] != code:
        raise ReplyError(line.decode("ascii", "replace").strip())


async def _message(job: Job, ctx: ssl.SSLContext, data: bytes) -> None:
    r, w = await asyncio.open_connection(job.host, job.port)
    try:
        await _reply(r, b"220")
        w.write(f"EHLO {job.helo}\r\n".encode())
        await _reply(r, b"250")
        w.write(b"STARTTLS\r\n")
        await _reply(r, b"220")
        await w.start_tls(ctx)
        w.write(f"EHLO {job.helo}\r\n".encode())
        await _reply(r, b"250")
        w.write(f"MAIL FROM:<{job.sender}>\r\n".encode())
        await _reply(r, b"250")
        w.write(f"RCPT TO:<{job.rcpt}>\r\n".encode())
        await _reply(r, b"250")
        w.write(b"DATA\r\n")
        await _reply(r, b"354")
        w.write(data + b".\r\n")
        await _reply(r, b"250")
        w.write(b"QUIT\r\n")
        await _reply(r, b"221")
    finally:
        w.close()


async def _run(job: Job) -> tuple[int, int]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = body(job.size)
    left = job.count
    ok = failed = 0

    async def session_loop() -> None:
        nonlocal left, ok, failed
        while left > 0:
            left -= 1
            try:
                await asyncio.wait_for(_message(job, ctx, data), 120)
                ok += 1
            except (OSError, ReplyError, TimeoutError, ssl.SSLError):
                failed += 1

    await asyncio.gather(*(session_loop() for _ in range(job.sessions)))
    return ok, failed


def _child(job: Job, start: Connection, out: Connection) -> None:
    start.recv()
    out.send(asyncio.run(_run(job)))


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` nearly equal shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(job: Job, procs: int) -> Result:
    """Send ``job.count`` messages over ``job.sessions`` sessions spread over ``procs``."""
    procs = max(1, min(procs, job.sessions))
    ctx = multiprocessing.get_context("fork")
    kids = []
    for count, sessions in zip(split(job.count, procs), split(job.sessions, procs),
                               strict=True):
        go_r, go_w = ctx.Pipe(duplex=False)
        res_r, res_w = ctx.Pipe(duplex=False)
        part = Job(**{**asdict(job), "count": count, "sessions": sessions})
        p = ctx.Process(target=_child, args=(part, go_r, res_w))
        p.start()
        kids.append((p, go_w, res_r))
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    for _, go, _ in kids:
        go.send(True)
    ok = failed = 0
    for _, _, res in kids:
        got_ok, got_failed = res.recv()
        ok, failed = ok + got_ok, failed + got_failed
    seconds = time.monotonic() - t0
    for p, _, _ in kids:
        p.join()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return Result(ok, failed, seconds, cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-s", "--sessions", type=int, default=10)
    ap.add_argument("-m", "--count", type=int, default=100)
    ap.add_argument("-l", "--size", type=int, default=4096)
    ap.add_argument("-f", "--sender", default="sender@sender.example")
    ap.add_argument("-t", "--rcpt", default="alice@nausch.org")
    ap.add_argument("-M", "--helo", default="client.example.net")
    ap.add_argument("-P", "--procs", type=int, default=os.cpu_count() or 1,
                    help="client processes (default: one per CPU)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("target", help="HOST:PORT")
    a = ap.parse_args()
    host, _, port = a.target.rpartition(":")
    res = run(Job(host, int(port), a.count, a.sessions, a.size, a.sender, a.rcpt, a.helo),
              a.procs)
    if a.json:
        print(json.dumps({**asdict(res), "rate": res.rate}))
    else:
        print(f"{res.messages} messages, {res.failed} failed, {res.seconds:.2f} s, "
              f"{res.rate:.1f} msg/s, client CPU {res.client_cpu_s:.2f} s "
              f"({res.client_cpu_s / res.seconds:.0%} of one core)")
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
