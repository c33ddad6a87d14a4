"""``backupmx demo``: an outage walked through on loopback, start to finish.

Everything runs on this machine: a backupmx server on 127.0.0.1, a primary MX
played by a tiny SMTP server on 127.0.0.2 that is down at first, and a sender.
No DNS is needed: the demo routes nausch.org with ``transport_maps``.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Primary:
    """A minimal SMTP server that accepts everything and remembers what it got."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.received: list[tuple[str, list[str], bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._session, self.host, self.port)
        )
        self._ready.set()
        self._server = server
        self._loop.run_forever()

    async def _session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sender, rcpts = "", list[str]()
        w.write(b"220 mx1.nausch.org ESMTP demo primary\r\n")
        while line := await r.readline():
            cmd = line.decode(errors="replace").strip()
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                w.write(b"250-mx1.nausch.org\r\n250 8BITMIME\r\n")
            elif verb == "MAIL":
                sender, rcpts = cmd[10:].split(">")[0].lstrip("<"), []
                w.write(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                rcpts.append(cmd[8:].split(">")[0].lstrip("<"))
                w.write(b"250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                w.write(b"354 go ahead\r\n")
                data = bytearray()
                while (chunk := await r.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b".") else chunk
                self.received.append((sender, rcpts, bytes(data)))
                w.write(b"250 2.0.0 Ok: delivered\r\n")
            elif verb == "QUIT":
                w.write(b"221 2.0.0 Bye\r\n")
                break
            else:
                w.write(b"250 2.0.0 Ok\r\n")
            await w.drain()
        w.close()


def _say(text: str = "") -> None:
    print(text, flush=True)


def run() -> int:
    with tempfile.TemporaryDirectory(prefix="backupmx-demo-") as tmp:
        return _run(Path(tmp))


def _run(tmp: Path) -> int:
    port = _free_port("127.0.0.1")
    primary_port = _free_port("127.0.0.2")
    admin_port = _free_port("127.0.0.1")
    cf = tmp / "backupmx.cf"
    cf.write_text(
        "myhostname = mx1.tachtler.net\n"
        f"smtpd_listen = 127.0.0.1:{port}\n"
        f"admin_listen = 127.0.0.1:{admin_port}\n"
        f"queue_directory = {tmp}/spool\n"
        f"data_directory = {tmp}/data\n"
        "smtpd_peername_lookup = no\n"
        "mynetworks = 127.0.0.1/32\n"
        "relay_domains = nausch.org\n"
        f"transport_maps = inline:{{ nausch.org=smtp:[127.0.0.2]:{primary_port} }}\n"
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"
        "minimal_backoff_time = 2s\nmaximal_backoff_time = 4s\n"
        f"maillog_file = {tmp}/maillog\n"
    )
    cmd = [sys.executable, "-m", "backupmx", "-c", str(cf)]
    _say("backupmx demo: a primary MX goes down, backupmx keeps the mail, the primary")
    _say("comes back, the mail arrives. Everything runs on loopback.\n")
    _say(f"1. backupmx listens on 127.0.0.1:{port} as backup MX for nausch.org.")
    server = subprocess.Popen([*cmd, "serve"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        _say(f"2. The primary mx1.nausch.org (127.0.0.2:{primary_port}) is down.")
        _say("3. A sender hands a message for alice@nausch.org to backupmx:")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            code, _ = s.ehlo("sender.example")
            _say(f"     EHLO sender.example          -> {code}")
            code, msg = s.mail("bob@sender.example")
            _say(f"     MAIL FROM:<bob@sender.example> -> {code} {msg.decode()}")
            code, msg = s.rcpt("alice@nausch.org")
            _say(f"     RCPT TO:<alice@nausch.org>     -> {code} {msg.decode()}")
            code, msg = s.data(
                b"From: bob@sender.example\r\nTo: alice@nausch.org\r\n"
                b"Subject: during the outage\r\n\r\nHello Alice.\r\n"
            )
            _say(f"     DATA ...                       -> {code} {msg.decode()}")
        time.sleep(0.5)
        _say("\n4. The message waits safely on disk (backupmx queue list):\n")
        listing = subprocess.run([*cmd, "queue", "list"], capture_output=True, text=True)
        _say("   " + listing.stdout.replace("\n", "\n   ").rstrip())
        _say(f"\n5. The primary comes back on 127.0.0.2:{primary_port}.")
        primary = _Primary("127.0.0.2", primary_port)
        primary.start()
        start = time.monotonic()
        while not primary.received and time.monotonic() - start < 30:
            time.sleep(0.1)
        if not primary.received:
            _say("   The message did not arrive within 30 s: something is wrong.")
            return 1
        sender, rcpts, data = primary.received[0]
        _say(f"6. backupmx retried by itself; after {time.monotonic() - start:.1f} s the primary"
             f" has the message from <{sender}> to <{', '.join(rcpts)}>:\n")
        for line in data.decode(errors="replace").splitlines():
            _say("     " + line)
        time.sleep(0.5)
        listing = subprocess.run([*cmd, "queue", "list"], capture_output=True, text=True)
        _say(f"\n7. backupmx queue list: {listing.stdout.strip()}")
        return 0
    finally:
        server.terminate()
        server.wait(15)
