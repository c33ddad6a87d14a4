"""Inbound TLS (STARTTLS): the server context and how a TLS session is described.

The context is built once per certificate file version and shared by all
sessions; a renewed certificate is picked up by the next STARTTLS after its
files change (no restart needed).
"""

from __future__ import annotations

import os
import ssl

from backupmx.config import Config

_cache: dict[tuple[str, str, float, float], ssl.SSLContext] = {}


class TlsError(Exception):
    """The configured certificate or key cannot be used."""


def server_level(cfg: Config) -> str:
    """smtpd_tls_security_level as none, may or encrypt (empty is none)."""
    return cfg.str("smtpd_tls_security_level").strip().lower() or "none"


def server_context(cfg: Config) -> ssl.SSLContext | None:
    """The context for STARTTLS, or None when TLS is off or no certificate is set.

    Raises TlsError when the files are missing or do not form a key pair.
    """
    if server_level(cfg) == "none":
        return None
    cert = cfg.str("smtpd_tls_cert_file")
    if not cert:
        return None
    key = cfg.str("smtpd_tls_key_file") or cert
    try:
        stamp = (cert, key, os.stat(cert).st_mtime, os.stat(key).st_mtime)
    except OSError as e:
        raise TlsError(f"cannot read TLS certificate or key: {e}") from e
    ctx = _cache.get(stamp)
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot load TLS certificate {cert} with key {key}: {e}") from e
        _cache.clear()
        _cache[stamp] = ctx
    return ctx


def describe(obj: ssl.SSLObject) -> str:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``, as Postfix logs it."""
    cipher = obj.cipher() or ("unknown", obj.version() or "TLS", 0)
    name, _proto, bits = cipher
    return f"{obj.version()} with cipher {name} ({bits}/{bits} bits)"
