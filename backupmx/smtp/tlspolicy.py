"""smtp_tls_policy_maps: the TLS a delivery to one next hop must have, in Postfix's syntax.

A table value is a level with optional attributes, e.g. ``secure match=nexthop``,
``fingerprint match=AB:CD:...:EF``, ``encrypt protocols=>=TLSv1.2 ciphers=high``.
The lookup keys follow Postfix: ``[host]:port`` / ``[host]`` for a literal next hop,
else the next-hop domain, then ``.parent`` domains. Parsing is pure, so ``check``
reports a bad value at its line before any delivery meets it.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from backupmx.maps import Table

LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure")
_ATTRIBUTES = ("match", "ciphers", "protocols", "exclude")
CIPHER_GRADES = {"high": "HIGH:!aNULL:!eNULL", "medium": "DEFAULT:!aNULL:!eNULL"}
_VERSIONS = {"tlsv1": ssl.TLSVersion.TLSv1, "tlsv1.1": ssl.TLSVersion.TLSv1_1,
             "tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}


class PolicyError(ValueError):
    """A table value that is not a TLS policy."""


@dataclass(frozen=True)
class TlsPolicy:
    """One hop's TLS requirement; ``match`` is empty for the level's default."""

    level: str
    match: tuple[str, ...] = ()
    ciphers: str = ""
    protocols: str = ""
    exclude: str = ""


def parse(value: str) -> TlsPolicy:
    """A table value as a policy; PolicyError names what is wrong."""
    words = value.split()
    if not words:
        raise PolicyError("empty TLS policy")
    level = words[0].lower()
    if level not in LEVELS:
        raise PolicyError(f"unknown TLS security level {words[0]!r} (one of {', '.join(LEVELS)})")
    attrs: dict[str, str] = {}
    for word in words[1:]:
        name, sep, arg = word.partition("=")
        name = name.lower()
        if not sep or name not in _ATTRIBUTES:
            raise PolicyError(f"unknown TLS policy attribute {word!r}")
        if name == "match" and level not in ("verify", "secure", "fingerprint"):
            raise PolicyError(f"match= applies to verify, secure and fingerprint, not {level}")
        attrs[name] = f"{attrs[name]}:{arg}" if name in attrs else arg
    ciphers = attrs.get("ciphers", "").lower()
    if ciphers and ciphers not in CIPHER_GRADES:
        raise PolicyError(f"ciphers={ciphers}: backupmx knows the grades high and medium")
    protocols = attrs.get("protocols", "")
    min_version(protocols)
    match = tuple(m for m in attrs.get("match", "").replace(",", ":").split(":") if m)
    if level == "fingerprint":
        # A fingerprint's own colons separate its bytes: regroup them per digest.
        match = _fingerprints(attrs.get("match", ""))
    return TlsPolicy(level, match, ciphers, protocols, attrs.get("exclude", ""))


def _fingerprints(text: str) -> tuple[str, ...]:
    """``match=AA:BB:..|CC:..`` (Postfix separates several digests with ``|``)."""
    out = []
    for part in text.replace(",", "|").split("|"):
        hexits = part.replace(":", "").upper()
        if hexits and (len(hexits) % 2 or any(c not in "0123456789ABCDEF" for c in hexits)):
            raise PolicyError(f"match={part}: not a certificate fingerprint")
        if hexits:
            out.append(hexits)
    return tuple(out)


def min_version(protocols: str) -> ssl.TLSVersion | None:
    """The lowest protocol ``protocols=`` allows (``>=TLSv1.2`` or ``!TLSv1:!TLSv1.1``)."""
    text = protocols.strip().lower()
    if not text:
        return None
    if text.startswith(">="):
        version = _VERSIONS.get(text[2:])
        if version is None:
            raise PolicyError(f"protocols={protocols}: unknown protocol")
        return version
    excluded = set()
    for word in text.replace(",", ":").split(":"):
        name = word.lstrip("!")
        if name == "sslv3":
            continue
        if not word.startswith("!") or name not in _VERSIONS:
            raise PolicyError(f"protocols={protocols}: use >=TLSvX or !TLSvX exclusions")
        excluded.add(_VERSIONS[name])
    allowed = [v for v in _VERSIONS.values() if v not in excluded]
    if not allowed:
        raise PolicyError(f"protocols={protocols}: excludes every protocol")
    return min(allowed)


def keys(domain: str, host: str | None, port: int | None, literal: bool) -> list[str]:
    """The lookup keys for a next hop, most specific first."""
    if literal and host:
        return ([f"[{host}]:{port}"] if port else []) + [f"[{host}]"]
    name = (host or domain).lower().rstrip(".")
    out = [f"{name}:{port}"] if port else []
    out.append(name)
    labels = name.split(".")
    out += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    return out


def lookup(tables: Iterable[Table], candidates: list[str]) -> TlsPolicy | None:
    """The first table's policy for the most specific key; MapError / PolicyError raise."""
    for table in tables:
        for key in candidates:
            value = table.lookup(key)
            if value is not None:
                return parse(value)
    return None


def names_match(cert_names: list[str], wanted: list[str]) -> bool:
    """Whether a certificate name meets one wanted name.

    A wanted name starting with ``.`` accepts any name below it; a certificate name
    ``*.d`` stands for exactly one label before ``d``.
    """
    for cert in (c.lower().rstrip(".") for c in cert_names):
        for want in (w.lower().rstrip(".") for w in wanted):
            if want.startswith("."):
                if cert.endswith(want) and not cert.startswith("*"):
                    return True
                if cert.startswith("*.") and ("." + cert[2:]).endswith(want):
                    return True
            elif cert == want:
                return True
            elif cert.startswith("*.") and want.partition(".")[2] == cert[2:]:
                return True
    return False


def cert_names(cert: dict[str, object]) -> list[str]:
    """The DNS names of a peer certificate (subjectAltName, else the subject CN)."""
    sans = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]  # type: ignore[attr-defined]
    if sans:
        return [str(s) for s in sans]
    return [str(v) for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]  # type: ignore[attr-defined]


def fingerprint(der: bytes, digest: str) -> str:
    """A certificate's digest as upper-case hex without separators."""
    return hashlib.new(digest, der).hexdigest().upper()
