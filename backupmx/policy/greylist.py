"""Greylisting with postgrey 1.37's algorithm (spec/policy-protocol.md §2), over a store.

A request is a dict of policy attributes; the answer is a policy action text, so
the same decision serves ``builtin:greylist`` in process and ``backupmx
policy-server`` over the wire.  Time is passed in, in whole seconds as postgrey
counts it.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import deque
from dataclasses import dataclass, field

from backupmx import __version__
from backupmx.policy.store import Client, GreylistStore, Triplet

AWL_INTERVAL = 3600  # a client's pass count grows at most once an hour
RECENT_INSTANCES = 10  # messages remembered so that one gets one X-Greylist header
# Reverse names that look like an access provider's dynamic pool are not trusted as
# a sender's identity (the rdns client key falls back to the network).
_GENERIC = re.compile(r"(\d+[-.]\d+[-.]\d+|\b(dyn|dynamic|dhcp|pool|dsl|adsl|ppp|cable|"
                      r"dial|dialup|client|host|customer|static|broadband)\b)", re.I)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Whitelist:
    """postgrey's whitelist files (§2.3), parsed."""

    client_names: tuple[str, ...] = ()  # a name matches itself and its subdomains
    client_regexes: tuple[re.Pattern[str], ...] = ()
    client_nets: tuple[Network, ...] = ()
    recipients: tuple[re.Pattern[str], ...] = ()

    def client(self, name: str, ip: str) -> bool:
        n = name.lower()
        if any(n == d or n.endswith("." + d) for d in self.client_names):
            return True
        if any(r.search(name) for r in self.client_regexes):
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr.version == net.version and addr in net for net in self.client_nets)

    def recipient(self, rcpt: str) -> bool:
        return any(r.search(rcpt) for r in self.recipients)


def _entries(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _regex(entry: str) -> re.Pattern[str] | None:
    if len(entry) > 1 and entry.startswith("/") and entry.endswith("/"):
        return re.compile(entry[1:-1], re.I)
    return None


def parse_whitelist(client_lines: list[str], recipient_lines: list[str]) -> Whitelist:
    """Client entries: /re/, IP[/nn], a.b.c (a /24; a.b too, as postgrey), name.

    Recipient entries: /re/, user@domain, user@ (any domain), domain (and subdomains);
    ``+ext`` forms of listed users match too.  ValueError on an unusable entry.
    """
    names: list[str] = []
    regexes: list[re.Pattern[str]] = []
    nets: list[Network] = []
    for e in _entries(client_lines):
        rx = _regex(e)
        if rx is not None:
            regexes.append(rx)
        elif re.fullmatch(r"\d{1,3}(\.\d{1,3}){1,2}", e):
            octets = (e.split(".") + ["0", "0"])[:3]
            nets.append(ipaddress.ip_network(".".join(octets) + ".0/24"))
        elif re.fullmatch(r"[\d.]+(/\d+)?|[0-9a-fA-F:]*:[0-9a-fA-F:.]*(/\d+)?", e):
            nets.append(ipaddress.ip_network(e, strict=False))
        else:
            names.append(e.lower().strip("."))
    rcpts: list[re.Pattern[str]] = []
    for e in _entries(recipient_lines):
        rx = _regex(e)
        if rx is not None:
            rcpts.append(rx)
            continue
        user, at, domain = e.partition("@")
        if at:
            dom = re.escape(domain) if domain else ".*"
            rcpts.append(re.compile(rf"^{re.escape(user)}(\+[^@]*)?@{dom}$", re.I))
        else:
            rcpts.append(re.compile(rf"^.*@(.*\.)?{re.escape(e)}$", re.I))
    return Whitelist(tuple(names), tuple(regexes), tuple(nets), tuple(rcpts))


@dataclass(frozen=True)
class GreylistSettings:
    delay: int = 300
    max_age: int = 35 * 86400
    retry_window: int = 2 * 86400
    action: str = "DEFER_IF_PERMIT"
    text: str = "Greylisted, see http://postgrey.schweikert.ch/help/%r.html"
    client_key: str = "subnet"  # subnet (postgrey's default) | host | rdns
    ipv4_cidr: int = 24
    ipv6_cidr: int = 64
    auto_whitelist: int = 5  # passes after which a client is no longer greylisted; 0 = off
    header: str = "X-Greylist: delayed %t seconds by backupmx-%v at %h; %d"
    hostname: str = "localhost"
    whitelist: Whitelist = field(default_factory=Whitelist)


def normalise_sender(sender: str) -> str:
    """One key for VERP/BATV variants: drop prvs= tags, +extensions, numbers in the local part."""
    user, at, domain = sender.partition("@")
    if not at:
        return sender
    if user.startswith("prvs="):
        parts = user.split("=")
        if len(parts) == 3:
            tag1 = re.match(r"[0-9a-z]{10}", parts[1])
            tag2 = re.match(r"[0-9a-z]{10}", parts[2])
            user = parts[1] if tag2 and not tag1 else parts[2]
    user = user.split("+", 1)[0]
    user = re.sub(r"\b\d+\b", "#", user)
    return f"{user}@{domain}"


def _org_domain(name: str) -> str:
    """The registrable-looking part of a host name: two labels, three under a short SLD."""
    labels = name.lower().rstrip(".").split(".")
    n = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-n:])


