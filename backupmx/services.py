"""Everything a session or a delivery needs, built once per configuration.

A reload builds a new :class:`Services` and swaps it in; sessions pick the new one
up at their next command, so a reload never drops a connection.  Building
validates what only makes sense as a whole (restriction names, the relay
stopper rule, network lists) and reports each problem as ``FILE:LINE: message``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from backupmx import addr, adminauth
from backupmx.config import Config, ConfigError, ConfigIssue
from backupmx.dns import DnsTempError, Resolver
from backupmx.log import log
from backupmx.maps import MapError, Maps
from backupmx.maps.base import inline_lines, logical_lines, read_source
from backupmx.maps.definitions import definition_issues, definition_warnings
from backupmx.netlist import DomainList, NetList
from backupmx.policy.runtime import PolicyServices
from backupmx.redisstore import parse_url
from backupmx.restrictions.engine import (
    REGISTRY,
    RELAY_STOPPERS,
    RestrictionSyntaxError,
    RList,
    compile_list,
)
from backupmx.smtp import tlspolicy
from backupmx.verify.service import Verifier, verifier_for

OWN_NAMES_RETRY = 60.0  # seconds before a proxy_interfaces name that failed is asked again
MAX_WORKERS = 64  # smtpd_worker_processes: more processes than this is a typo, not a plan

# Restriction list parameters and the kind of list each one is.
LIST_PARAMS = {
    "client": "smtpd_client_restrictions",
    "helo": "smtpd_helo_restrictions",
    "sender": "smtpd_sender_restrictions",
    "relay": "smtpd_relay_restrictions",
    "recipient": "smtpd_recipient_restrictions",
    "data": "smtpd_data_restrictions",
    "end_of_data": "smtpd_end_of_data_restrictions",
    "etrn": "smtpd_etrn_restrictions",
}


def parse_listen(item: str) -> tuple[str, int]:
    """``IP:PORT`` or ``[IPv6]:PORT``; ValueError when malformed."""
    if item.startswith("["):
        host, sep, port = item[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:PORT, got {item!r}")
    else:
        host, sep, port = item.rpartition(":")
        if not sep:
            raise ValueError(f"expected IP:PORT, got {item!r}")
    ipaddress.ip_address(host)
    p = int(port)
    if not 0 < p < 65536:
        raise ValueError(f"port out of range in {item!r}")
    return host, p


def _interface_addresses() -> set[str]:
    out = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(str(info[4][0]))
    except OSError:
        pass
    return out


def _parent_style(cfg: Config, feature: str) -> bool:
    return feature in [x.lower() for x in cfg.list("parent_domain_matches_subdomains")]


@dataclass
class Services:
    cfg: Config
    resolver: Resolver
    maps: Maps
    mynetworks: NetList
    mydestination: DomainList
    relay_domains: DomainList
    mx_backup_networks: NetList | None
    fast_flush_domains: DomainList
    own_ips: frozenset[str]
    own_literals: frozenset[str]
    lists: dict[str, RList]
    listen: list[tuple[str, int]]
    bare_newline_exclusions: NetList
    event_limit_exceptions: NetList
    policy: PolicyServices  # policy-server connections and the greylist store
    verifier: Verifier  # process-wide, survives reloads (backupmx/verify/service.py)
    _resolved: dict[str, addr.Resolved] = field(default_factory=dict)
    #: host names in proxy_interfaces whose addresses are not in own_ips yet
    own_names: tuple[str, ...] = ()
    _own_names_due: float = 0.0  # when (monotonic) to ask the DNS for them again

    def is_own_ip(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip).compressed in self.own_ips
        except ValueError:
            return False

    async def resolve_own_names(self) -> list[tuple[str, str]]:
        """Count the addresses of the host names in proxy_interfaces as this host's.

        Postfix resolves them when it starts; building services is synchronous and
        the resolver is not, so a server does this before it uses a configuration,
        and a check that needs them (permit_mx_backup) first asks again for a name
        that did not resolve, at most once a minute.  Returns (name, reason) for
        every name that did not resolve (``check`` warns about them).
        """
        failed: list[tuple[str, str]] = []
        own = set(self.own_ips)
        for name in self.own_names:
            try:
                found = await self.resolver.addresses(name)
            except DnsTempError as e:
                failed.append((name, str(e)))
                continue
            if not found:
                failed.append((name, "Host not found"))
            own.update(ipaddress.ip_address(a).compressed for a in found)
        self.own_ips = frozenset(own)
        self.own_literals = _literals(self.own_ips)
        self.own_names = tuple(name for name, _ in failed)
        self._own_names_due = time.monotonic() + OWN_NAMES_RETRY
        return failed

    async def own_addresses(self) -> None:
        """Before using this configuration, and before a decision about this host:
        resolve the proxy_interfaces names still missing (logged when they fail)."""
        if self.own_names and time.monotonic() >= self._own_names_due:
            for name, reason in await self.resolve_own_names():
                log.warning("smtpd", f"proxy_interfaces: cannot resolve host name {name}: "
                            f"{reason}; it does not count as this host yet")

    def is_local_domain(self, domain: str) -> bool:
        """This host is the final destination: mydestination or an own address literal."""
        d = domain.lower().rstrip(".")
        if d.startswith("["):
            return d in self.own_literals
        return self.mydestination.match(d)

    def resolve(self, address: str) -> addr.Resolved:
        """The canonical form of an address (cached: several checks ask per RCPT)."""
        hit = self._resolved.get(address)
        if hit is None:
            hit = addr.resolve(address, self.is_local_domain, self.cfg.str("myhostname"))
            if len(self._resolved) > 10000:
                self._resolved.clear()
            self._resolved[address] = hit
        return hit

    def rcpt_lists(self) -> list[tuple[str, RList]]:
        first, second = ("relay", "recipient")
        if not self.cfg.bool("smtpd_relay_before_recipient_restrictions"):
            first, second = second, first
        return [(k, self.lists[k]) for k in ("client", "helo", "sender", first, second)]


def build(cfg: Config, resolver: Resolver | None = None, maps: Maps | None = None) -> Services:
    """Build the services for ``cfg``; raise ConfigError listing every problem."""
    issues: list[ConfigIssue] = []

    def issue(param: str, msg: str) -> None:
        issues.append(ConfigIssue(cfg.path, cfg.line_of(param) or 0, msg))

    maps = maps or Maps()
    issues += tls_policy_issues(cfg, maps)
    issues += definition_issues(cfg, maps)
    lists: dict[str, RList] = {}
    for kind, param in LIST_PARAMS.items():
        try:
            items = _relay_items(cfg) if kind == "relay" else cfg.list(param)
            lists[kind] = compile_list(param, items, kind)
        except RestrictionSyntaxError as e:
            issue(param, str(e))
            lists[kind] = RList(param)
    relay_names = set(lists["relay"].names()) | set(lists["recipient"].names())
    if not relay_names & RELAY_STOPPERS:
        issue(
            "smtpd_relay_restrictions" if cfg.is_set("smtpd_relay_restrictions")
            else "smtpd_recipient_restrictions",
            "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at "
            "least one working instance of: reject_unauth_destination, defer_unauth_destination, "
            "reject, defer, defer_if_permit (otherwise this host is an open relay)",
        )

    def netlist(param: str, feature: str) -> NetList:
        try:
            return NetList(cfg.list(param), maps, _parent_style(cfg, feature))
        except Exception as e:
            issue(param, f"{param}: {e}")
            return NetList([], maps, True)

    def domainlist(param: str, feature: str) -> DomainList:
        try:
            return DomainList(cfg.list(param), maps, _parent_style(cfg, feature))
        except Exception as e:
            issue(param, f"{param}: {e}")
            return DomainList([], maps, True)

    bare_exclusions = netlist("smtpd_forbid_bare_newline_exclusions", "mynetworks")
    event_exceptions = netlist("smtpd_client_event_limit_exceptions", "mynetworks")
    mynetworks = netlist("mynetworks", "mynetworks")
    mydestination = domainlist("mydestination", "mydestination")
    relay_domains = domainlist("relay_domains", "relay_domains")
    fast_flush = domainlist("fast_flush_domains", "fast_flush_domains")
    mxb = (
        netlist("permit_mx_backup_networks", "permit_mx_backup_networks")
        if cfg.list("permit_mx_backup_networks")
        else None
    )

    if not 0 <= cfg.int("smtpd_worker_processes") <= MAX_WORKERS:
        issue("smtpd_worker_processes",
              f"smtpd_worker_processes: {cfg.int('smtpd_worker_processes')} is not between 0 "
              f"and {MAX_WORKERS}")
    listen: list[tuple[str, int]] = []
    for item in cfg.list("smtpd_listen"):
        try:
            listen.append(parse_listen(item))
        except ValueError as e:
            issue("smtpd_listen", f"smtpd_listen: {e}")
    own: set[str] = set()
    for host, _port in listen:
        if host in ("0.0.0.0", "::"):
            own |= _interface_addresses()
        else:
            own.add(host)
    own_names: list[str] = []
    for item in cfg.list("proxy_interfaces"):
        text = item.strip("[]")
        if _is_ip(text):
            own.add(text)
        elif addr.valid_hostname(text.rstrip(".")):
            own_names.append(text.rstrip(".").lower())
        else:
            issue("proxy_interfaces",
                  f"proxy_interfaces: {item!r} is neither an address nor a host name")
    own_ips = frozenset(ipaddress.ip_address(a).compressed for a in own if _is_ip(a))

    issues += _cluster_issues(cfg)
    try:
        verifier = verifier_for(cfg.str("address_verify_map"))
    except ValueError as e:
        issue("address_verify_map", str(e))
        verifier = verifier_for("")
    if resolver is None:
        try:
            resolver = Resolver(cfg.list("dns_nameservers"))
        except ValueError as e:
            issue("dns_nameservers", f"dns_nameservers: {e}")
            resolver = Resolver()
    svc = Services(
        cfg=cfg,
        resolver=resolver,
        maps=maps,
        mynetworks=mynetworks,
        mydestination=mydestination,
        relay_domains=relay_domains,
        mx_backup_networks=mxb,
        fast_flush_domains=fast_flush,
        own_ips=own_ips,
        own_literals=_literals(own_ips),
        lists=lists,
        listen=listen,
        bare_newline_exclusions=bare_exclusions,
        event_limit_exceptions=event_exceptions,
        policy=PolicyServices(cfg),
        verifier=verifier,
        own_names=tuple(own_names),
    )
    for kind, param in LIST_PARAMS.items():
        for step in lists[kind].steps:
            validate = REGISTRY[step.name].validate
            if validate is None:
                continue
            try:
                validate(step.arg, svc)
            except (MapError, ValueError) as e:
                issue(param, f"{param}: {step}: {e}")
    if issues:
        raise ConfigError(issues)
    return svc


def _cluster_issues(cfg: Config) -> list[ConfigIssue]:
    """cluster_store must be a Redis URL; the node's name must be a usable word."""
    out = []
    store = cfg.str("cluster_store")
    if store:
        try:
            parse_url(store)
        except ValueError as e:
            out.append(ConfigIssue(cfg.path, cfg.line_of("cluster_store") or 0,
                                   f"cluster_store: {e}"))
        name = cfg.str("cluster_node_name")
        if not name or not name.isprintable() or any(c.isspace() for c in name):
            out.append(ConfigIssue(cfg.path, cfg.line_of("cluster_node_name") or 0,
                                   f"cluster_node_name: {name!r} is not a name: one word, "
                                   "printable, no white space"))
    if cfg.time("cluster_publish_interval") < 1:
        out.append(ConfigIssue(cfg.path, cfg.line_of("cluster_publish_interval") or 0,
                               "cluster_publish_interval: at least 1s"))
    return out


