"""A webhook receiver: an HTTP server on loopback that records every POST.

It runs in threads of its own (``http.server``), so a synchronous test starts it, sets
how it answers, and reads what backupmx posted.  ``statuses`` are the replies to the
first requests, in order (``[500]``: the first fails, the rest succeed); with
``hang`` set a request is read and then never answered until the receiver stops.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    """One POST: its path, headers, JSON body and the status it was answered with
    (0: not answered)."""

    path: str
    content_type: str
    body: dict[str, Any]
    status: int


class WebhookReceiver:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.statuses: list[int] = []
        self.hang = False
        self.requests: list[Request] = []
        self.hanging = 0
        self._changed = threading.Condition()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._changed:
                    hang = receiver.hang
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if hang:
                        receiver.hanging += 1
                    else:
                        receiver.requests.append(Request(
                            self.path, self.headers.get("Content-Type", ""),
                            json.loads(raw), status))
                    receiver._changed.notify_all()
                if hang:
                    receiver._release.wait()
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)

    def wait(self, pred: Any, timeout: float = 20.0) -> list[Request]:
        """The requests so far, once ``pred`` of them holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not pred(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhook requests never matched: {self.requests}")
                self._changed.wait(left)
            return list(self.requests)

    def wait_hanging(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.hanging < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.hanging} hanging requests, not {count}")
                self._changed.wait(left)


def kinds(requests: list[Request], kind: str, status: int = 200) -> list[dict[str, Any]]:
    """The bodies of the requests of one alert kind answered with ``status``."""
    return [r.body for r in requests if r.body.get("kind") == kind and r.status == status]