def client_key(ip: str, name: str, s: GreylistSettings) -> str:
    """The client part of a triplet.

    ``subnet``: the network of the client (a retry from the next address of the same
    farm matches); ``host``: the address itself; ``rdns``: for a forward-confirmed
    name that does not look like a dynamic pool, its organisational domain, so a
    provider that retries from another of its many networks is not greylisted again.
    """
    addr = ipaddress.ip_address(ip)
    if s.client_key == "rdns" and name != "unknown" and "." in name and not _GENERIC.search(name):
        return _org_domain(name)
    if s.client_key == "host":
        return addr.compressed
    bits = s.ipv4_cidr if addr.version == 4 else s.ipv6_cidr
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False).network_address)


@dataclass(frozen=True)
class Decision:
    action: str  # policy action text: DUNNO, PREPEND ..., or the greylist action
    verdict: str  # greylist | pass
    reason: str

    def log_line(self, attrs: dict[str, str]) -> str:
        """postgrey's log format: ``[QID: ]action=..., reason=..., client_name=...``."""
        qid = attrs.get("queue_id", "")
        info = [f"action={self.verdict}", f"reason={self.reason}"]
        info += [f"{a}={attrs[a]}" for a in ("client_name", "client_address", "sender",
                                             "recipient") if attrs.get(a)]
        return (f"{qid}: " if qid else "") + ", ".join(info)


def _date(now: float) -> str:
    return time.strftime("%a, %d %b %Y %T %Z", time.localtime(now))


def decide(
    attrs: dict[str, str],
    store: GreylistStore,
    s: GreylistSettings,
    now: int,
    recent: deque[str],
) -> Decision:
    """postgrey's per-request decision; updates the store and the recent-instances memory."""
    for a in ("client_address", "client_name", "recipient", "sender"):
        if a not in attrs:
            return Decision("DUNNO", "pass", f"attribute missing: {a}")
    ip, name, rcpt = attrs["client_address"], attrs["client_name"], attrs["recipient"]
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return Decision("DUNNO", "pass", "bad client_address")
    if s.whitelist.client(name, ip):
        return Decision("DUNNO", "pass", "client whitelist")
    if s.whitelist.recipient(rcpt):
        return Decision("DUNNO", "pass", "recipient whitelist")
    awl = store.client(ip) if s.auto_whitelist else None
    if awl is not None and awl.count >= s.auto_whitelist:
        if now >= awl.last + AWL_INTERVAL or awl.last > now:
            store.put_client(ip, Client(awl.count + 1, now))
        return Decision("DUNNO", "pass", "client AWL")

    key = f"{client_key(ip, name, s)}/{normalise_sender(attrs['sender'])}/{rcpt}".lower()
    old = store.triplet(key)
    first: float = now
    last_ok = False
    if old is not None:
        first = old.first
        last_ok = old.last - old.first >= s.delay
        if not last_ok and now - first > s.retry_window:
            first = now
        first = min(first, now)
    store.put_triplet(key, Triplet(first, now))
    diff = int(s.delay - (now - first))

    if s.auto_whitelist and diff <= 0 and not last_ok:
        if awl is None or now >= awl.last + AWL_INTERVAL:
            store.put_client(ip, Client((awl.count if awl else 0) + 1, now))

    if diff > 0:
        text = s.text
        if "etrn_domain" in attrs and not text[:1].isdigit():
            text = "4.2.0 " + text
        text = text.replace("%s", str(diff), 1).replace("%r", rcpt.rpartition("@")[2], 1)
        reason = "new" if now == first else f"early-retry ({diff}s missing)"
        return Decision(f"{s.action} {text}", "greylist", reason)

    instance = attrs.get("instance")
    if not last_ok and (instance is None or instance not in recent):
        if instance is not None:
            recent.appendleft(instance)
        delay = int(now - first)
        header = (s.header.replace("%t", str(delay), 1).replace("%v", __version__, 1)
                  .replace("%d", _date(now), 1).replace("%h", s.hostname, 1))
        return Decision(f"PREPEND {header}", "pass", f"triplet found, delay={delay}")
    return Decision("DUNNO", "pass", "triplet found")


def new_recent() -> deque[str]:
    return deque(maxlen=RECENT_INSTANCES)


@dataclass
class Greylister:
    """A store, its settings and the memory of recent messages; purges old entries hourly."""

    store: GreylistStore
    settings: GreylistSettings
    recent: deque[str] = field(default_factory=new_recent)
    last_purge: float = 0.0

    def check(self, attrs: dict[str, str], now: float | None = None) -> Decision:
        t = int(time.time() if now is None else now)
        if t - self.last_purge >= 3600:
            s = self.settings
            self.store.purge(t, s.max_age, s.delay, s.retry_window)
            self.last_purge = t
        return decide(attrs, self.store, self.settings, t, self.recent)
