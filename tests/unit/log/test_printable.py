"""printable(): what a log line, a reply or a cache entry may carry."""

from __future__ import annotations

import io
import re

from backupmx.log import Logger
from backupmx.printable import printable


def test_clean_text_is_returned_as_it_is() -> None:
    text = "NOQUEUE: reject: RCPT from x[192.0.2.1]: 554 5.7.1 <jörg@example.org>"
    assert printable(text) is text


def test_control_characters_are_replaced() -> None:
    assert printable("a\x00b\x1b[2Jc\x07\r\n\t\x7f") == "a?b?[2Jc?????"
    assert printable("x\x9b31m\u202egnp.exe") == "x?31m?gnp.exe"  # C1 CSI, a bidi override
    assert printable("tab\there", " ") == "tab here"


def test_every_log_line_is_made_printable() -> None:
    logger = Logger()
    out = io.StringIO()
    logger.stderr = out
    logger.emit("smtpd", "helo=<evil\x00\x1b[2J>")
    assert re.fullmatch(r"backupmx/smtpd\[\d+\]: helo=<evil\?\?\[2J>\n", out.getvalue())
