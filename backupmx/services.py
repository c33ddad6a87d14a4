"""Everything a session or a delivery needs, built once per configuration.

A reload builds a new :class:`Services` and swaps it in; sessions pick the new one
up at their next command, so a reload never drops a connection.  Building
validates what only makes sense as a whole (restriction names, the relay
stopper rule, network lists) and reports each problem as ``FILE:LINE: message``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from backupmx import addr, adminauth
from backupmx.config import Config, ConfigError, ConfigIssue
from backupmx.dns import Resolver
from backupmx.maps import MapError, Maps
from backupmx.netlist import DomainList, NetList
from backupmx.policy.runtime import PolicyServices
from backupmx.restrictions.engine import (
    REGISTRY,
    RELAY_STOPPERS,
    RestrictionSyntaxError,
    RList,
    compile_list,
)
from backupmx.verify.service import Verifier, verifier_for

MAX_WORKERS = 64  # smtpd_worker_processes: more processes than this is a typo, not a plan

# Restriction list parameters and the kind of list each one is.
LIST_PARAMS = {
    "client": "smtpd_client_restrictions",
    "helo": "smtpd_helo_restrictions",
    "sender": "smtpd_sender_restrictions",
    "relay": "smtpd_relay_restrictions",
    "recipient": "smtpd_recipient_restrictions",
    "data": "smtpd_data_restrictions",
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

    def is_own_ip(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip).compressed in self.own_ips
        except ValueError:
            return False

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
    lists: dict[str, RList] = {}
    for kind, param in LIST_PARAMS.items():
        try:
            lists[kind] = compile_list(param, cfg.list(param), kind)
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
    for item in cfg.list("proxy_interfaces"):
        try:
            own.add(item.strip("[]"))
        except ValueError:
            issue("proxy_interfaces", f"proxy_interfaces: bad address {item!r}")
    own_ips = frozenset(ipaddress.ip_address(a).compressed for a in own if _is_ip(a))
    literals = frozenset(
        f"[{a}]" if ":" not in a else f"[ipv6:{a}]" for a in own_ips
    )

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
        own_literals=literals,
        lists=lists,
        listen=listen,
        bare_newline_exclusions=bare_exclusions,
        event_limit_exceptions=event_exceptions,
        policy=PolicyServices(cfg),
        verifier=verifier,
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


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def warnings(svc: Services) -> list[ConfigIssue]:
    """Things that work but that a mail administrator should hear about."""
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
    if not cfg.bool("smtpd_delay_reject"):
        out.append(ConfigIssue(
            cfg.path, cfg.line_of("smtpd_delay_reject") or 0,
            "warning: smtpd_delay_reject = no is not supported: the client, HELO and sender "
            "restrictions are applied at each RCPT TO, as with yes",
        ))
    out += _verify_order_warnings(svc)
    out += _admin_warnings(cfg)
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
