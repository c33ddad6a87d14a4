"""DataReader: end of data per smuggling mode, dot-unstuffing, size and header limits."""

from __future__ import annotations

import pytest

from backupmx.smtpd.session import DataReader


def records(raw: bytes, limit: int = 2048) -> list[tuple[bytes, bool, bool]]:
    """What Conn.read_records makes of ``raw`` (complete lines only)."""
    out = []
    for line in raw.split(b"\n")[:-1]:
        content, bare = (line[:-1], False) if line.endswith(b"\r") else (line, True)
        while len(content) > limit:
            out.append((content[:limit], False, False))
            content = content[limit:]
        out.append((content, bare, True))
    return out


def read(raw: bytes, mode: str = "normalize", size: int = 0, header: int = 0,
         limit: int = 2048) -> tuple[bool, DataReader]:
    r = DataReader(mode, size, header)
    return r.feed(records(raw, limit)), r


SMUGGLE = b"MAIL FROM:<x@y>\r\n"


@pytest.mark.parametrize("seq", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r\r\n", b"\n.\r\r\n"])
def test_normalize_never_ends_at_a_non_standard_sequence(seq):
    done, r = read(b"a" + seq + SMUGGLE + b".\r\n")
    assert done
    assert b"MAIL FROM:<x@y>\r\n" in r.content()
    assert r.content().startswith(b"a\r\n")
    assert b"\n" not in r.content().replace(b"\r\n", b"")


@pytest.mark.parametrize("seq", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r\r\n"])
def test_mode_no_ends_at_them_like_old_postfix(seq):
    done, r = read(b"a" + seq + SMUGGLE, mode="no")
    assert done
    assert r.content() == b"a\r\n"


def test_crlf_dot_crlf_ends_and_the_rest_is_not_read():
    done, r = read(b"a\r\n.\r\n" + SMUGGLE)
    assert done and r.content() == b"a\r\n"


def test_dot_unstuffing_and_stray_cr():
    done, r = read(b"..leading\r\nx\r.\ry\r\n.\r\n")
    assert done and r.content() == b".leading\r\nx . y\r\n"


def test_reject_mode_flags_bare_lf():
    done, r = read(b"a\nb\r\n.\r\n", mode="reject")
    assert done and r.bare_lf
    done, r = read(b"a\r\nb\r\n.\r\n", mode="reject")
    assert done and not r.bare_lf


def test_size_limit_counts_line_plus_two():
    done, r = read(b"12345678\r\n.\r\n", size=10)
    assert done and not r.too_big and r.size == 10
    done, r = read(b"123456789\r\n.\r\n", size=10)
    assert done and r.too_big and r.content() == b""


def test_header_size_limit_cuts_one_header_and_its_folds():
    raw = b"Subject: " + b"x" * 50 + b"\r\n\tmore\r\nTo: a\r\n\r\nbody " + b"y" * 80 + b"\r\n.\r\n"
    done, r = read(raw, header=20)
    assert done
    assert r.content() == b"Subject: xxxxxxxxxxx\r\nTo: a\r\n\r\nbody " + b"y" * 80 + b"\r\n"


def test_header_limit_across_length_split_pieces():
    raw = b"Subject: " + b"x" * 100 + b"\r\nTo: a\r\n\r\n.\r\n"
    done, r = read(raw, header=30, limit=16)
    assert done
    assert r.content() == b"Subject: " + b"x" * 21 + b"\r\nTo: a\r\n\r\n"


def test_long_body_line_rejoined_from_pieces():
    done, r = read(b"\r\n" + b"z" * 50 + b"\r\n.\r\n", limit=16)
    assert done and r.content() == b"\r\n" + b"z" * 50 + b"\r\n"


def test_dot_piece_of_long_line_is_not_an_end():
    # "." followed by more text split at the limit: the piece "." is not a complete line
    done, r = read(b"\r\n" + b"." + b"q" * 20 + b"\r\n.\r\n", limit=1)
    assert done and r.content() == b"\r\n" + b"q" * 20 + b"\r\n"
