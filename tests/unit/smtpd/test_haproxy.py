"""The PROXY protocol header parser: v1 and v2, incomplete and malformed input."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from backupmx.smtpd.haproxy import V2_SIGNATURE, Endpoints, Header, ProxyError, escape, parse


def v2(cmd: int, fam: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def v4_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + struct.pack("!HH", sport, dport))


def test_v1_tcp4_and_what_follows_it():
    line = b"PROXY TCP4 192.0.2.7 198.51.100.3 40001 25\r\n"
    assert parse(line + b"EHLO x\r\n") == Header(
        len(line), Endpoints("192.0.2.7", 40001, "198.51.100.3", 25))


def test_v1_tcp6_and_a_mapped_address():
    line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 25\r\n"
    assert parse(line) == Header(len(line), Endpoints("2001:db8::7", 65535, "2001:db8::1", 25))
    mapped = b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:192.0.2.1 1 25\r\n"
    assert parse(mapped) == Header(len(mapped), Endpoints("192.0.2.7", 1, "192.0.2.1", 25))


@pytest.mark.parametrize("partial", [b"", b"P", b"PROXY", b"PROXY TCP4 192.0.2.7",
                                     V2_SIGNATURE[:5], V2_SIGNATURE + b"\x21\x11\x00"])
def test_incomplete_input_asks_for_more(partial):
    assert parse(partial) is None


@pytest.mark.parametrize("line,reason", [
    (b"PROXY UNKNOWN\r\n", "bad or missing protocol type"),
    (b"PROXY UNKNOWN 192.0.2.7 198.51.100.3 1 25\r\n", "bad or missing protocol type"),
    (b"PROXY TCP5 192.0.2.7 198.51.100.3 1 25\r\n", "bad or missing protocol type"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.3 1\r\n", "bad or missing protocol header"),
    (b"PROXY TCP4  192.0.2.7 198.51.100.3 1 25\r\n", "bad or missing protocol header"),
    (b"PROXY TCP4 192.0.2.300 198.51.100.3 1 25\r\n", "bad or missing client address"),
    (b"PROXY TCP4 2001:db8::7 198.51.100.3 1 25\r\n", "bad or missing client address"),
    (b"PROXY TCP6 2001:db8::7 198.51.100.3 1 25\r\n", "bad or missing server address"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.3 65536 25\r\n", "bad or missing client port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.3 1 -25\r\n", "bad or missing server port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.3 1 x\r\n", "bad or missing server port"),
    (b"PROXY " + b"x" * 120, "missing protocol header terminator"),
    (b"EHLO client.example\r\n", "unrecognized protocol header"),
    (b"\r\n\r\n\x00\r\nQUID\n", "unrecognized protocol header"),
])
def test_v1_malformed(line, reason):
    with pytest.raises(ProxyError) as e:
        parse(line)
    assert str(e.value) == reason


def test_v2_tcp4_with_tlvs_skipped():
    tlvs = bytes([0x02, 0x00, 0x03]) + b"sni" + bytes([0x04, 0x00, 0x01, 0x00])
    head = v2(1, 0x11, v4_block("192.0.2.7", "198.51.100.3", 40001, 25) + tlvs)
    assert parse(head + b"EHLO") == Header(
        len(head), Endpoints("192.0.2.7", 40001, "198.51.100.3", 25))


def test_v2_tcp6():
    block = (ipaddress.ip_address("2001:db8::7").packed
             + ipaddress.ip_address("2001:db8::1").packed + struct.pack("!HH", 1234, 25))
    head = v2(1, 0x21, block)
    assert parse(head) == Header(52, Endpoints("2001:db8::7", 1234, "2001:db8::1", 25))


def test_v2_local_is_not_proxied_whatever_its_body():
    assert parse(v2(0, 0x00, b"")) == Header(16, None)
    assert parse(v2(0, 0x11, v4_block("192.0.2.7", "198.51.100.3", 1, 25))) == Header(28, None)


def test_v2_waits_for_its_whole_length():
    head = v2(1, 0x11, v4_block("192.0.2.7", "198.51.100.3", 1, 25))
    assert parse(head[:-1]) is None


@pytest.mark.parametrize("head,reason", [
    (V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12), "unrecognized protocol version"),
    (v2(2, 0x11, bytes(12)), "bad command in proxy header"),
    (v2(1, 0x12, bytes(12)), "unsupported network protocol"),  # UDP
    (v2(1, 0x31, bytes(216)), "unsupported network protocol"),  # AF_UNIX
    (v2(1, 0x00, b""), "unsupported network protocol"),  # UNSPEC
    (v2(1, 0x11, bytes(11)), "short address field"),
    (v2(1, 0x21, bytes(35)), "short address field"),
])
def test_v2_malformed(head, reason):
    with pytest.raises(ProxyError) as e:
        parse(head)
    assert str(e.value) == reason


def test_escape_for_the_log():
    assert escape(b"PROXY \\x\r\n\x00\xff") == "PROXY \\134x\\015\\012\\000\\377"
