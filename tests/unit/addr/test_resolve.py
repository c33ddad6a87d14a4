"""The open-relay vectors of smtp-protocol-limits.md §5.1/§5.2 through parse + resolve."""

import pytest

from backupmx.addr import Resolved, domain_ok, is_fqdn, parse_path, resolve

T = "mx1.tachtler.net"
IP = "[127.0.0.3]"
V = "nmap.scanme.org"
N = "nausch.org"
LOCAL = {T, IP, "[127.0.0.1]"}


def is_local(domain: str) -> bool:
    return domain in LOCAL


def run(arg: str) -> Resolved:
    return resolve(parse_path(arg).address, is_local, T)


FOREIGN = Resolved(f"relaytest@{V}", V, False, False)


@pytest.mark.parametrize(
    ("number", "rcpt"),
    [
        (1, f"<relaytest@{V}>"),
        (5, f"<relaytest%{V}@{IP}>"),
        (6, f"<relaytest%{V}@{T}>"),
        (7, f'<"relaytest@{V}">'),
        (8, f'<"relaytest%{V}">'),
        (9, f"<relaytest@{V}@{IP}>"),
        (10, f'<"relaytest@{V}"@{IP}>'),
        (11, f"<relaytest@{V}@{T}>"),
        (12, f"<@{IP}:relaytest@{V}>"),
        (13, f"<@{T}:relaytest@{V}>"),
        (14, f"<{V}!relaytest>"),
        (15, f"<{V}!relaytest@{IP}>"),
        (16, f"<{V}!relaytest@{T}>"),
    ],
)
def test_nmap_recipients_resolve_to_the_foreign_domain(number: int, rcpt: str) -> None:
    assert run(rcpt) == FOREIGN


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("<>", None),
        (f"<antispam@{V}>", Resolved(f"antispam@{V}", V, False, False)),
        (f"<antispam@{T}>", Resolved(f"antispam@{T}", T, False, True)),
        (f"<antispam@{IP}>", Resolved(f"antispam@{IP}", IP, False, True)),
    ],
)
def test_nmap_senders(sender: str, expected: Resolved | None) -> None:
    parsed = parse_path(sender)
    if expected is None:
        assert parsed.address == ""
    else:
        assert resolve(parsed.address, is_local, T) == expected


@pytest.mark.parametrize(
    "rcpt", [f'"relaytest%{V}"', f"{V}!relaytest"]  # nmap 8 and 14: 504 as sent
)
def test_nmap_unqualified_recipients_are_not_fqdn(rcpt: str) -> None:
    assert is_fqdn(parse_path(rcpt).address) is False


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        (f"<victim@{V}.>", Resolved(f"victim@{V}", V, False, False)),
        ("<victim@NMAP.ScanMe.ORG>", Resolved("victim@NMAP.ScanMe.ORG", V, False, False)),
        (f"<victim%{V}@{N}>", Resolved(f"victim%{V}@{N}", N, True, False)),
        (f'<"victim@{V}"@{N}>', Resolved(f"victim@{V}@{N}", N, True, False)),
        (f"<{V}!victim@{N}>", Resolved(f"{V}!victim@{N}", N, True, False)),
        (f"<victim@{V}@{N}>", Resolved(f"victim@{V}@{N}", N, True, False)),
        (f"<victim%{V}%{N}@{N}>", Resolved(f"victim%{V}%{N}@{N}", N, True, False)),
        (f"<@{N}:victim@{V}>", Resolved(f"victim@{V}", V, False, False)),
        ("<victim@[198.51.100.9]>",
         Resolved("victim@[198.51.100.9]", "[198.51.100.9]", False, False)),
        (f"<victim%{V}@[127.0.0.1]>", Resolved(f"victim@{V}", V, False, False)),
        ("<victim@[127.0.0.1]>", Resolved("victim@[127.0.0.1]", "[127.0.0.1]", False, True)),
        (f"victim@{V}", Resolved(f"victim@{V}", V, False, False)),
    ],
)
def test_classic_relay_vectors(rcpt: str, expected: Resolved) -> None:
    assert run(rcpt) == expected


def test_bare_ip_domain_is_bad_syntax() -> None:
    assert domain_ok(run("<victim@198.51.100.9>").address) is False


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("postmaster", Resolved(f"postmaster@{T}", T, False, True)),
        (f"@{T}", Resolved(f"MAILER-DAEMON@{T}", T, False, True)),
        (f"user@{T}.", Resolved(f"user@{T}", T, False, True)),
        (f"a%b%{T}@{T}", Resolved("a@b", "b", False, False)),
        (f"user@{N}..", Resolved(f"user@{N}..", f"{N}..", False, False)),
        ("user@.", Resolved("user@.", ".", False, False)),
    ],
)
def test_resolver_corner_cases(address: str, expected: Resolved) -> None:
    assert resolve(address, is_local, T) == expected