def _relay_items(cfg: Config) -> list[str]:
    """smtpd_relay_restrictions as evaluated.

    The default's defer_unauth_destination (454) is a safety net for a configuration
    that forgot its relay decision; one whose recipient list has its own
    reject_unauth_destination (written for Postfix before 2.10) has decided that a relay
    attempt is refused for good, and with the relay list first it would otherwise never
    get there.  So the default denies with reject_unauth_destination (554) then.
    """
    items = cfg.list("smtpd_relay_restrictions")
    recipient = [i.lower() for i in cfg.list("smtpd_recipient_restrictions")]
    if cfg.is_set("smtpd_relay_restrictions") or "reject_unauth_destination" not in recipient:
        return items
    return ["reject_unauth_destination" if i.lower() == "defer_unauth_destination" else i
            for i in items]


def _literals(ips: frozenset[str]) -> frozenset[str]:
    """The address literals (``[1.2.3.4]``, ``[ipv6:...]``) of this host's addresses."""
    return frozenset(f"[{a}]" if ":" not in a else f"[ipv6:{a}]" for a in ips)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def tls_policy_issues(cfg: Config, maps: Maps) -> list[ConfigIssue]:
    """Each smtp_tls_policy_maps value that is no TLS policy, at its FILE:LINE."""
    out = []
    for spec, path, number, value in _tls_policy_values(cfg, maps):
        if value is None:
            out.append(ConfigIssue(path, number, spec))
            continue
        try:
            tlspolicy.parse(value)
        except tlspolicy.PolicyError as e:
            out.append(ConfigIssue(path, number, f"smtp_tls_policy_maps: {spec}: {e}"))
    return out


