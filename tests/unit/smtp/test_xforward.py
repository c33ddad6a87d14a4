"""The XFORWARD lines the delivery client sends for an envelope."""

from __future__ import annotations

from backupmx.envelope import Envelope
from backupmx.queue.store import decode_envelope
from backupmx.smtp import xforward

ALL = xforward.offered("NAME ADDR PROTO HELO SOURCE PORT IDENT")


def _env(**kw: object) -> Envelope:
    return Envelope(id="E3247A", sender="s@x.example", recipients=[], arrival=0.0, **kw)


def test_remote_client_in_two_commands():
    env = _env(client="client.example.net[127.0.0.5]", client_port=40001,
               helo="client.example.net", protocol="ESMTPS")
    assert xforward.commands(env, ALL) == [
        (b"XFORWARD", b"NAME=client.example.net", b"ADDR=127.0.0.5", b"PORT=40001"),
        (b"XFORWARD", b"PROTO=ESMTPS", b"HELO=client.example.net", b"IDENT=E3247A",
         b"SOURCE=REMOTE"),
    ]


def test_ipv6_unknown_name_and_xtext():
    env = _env(client="unknown[::1]", client_port=25, helo="a b+c=", protocol="SMTP")
    lines = xforward.commands(env, ALL)
    assert lines[0] == (b"XFORWARD", b"NAME=[UNAVAILABLE]", b"ADDR=IPv6:::1", b"PORT=25")
    assert b"HELO=a+20b+2Bc+3D" in lines[1]


def test_local_mail_and_only_offered_attributes():
    env = _env()  # a bounce: no client
    assert xforward.commands(env, xforward.offered("name addr source")) == [
        (b"XFORWARD", b"NAME=[UNAVAILABLE]", b"ADDR=[UNAVAILABLE]"),
        (b"XFORWARD", b"SOURCE=LOCAL"),
    ]
    assert xforward.commands(env, frozenset()) == []


def test_an_older_spool_record_still_reads():
    env = decode_envelope('{"id":"E1","sender":"","recipients":[],"arrival":1.0,'
                          '"client":"client.example.net[127.0.0.5]"}')
    assert (env.client_port, env.helo, env.protocol) == (0, None, "")
    assert xforward.attributes(env)["PORT"] == "[UNAVAILABLE]"
