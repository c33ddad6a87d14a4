"""Postfix-format log lines, so that tools written for Postfix read ours.

Each line is ``TAG/COMPONENT[PID]: text``.  To stderr the line goes without a
timestamp (journald adds one); to ``maillog_file`` with a syslog-style prefix
``Mon DD HH:MM:SS HOST``; to the local syslog socket when ``syslog_facility`` is set.
Every line is made printable here (``?`` for a control character), whatever client
data it carries, as Postfix does for its own log lines.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import syslog
import threading
import time
from typing import BinaryIO, TextIO

from backupmx.printable import printable

_FACILITIES = {
    "mail": syslog.LOG_MAIL,
    "daemon": syslog.LOG_DAEMON,
    "user": syslog.LOG_USER,
    **{f"local{i}": getattr(syslog, f"LOG_LOCAL{i}") for i in range(8)},
}


class Logger:
    """Writes one line per event to the configured sinks."""

    def __init__(self) -> None:
        self.tag = "backupmx"
        self.host = socket.gethostname().split(".")[0]
        self.stderr: TextIO | None = sys.stderr
        self.file: TextIO | None = None
        self.path = ""  # maillog_file when it is a file of our own, to reopen
        self.facility: int | None = None
        self._lock = threading.Lock()
        self._dirty = False
        self._flusher: threading.Thread | None = None
        self._stamp_second = -1
        self._stamp = ""

    def configure(
        self,
        syslog_name: str = "backupmx",
        maillog_file: str = "",
        syslog_facility: str = "",
        myhostname: str = "",
        to_stderr: bool = True,
    ) -> None:
        """(Re)point the sinks; safe to call again on reload."""
        with self._lock:
            self.tag = syslog_name or "backupmx"
            if myhostname:
                self.host = myhostname.split(".")[0]
            if self.file not in (None, sys.stdout):
                assert self.file is not None
                self.file.close()
            self.file = None
            self.path = ""
            if maillog_file in ("-", "/dev/stdout"):
                self.file = sys.stdout
            elif maillog_file:
                self.file = open(maillog_file, "a", encoding="utf-8")
                self.path = maillog_file
            self.stderr = sys.stderr if to_stderr and self.file is not sys.stdout else None
            if syslog_facility:
                self.facility = _FACILITIES.get(syslog_facility.lower(), syslog.LOG_MAIL)
                syslog.openlog(self.tag, syslog.LOG_PID, self.facility)
            else:
                self.facility = None

    def reopen(self) -> None:
        """Open ``maillog_file`` anew, after logrotate moved it away.

        OSError when it cannot be opened; the old file then stays in use, so no line is lost.
        """
        if not self.path:
            return
        new = open(self.path, "a", encoding="utf-8")
        with self._lock:
            self._flush_locked()
            old, self.file = self.file, new
            if old is not None:
                old.close()

    def emit(self, component: str, text: str, priority: int = syslog.LOG_INFO) -> None:
        text = printable(text)  # no control character from a client reaches the log
        line = f"{self.tag}/{component}[{os.getpid()}]: {text}"
        with self._lock:
            if self.stderr is not None:
                # the binary buffer: the text layer of stderr writes through per line
                raw: BinaryIO | None = getattr(self.stderr, "buffer", None)
                if raw is not None:
                    raw.write((line + "\n").encode())
                else:
                    self.stderr.write(line + "\n")
            if self.file is not None:
                now = int(time.time())
                if now != self._stamp_second:  # one strftime per second, not per line
                    self._stamp_second = now
                    self._stamp = time.strftime("%b %e %H:%M:%S", time.localtime(now))
                self.file.write(f"{self._stamp} {self.host} {line}\n")
            if self.facility is not None:
                syslog.syslog(self.facility | priority, f"{component}: {text}")
            if priority <= syslog.LOG_WARNING:
                self._flush_locked()
            else:
                self._dirty = True
                self._start_flusher()

    def _start_flusher(self) -> None:
        # Lines are flushed every 0.1 s rather than one write(2) per line per sink:
        # under load that was a visible share of the CPU per message.
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="log", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(0.1)
            if self._dirty:
                with self._lock:
                    self._flush_locked()

    def _flush_locked(self) -> None:
        self._dirty = False
        for f in (self.stderr, getattr(self.stderr, "buffer", None), self.file):
            if f is not None:
                try:
                    f.flush()
                except (OSError, ValueError):
                    pass

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def info(self, component: str, text: str) -> None:
        self.emit(component, text)

    def warning(self, component: str, text: str) -> None:
        self.emit(component, "warning: " + text, syslog.LOG_WARNING)

    def error(self, component: str, text: str) -> None:
        self.emit(component, "error: " + text, syslog.LOG_ERR)

    def fatal(self, component: str, text: str) -> None:
        self.emit(component, "fatal: " + text, syslog.LOG_CRIT)


log = Logger()
atexit.register(log.flush)
