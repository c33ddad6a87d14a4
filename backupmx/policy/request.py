"""The attributes of a policy request, as Postfix 3.8 sends them (spec/policy-protocol.md §1.1).

Postfix always sends every attribute (empty or 0 when unknown), and policy servers
rely on that: postgrey, for one, only prefixes its reply with ``4.2.0`` when the
``etrn_domain`` attribute is present.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backupmx.restrictions.engine import Context

MAIL_VERSION = "3.8.0"  # the protocol revision whose attribute set we send

_seq = itertools.count()


def new_instance(now: float | None = None) -> str:
    """A per-transaction id like Postfix's ``<pid>.<sec>.<usec>.<seq>`` in hex."""
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    return f"{os.getpid():x}.{sec:x}.{usec:x}.{next(_seq):x}"


def attributes(
    ctx: Context, policy_context: str = "", compatibility_level: str = ""
) -> dict[str, str]:
    """The request for ``ctx``, in Postfix's order, every attribute present."""
    at_data = ctx.state in ("DATA", "END-OF-MESSAGE")
    recipient = ctx.recipient or ""
    return {
        "request": "smtpd_access_policy",
        "protocol_state": ctx.state,
        "protocol_name": ctx.protocol,
        "client_address": ctx.client_ip,
        "client_name": ctx.client_name,
        "client_port": str(ctx.client_port),
        "reverse_client_name": ctx.reverse_name,
        "server_address": ctx.server_address,
        "server_port": str(ctx.server_port),
        "helo_name": ctx.helo or "",
        "sender": ctx.sender or "",
        "recipient": recipient,
        "recipient_count": str(ctx.nrcpt if at_data else 0),
        "queue_id": ctx.queue_id or "",
        "instance": ctx.instance,
        "size": str(ctx.size),
        "etrn_domain": ctx.etrn_domain or "",
        "stress": "",
        "sasl_method": "",
        "sasl_username": ctx.sasl_user or "",
        "sasl_sender": "",
        "ccert_subject": "",
        "ccert_issuer": "",
        "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "",
        "encryption_protocol": "",
        "encryption_cipher": "",
        "encryption_keysize": "0",
        "policy_context": policy_context,
        "compatibility_level": compatibility_level,
        "mail_version": MAIL_VERSION,
    }


def encode(attrs: dict[str, str]) -> bytes:
    """``name=value`` lines and the empty line; newlines in values become spaces."""
    lines = "".join(f"{k}={_clean(v)}\n" for k, v in attrs.items())
    return (lines + "\n").encode("utf-8", "surrogateescape")


def _clean(value: str) -> str:
    return value.replace("\n", " ").replace("\r", " ").replace("\0", " ")


def decode(block: bytes) -> dict[str, str]:
    """The attributes of one request or reply block (without its empty line); first wins."""
    out: dict[str, str] = {}
    for raw in block.decode("utf-8", "surrogateescape").split("\n"):
        name, sep, value = raw.partition("=")
        if sep and name and name not in out:
            out[name] = value
    return out