def _tls_policy_values(cfg: Config,
                       maps: Maps) -> Iterator[tuple[str, str, int, str | None]]:
    """(spec, file, line, value) of every smtp_tls_policy_maps entry that ``check`` can
    place; a table that cannot be read gives its error text as spec and no value."""
    for spec in cfg.list("smtp_tls_policy_maps"):
        kind, _, name = spec.partition(":")
        try:
            table = maps.get(spec)
            if table.source is not None and kind.lower() in ("hash", "btree", "texthash"):
                lines = logical_lines(read_source(spec, table.source), table.source, [])
                located = [(table.source, n, text.split(None, 1)) for n, text in lines]
            else:
                line = cfg.line_of("smtp_tls_policy_maps") or 0
                located = [(cfg.path, line, text.split("=", 1))
                           for text in (inline_lines(spec, name) if kind == "inline" else [])]
        except MapError as e:
            yield str(e), cfg.path, cfg.line_of("smtp_tls_policy_maps") or 0, None
            continue
        for path, number, words in located:
            yield spec, path, number, words[1] if len(words) > 1 else ""


def _dane_warnings(cfg: Config, maps: Maps) -> list[ConfigIssue]:
    """dane and dane-only need DNSSEC-validated TLSA records, which backupmx does not
    look up: say where they are set and what they act as instead."""
    acts = {"dane": "may", "dane-only": "verify"}
    found = []
    level = cfg.str("smtp_tls_security_level").lower()
    if level in acts:
        found.append((cfg.path, cfg.line_of("smtp_tls_security_level") or 0, level))
    for _spec, path, number, value in _tls_policy_values(cfg, maps):
        word = (value or "").split()[:1]
        if word and word[0].lower() in acts:
            found.append((path, number, word[0].lower()))
    return [ConfigIssue(path, number, f"warning: TLS level {level} is not supported (no "
                        f"DNSSEC/TLSA lookups): it acts as {acts[level]}")
            for path, number, level in found]


