"""smtp_tls_policy_maps: per-destination TLS levels against a primary with a real chain.

The test CA and the primary's certificate (mx1.nausch.org) come from test_tls's ``pki``.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest

from tests.e2e import test_tls
from tests.e2e.test_tls import SEED, _used_starttls
from tests.e2e.util import message, send, wait_queue
from tests.peers.primary import RecordingPrimary

pki = test_tls.pki  # the fixtures, shared
tls_primary = test_tls.tls_primary


def _config(tmp_path: Path, pki: dict[str, Path], policy: str) -> str:
    table = tmp_path / "tls_policy"
    table.write_text(f"nausch.org {policy}\n")
    return SEED + (f"smtp_tls_security_level = none\nsmtp_tls_CAfile = {pki['ca']}\n"
                   f"smtp_tls_policy_maps = texthash:{table}\n")


def _fingerprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _deferred(mx, primary: RecordingPrimary) -> str:
    q = wait_queue(mx, lambda q: q and q[0]["recipients"][0].get("last_reply"), timeout=30)
    assert primary.messages == []
    return str(q[0]["recipients"][0]["last_reply"])


@pytest.mark.parametrize("policy", [
    "verify", "secure", "secure match=.nausch.org", "verify match=hostname:mx1.nausch.org",
])
def test_matching_certificate_is_delivered(backupmx_factory, tls_primary, pki, tmp_path,
                                           policy):
    mx = backupmx_factory(_config(tmp_path, pki, policy))
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("authenticated"))
    tls_primary.wait_for(1, timeout=30)
    assert _used_starttls(tls_primary)
    mx.wait_log(r"Verified TLS connection established to mx1\.nausch\.org\[127\.0\.0\.2\]")


@pytest.mark.parametrize(("policy", "wanted"), [
    ("secure match=nexthop", "nausch.org"),
    ("verify match=mx.other.example", "mx.other.example"),
])
def test_wrong_name_defers(backupmx_factory, tls_primary, pki, tmp_path, policy, wanted):
    mx = backupmx_factory(_config(tmp_path, pki, policy))
    out = send(mx, "sender@sender.example", ["alice@nausch.org"], message("wrong name"))
    reason = (f"Server certificate not verified: mx1.nausch.org[127.0.0.2]: certificate names "
              f"mx1.nausch.org do not match {wanted}")
    assert reason in _deferred(mx, tls_primary)
    mx.wait_log(rf"{out.queue_id}: to=<alice@nausch.org>, .*dsn=4\.7\.5, status=deferred")
    mx.wait_log(r"server certificate verification failed for mx1\.nausch\.org\[127\.0\.0\.2\]")


def test_fingerprint_listed_is_delivered(backupmx_factory, tls_primary, pki, tmp_path):
    pin = _fingerprint(pki["mx1.nausch.org"])
    mx = backupmx_factory(_config(tmp_path, pki, f"fingerprint match={pin}"))
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("pinned"))
    tls_primary.wait_for(1, timeout=30)
    mx.wait_log(r"Verified TLS connection established to mx1\.nausch\.org")


def test_fingerprint_not_listed_defers(backupmx_factory, tls_primary, pki, tmp_path):
    pin = _fingerprint(pki["mx1.tachtler.net"])  # another certificate of the same CA
    mx = backupmx_factory(_config(tmp_path, pki, f"fingerprint match={pin}"))
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("not pinned"))
    assert ("Server certificate not verified: mx1.nausch.org[127.0.0.2]: sha256 fingerprint "
            "of the certificate is not listed") in _deferred(mx, tls_primary)


def test_encrypt_to_a_primary_without_starttls_defers(backupmx_factory, primary, pki, tmp_path):
    mx = backupmx_factory(_config(tmp_path, pki, "encrypt"))
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("must encrypt"))
    assert "TLS is required, but was not offered by host mx1.nausch.org" in \
        _deferred(mx, primary)


def test_may_without_starttls_is_plain(backupmx_factory, primary, pki, tmp_path):
    mx = backupmx_factory(_config(tmp_path, pki, "may"))
    send(mx, "sender@sender.example", ["alice@nausch.org"], message("plain"))
    primary.wait_for(1, timeout=30)
    assert not _used_starttls(primary)


def test_check_names_a_bad_level_at_its_line(backupmx_factory, pki, tmp_path):
    mx = backupmx_factory(_config(tmp_path, pki, "verify"), start=False)
    table = tmp_path / "tls_policy"
    table.write_text("# policies\nnausch.org verify\n.example.org strict\n")
    res = mx.cli("check")
    assert res.returncode != 0
    assert f"{table}:3: smtp_tls_policy_maps: texthash:{table}: unknown TLS security level " \
           "'strict'" in res.stdout + res.stderr


def test_check_warns_that_dane_acts_as_a_lesser_level(backupmx_factory, pki, tmp_path):
    mx = backupmx_factory(_config(tmp_path, pki, "verify"), start=False)
    table = tmp_path / "tls_policy"
    table.write_text("nausch.org verify\n.example.org dane-only\n")
    res = mx.cli("check")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert (f"{table}:2: warning: TLS level dane-only is not supported (no DNSSEC/TLSA "
            "lookups): it acts as verify") in out
    assert "level dane " not in out