def warnings(svc: Services, resolve_names: bool = True) -> list[ConfigIssue]:
    """Things that work but that a mail administrator should hear about.

    ``check`` also resolves the proxy_interfaces names (outside an event loop); ``serve``
    does not ask for that here: the master resolves them at start and logs failures.
    """
    cfg = svc.cfg
    out: list[ConfigIssue] = []
    names = set(svc.lists["relay"].names()) | set(svc.lists["recipient"].names())
    if "permit_mx_backup" in names and svc.mx_backup_networks is None:
        param = "smtpd_recipient_restrictions"
        if "permit_mx_backup" in svc.lists["relay"].names():
            param = "smtpd_relay_restrictions"
        out.append(
            ConfigIssue(
                cfg.path,
                cfg.line_of(param) or 0,
                "warning: permit_mx_backup is in effect without permit_mx_backup_networks: any "
                "domain can name this host as its MX and relay through it",
            )
        )
    out += _verify_order_warnings(svc)
    if resolve_names and svc.own_names:
        line = cfg.line_of("proxy_interfaces") or 0
        out += [ConfigIssue(cfg.path, line, f"warning: proxy_interfaces: cannot resolve host "
                            f"name {name}: {reason}; it does not count as this host")
                for name, reason in asyncio.run(svc.resolve_own_names())]
    out += _admin_warnings(cfg)
    out += _dane_warnings(cfg, svc.maps)
    out += definition_warnings(cfg, svc.maps)
    return out


def _admin_warnings(cfg: Config) -> list[ConfigIssue]:
    """An admin_group without a group, a token file that serve would not use."""
    out = []
    problem = adminauth.group_problem(cfg)
    if problem:
        out.append(ConfigIssue(cfg.path, cfg.line_of("admin_group") or 0, f"warning: {problem}"))
    path = cfg.str("admin_token_file")
    problem = adminauth.read_token(path)[1] if path else None
    if problem:
        out.append(ConfigIssue(cfg.path, cfg.line_of("admin_token_file") or 0,
                               f"warning: {problem}: {adminauth.NO_TOKEN}"))
    return out


_RELAY_DECISIONS = ("permit_mx_backup", "reject_unauth_destination", "defer_unauth_destination")


def _verify_order_warnings(svc: Services) -> list[ConfigIssue]:
    """reject_unverified_recipient before the relay decision: say what backupmx does."""
    cfg = svc.cfg
    before: list[str] = []
    for _kind, rlist in svc.rcpt_lists():
        names = rlist.names()
        if "reject_unverified_recipient" not in names:
            before += names
            continue
        before += names[: names.index("reject_unverified_recipient")]
        if any(n in _RELAY_DECISIONS for n in before):
            return []
        return [ConfigIssue(
            cfg.path, cfg.line_of(rlist.param) or 0,
            f"warning: {rlist.param}: reject_unverified_recipient comes before "
            "permit_mx_backup/reject_unauth_destination; Postfix would then probe the mail "
            "servers of any domain a client names, backupmx probes only destinations it "
            "relays to (relay_domains, backed-up domains) and leaves other recipients to "
            "the relay check",
        )]
    return []
