"""The one parameter table: every supported name, its type, default and a one-line description.

`check`, the reference documentation and the code all read this table, so a parameter
exists exactly when it is declared here. Defaults are Postfix 3.7's (at a modern
compatibility level) except where backupmx deliberately differs, which the doc line says.

A Postfix parameter that backupmx accepts (so that a Postfix main.cf loads) but does not
act on carries the reason in `unsupported`: `check` then warns where the file sets it and
the reference says "not supported". With `supported` only that one value (backupmx's own
behaviour) is accepted silently. tests/unit/config/test_params_used.py proves that every
other parameter is read by the code.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ParamType = Literal["str", "bool", "int", "time", "size", "list", "code", "choice", "port"]

#: Gives the expanded value of another parameter, for computed defaults.
ValueOf = Callable[[str], str]


@dataclass(frozen=True)
class Param:
    """One parameter.

    `default` is main.cf text, expanded like a value from the file. When `compute` is set
    the default is derived from the running host instead, and `default` only describes it.
    `unit` is the default unit of a time; `lo`..`hi` bound a reply code; `choices` lists
    the allowed words of a choice; `raw` values are templates that their user expands with
    its own variables (`$rbl_code` ...), so the configuration leaves them as written.
    `unsupported` says why backupmx does not act on the parameter; with `supported` that
    holds only for values other than this one.
    """

    name: str
    type: ParamType
    default: str
    doc: str
    unit: str = "s"
    choices: tuple[str, ...] = ()
    lo: int = 0
    hi: int = 0
    raw: bool = False
    compute: Callable[[ValueOf], str] | None = None
    unsupported: str = ""
    supported: str | None = None

    def support_warning(self, written: str) -> str:
        """What `check` says where the file sets this parameter to ``written`` (a value
        other than `supported`); empty for a supported parameter."""
        if not self.unsupported:
            return ""
        what = self.name if self.supported is None else f"{self.name} = {written}"
        return f"warning: {what} is not supported: {self.unsupported}"


@functools.cache
def host_fqdn() -> str:
    """This machine's fully qualified name; `.localdomain` is added when no name has a dot."""
    for name in (socket.getfqdn(), socket.gethostname()):
        if "." in name.strip("."):
            return name.strip(".").lower()
    return f"{socket.gethostname() or 'localhost'}.localdomain".lower()


def _cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parent_domain(value_of: ValueOf) -> str:
    """$myhostname without its first label, as Postfix derives mydomain."""
    _, _, rest = value_of("myhostname").partition(".")
    return rest or "localdomain"


def _s(name: str, default: str, doc: str) -> Param:
    return Param(name, "str", default, doc)


def _b(name: str, default: str, doc: str) -> Param:
    return Param(name, "bool", default, doc)


def _i(name: str, default: str, doc: str) -> Param:
    return Param(name, "int", default, doc)


def _z(name: str, default: str, doc: str) -> Param:
    return Param(name, "size", default, doc)


def _t(name: str, default: str, unit: str, doc: str) -> Param:
    return Param(name, "time", default, doc, unit=unit)


def _l(name: str, default: str, doc: str) -> Param:
    return Param(name, "list", default, doc)


def _c(name: str, default: str, lo: int, hi: int, doc: str) -> Param:
    return Param(name, "code", default, doc, lo=lo, hi=hi)


def _ch(name: str, default: str, choices: tuple[str, ...], doc: str) -> Param:
    return Param(name, "choice", default, doc, choices=choices)


def _no(param: Param, reason: str, supported: str | None = None) -> Param:
    """``param`` accepted but not acted on, for ``reason`` (except the value ``supported``)."""
    return dataclasses.replace(param, unsupported=reason, supported=supported)


_TEMPFAIL = ("defer_if_permit", "defer")
_FACILITIES = ("", "mail", "daemon", "user", *(f"local{i}" for i in range(8)))

_TABLE: tuple[Param, ...] = (
    # identity and networks
    Param("myhostname", "str", "this host's fully qualified name", "The Internet name of this "
          "mail system; used in the greeting, Received: headers and the EHLO of deliveries",
          compute=lambda value_of: host_fqdn()),
    Param("mydomain", "str", "$myhostname without its first label", "The domain of this mail "
          "system; the default for several other parameters", compute=_parent_domain),
    _s("myorigin", "$myhostname", "Domain that locally generated mail (bounces, probes) "
       "appears to come from"),
    _l("mydestination", "$myhostname, localhost.$mydomain, localhost", "Domains this host is "
       "the final destination for; backupmx delivers none of them locally"),
    _l("mynetworks", "127.0.0.0/8 [::1]/128", "Trusted client networks for permit_mynetworks "
       "(backupmx: loopback only by default, as mynetworks_style = host)"),
    _no(_ch("mynetworks_style", "host", ("host", "subnet", "class"), "How Postfix derives "
            "mynetworks from the network interfaces"),
        "mynetworks is never derived from the interfaces; set mynetworks", "host"),
    _l("proxy_interfaces", "", "Addresses or host names of a proxy or NAT in front of this "
       "host; they count as this host for permit_mx_backup and loop detection"),
    _no(_l("inet_interfaces", "all", "Postfix's addresses to listen on"),
        "backupmx listens on smtpd_listen, and those addresses (with proxy_interfaces) are "
        "the addresses of this host", "all"),
    _no(_l("inet_protocols", "all", "Address families to use: all, ipv4, ipv6"),
        "backupmx uses the families of the smtpd_listen addresses and of what DNS returns",
        "all"),
    _b("smtpd_peername_lookup", "yes", "Look up the client's reverse name; no means every "
       "client is named unknown"),
    _s("compatibility_level", "3.6", "Accepted for Postfix configurations; backupmx's "
       "defaults are those of level 3.6 whatever the value"),
    _s("mail_owner", "backupmx", "The system account that owns the queue and data files; "
       "serve started as root switches to it after binding its ports"),
    _s("smtpd_banner", "$myhostname ESMTP backupmx", "Text after 220 in the SMTP greeting"),
    _s("syslog_name", "backupmx", "Tag before /smtpd, /qmgr ... in every log line"),
    _ch("syslog_facility", "", _FACILITIES, "Syslog facility to log to the local syslog "
        "socket with; empty means no syslog"),
    _s("maillog_file", "", "File to log to with syslog-style timestamps; - or /dev/stdout "
       "for standard output"),
    # backupmx's own
    _l("smtpd_listen", "127.0.0.1:2525", "Addresses to accept SMTP on, IP:PORT or "
       "[IPv6]:PORT; they count as this host"),
    _l("dns_nameservers", "", "Resolvers to ask, IP or IP:PORT; empty means those in "
       "/etc/resolv.conf"),
    _s("admin_listen", "127.0.0.1:9025", "Loopback address of the admin HTTP endpoint "
       "(/metrics, /healthz, the queue listing; queue actions only with the admin token)"),
    _s("admin_group", "", "Group whose members may, besides root, delete, hold and release "
       "queued mail; empty means root only (listing and flushing are open to local users)"),
    _s("admin_token_file", "", "File only root may read with the bearer token that allows "
       "queue actions over admin_listen; read at start; empty means HTTP is read-only"),
    _s("postmaster_address", "postmaster@$mydomain", "Where mail for postmaster of this host "
       "is forwarded"),
    _b("standby_while_primary_up", "no", "Answer 450 4.7.1 to the recipients of a domain "
       "while its primary is known healthy (a delivery or health probe succeeded within "
       "standby_health_expire_time); mynetworks clients are still served"),
    _t("standby_probe_interval", "60s", "s", "With standby_while_primary_up: how often the "
       "primary of each relayed destination is probed (connect, EHLO, QUIT)"),
    _t("standby_health_expire_time", "180s", "s", "With standby_while_primary_up: how long a "
       "successful delivery or probe counts as the primary being healthy; after that, or the "
       "moment it is found unreachable, its recipients are accepted again"),
    _s("alert_webhook_url", "", "URL that each alert is POSTed to as JSON (kind, destination, "
       "text, time, host, counts), tried again with backoff; empty means alerts are only "
       "logged (and mailed with alert_notify_postmaster)"),
    _t("alert_webhook_timeout", "10s", "s", "Longest one POST to alert_webhook_url may take"),
    _b("alert_notify_postmaster", "no", "Also mail each alert to postmaster_address, queued "
       "and delivered like any other mail"),
    _t("alert_queue_age_threshold", "4h", "h", "Alert once when the oldest message in the "
       "queue (not on hold) is older than this; re-armed when none is; 0 is never"),
    _z("alert_disk_free_threshold", "1073741824", "Alert once when the queue directory's file "
       "system has fewer bytes free than this; re-armed when it has a tenth more; 0 is never"),
    # relaying
    _l("relay_domains", "", "Domains this host relays to (besides permit_mx_backup domains)"),
    _l("relay_recipient_maps", "", "Tables of valid recipients in relay_domains; empty "
       "accepts every recipient there"),
    _l("permit_mx_backup_networks", "", "Networks the primary MX of a permit_mx_backup domain "
       "must be in; empty allows any domain that names this host as backup MX"),
    _l("parent_domain_matches_subdomains", "debug_peer_list, fast_flush_domains, mynetworks, "
       "permit_mx_backup_networks, qmqpd_authorized_clients, relay_domains, smtpd_access_maps",
       "Features in which example.com also matches its subdomains"),
    _b("allow_untrusted_routing", "no", "Relay or permit recipients with sender-specified "
       "routing (user%host@domain, host!user@domain)"),
    _no(_l("virtual_alias_domains", "", "Virtual alias domains (final destinations)"),
        "backupmx is the final destination of no domain; a domain it backs up belongs in "
        "relay_domains", ""),
    _no(_l("virtual_mailbox_domains", "", "Virtual mailbox domains (final destinations)"),
        "backupmx is the final destination of no domain; a domain it backs up belongs in "
        "relay_domains", ""),
    _no(_l("local_recipient_maps", "", "Valid local recipients"), "backupmx has no local "
        "delivery: mail for $mydestination other than postmaster is refused as unknown", ""),
    _s("recipient_delimiter", "", "Separator of address extensions (user+ext); empty is off"),
    # restrictions
    _l("smtpd_client_restrictions", "", "Restrictions on the client, evaluated at RCPT TO"),
    _l("smtpd_helo_restrictions", "", "Restrictions on the HELO/EHLO name, evaluated at "
       "RCPT TO"),
    _l("smtpd_sender_restrictions", "", "Restrictions on MAIL FROM, evaluated at RCPT TO"),
    _l("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, "
       "permit_mx_backup, defer_unauth_destination", "Relay control at RCPT TO (backupmx: "
       "permit_mx_backup is in the default, unlike Postfix; while this is not set and "
       "smtpd_recipient_restrictions has reject_unauth_destination, the default ends in "
       "reject_unauth_destination instead, so that list's 554 stays the answer)"),
    _l("smtpd_recipient_restrictions", "", "Restrictions on RCPT TO"),
    _l("smtpd_data_restrictions", "", "Restrictions on the DATA command"),
    _l("smtpd_end_of_data_restrictions", "", "Restrictions after the end of message data, "
       "before it is stored"),
    _l("smtpd_etrn_restrictions", "", "Restrictions on the ETRN command"),
    _no(_b("smtpd_delay_reject", "yes", "Client, HELO and sender rejects wait for RCPT TO"),
        "the client, HELO and sender restrictions are applied at each RCPT TO, as with yes",
        "yes"),
    _b("smtpd_helo_required", "no", "Require HELO or EHLO before MAIL FROM and ETRN"),
    _s("smtpd_null_access_lookup_key", "<>", "Access-map key used for the null sender"),
    _b("smtpd_reject_unlisted_recipient", "yes", "Reject recipients not in the recipient "
       "table of their address class, after the RCPT lists"),
    _b("smtpd_relay_before_recipient_restrictions", "yes", "Evaluate smtpd_relay_restrictions "
       "before smtpd_recipient_restrictions, as Postfix 3.6 and later: a relay attempt gets "
       "Relay access denied before any recipient check (no: the recipient list first)"),
    _b("show_user_unknown_table_name", "yes", "Name the table in User unknown replies"),
    _ch("reject_tempfail_action", "defer_if_permit", _TEMPFAIL, "What a reject restriction "
        "does on a temporary error: defer_if_permit or defer"),
    _ch("unknown_address_tempfail_action", "$reject_tempfail_action", _TEMPFAIL,
        "Temporary-error action of reject_unknown_sender/recipient_domain"),
    _ch("unknown_helo_hostname_tempfail_action", "$reject_tempfail_action", _TEMPFAIL,
        "Temporary-error action of reject_unknown_helo_hostname"),
    _c("access_map_reject_code", "554", 400, 599, "Reply code of an access-map REJECT"),
    _c("access_map_defer_code", "450", 400, 499, "Reply code of an access-map DEFER"),
    _c("reject_code", "554", 400, 599, "Reply code of the reject restriction"),
    _c("defer_code", "450", 400, 499, "Reply code of the defer restriction"),
    _c("relay_domains_reject_code", "554", 500, 599, "Reply code of reject_unauth_destination "
       "(defer_unauth_destination uses it minus 100)"),
    _c("non_fqdn_reject_code", "504", 400, 599, "Reply code of the reject_non_fqdn_* "
       "restrictions"),
    _c("unknown_address_reject_code", "450", 400, 599, "Reply code of "
       "reject_unknown_sender/recipient_domain"),
    _c("unknown_client_reject_code", "450", 400, 599, "Reply code of "
       "reject_unknown_(reverse_)client_hostname"),
    _c("unknown_hostname_reject_code", "450", 400, 599, "Reply code of "
       "reject_unknown_helo_hostname"),
    _c("invalid_hostname_reject_code", "501", 400, 599, "Reply code of "
       "reject_invalid_helo_hostname"),
    _c("unknown_relay_recipient_reject_code", "550", 400, 599, "Reply code for a recipient not "
       "in relay_recipient_maps"),
    _c("unknown_local_recipient_reject_code", "550", 400, 599, "Reply code for a recipient not "
       "in local_recipient_maps"),
    _no(_c("unknown_virtual_alias_reject_code", "550", 400, 599, "Reply code for a recipient "
           "not in the virtual alias table"), "there are no virtual alias domains"),
    _no(_c("unknown_virtual_mailbox_reject_code", "550", 400, 599, "Reply code for a "
           "recipient not in the virtual mailbox table"), "there are no virtual mailbox "
        "domains"),
    _c("multi_recipient_bounce_reject_code", "550", 400, 599, "Reply code of "
       "reject_multi_recipient_bounce"),
    # DNS lists
    _c("maps_rbl_reject_code", "554", 400, 599, "Reply code of reject_rbl_client and "
       "reject_rhsbl_*"),
    _l("rbl_reply_maps", "", "Tables of reply templates per DNS list domain"),
    Param("default_rbl_reply", "str", "$rbl_code Service unavailable; $rbl_class [$rbl_what] "
          "blocked using $rbl_domain${rbl_reason?; $rbl_reason}", "Reply template for a DNS "
          "list hit ($rbl_* are filled in per hit)", raw=True),
    # address verification
    _s("address_verify_map", "btree:$data_directory/verify_cache", "Persistent "
       "address-verification cache; redis://HOST:PORT/DB is one shared by several nodes; "
       "empty keeps it in memory only"),
    _t("address_verify_positive_expire_time", "31d", "d", "Age at which a deliverable result "
       "is forgotten"),
    _t("address_verify_positive_refresh_time", "7d", "d", "Age at which a deliverable result "
       "is re-probed in the background"),
    _t("address_verify_negative_expire_time", "3d", "d", "Age at which an undeliverable or "
       "deferred result is forgotten"),
    _t("address_verify_negative_refresh_time", "3h", "h", "Age at which an undeliverable or "
       "deferred result is re-probed in the background"),
    _b("address_verify_negative_cache", "yes", "Store undeliverable and deferred results"),
    _t("address_verify_cache_cleanup_interval", "12h", "h", "How often expired cache entries "
       "are purged; 0 disables"),
    _i("address_verify_poll_count", "3", "How often a RCPT waits for a probe result"),
    _t("address_verify_poll_delay", "3s", "s", "Wait between those polls"),
    _s("address_verify_sender", "$double_bounce_sender", "Envelope sender of probes; empty or "
       "<> is the null sender"),
    _l("address_verify_relayhost", "$relayhost", "relayhost for probes"),
    _t("address_verify_catchall_check_interval", "1d", "d", "How often a probe of a random "
       "local part asks whether a verified domain's primary accepts any recipient; 0 disables"),
    _l("address_verify_transport_maps", "$transport_maps", "transport_maps for probes"),
    _c("unverified_recipient_reject_code", "450", 200, 599, "Reply code for a recipient that "
       "verification found undeliverable"),
    _c("unverified_recipient_defer_code", "450", 200, 499, "Reply code for a recipient whose "
       "verification is pending or failed temporarily"),
    _ch("unverified_recipient_tempfail_action", "$reject_tempfail_action", _TEMPFAIL,
        "Temporary-error action of reject_unverified_recipient"),
    _s("unverified_recipient_reject_reason", "", "Replaces the reason text of "
       "reject_unverified_recipient replies when set"),
    _c("unverified_sender_reject_code", "450", 200, 599, "Reply code for a sender that "
       "verification found undeliverable"),
    _c("unverified_sender_defer_code", "450", 200, 499, "Reply code for a sender whose "
       "verification is pending or failed temporarily"),
    _ch("unverified_sender_tempfail_action", "$reject_tempfail_action", _TEMPFAIL,
        "Temporary-error action of reject_unverified_sender"),
    _s("unverified_sender_reject_reason", "", "Replaces the reason text of "
       "reject_unverified_sender replies when set"),
    # policy services
    _t("smtpd_policy_service_timeout", "100s", "s", "Limit for connecting to, writing to and "
       "reading from a policy server"),
    _t("smtpd_policy_service_max_idle", "300s", "s", "Close an unused policy connection after "
       "this"),
    _t("smtpd_policy_service_max_ttl", "1000s", "s", "Close a policy connection this long "
       "after it was opened"),
    _i("smtpd_policy_service_request_limit", "0", "Reconnect after this many requests; 0 is "
       "no limit"),
    _i("smtpd_policy_service_try_limit", "2", "Attempts per policy request"),
    _t("smtpd_policy_service_retry_delay", "1s", "s", "Pause between policy attempts"),
    _s("smtpd_policy_service_default_action", "451 4.3.5 Server configuration problem",
       "Action used when a policy server cannot be reached"),
    _s("smtpd_policy_service_policy_context", "", "Value of the policy_context attribute"),
    # built-in greylisting (check_policy_service builtin:greylist, backupmx policy-server)
    _s("greylist_store", "btree:$data_directory/greylist", "Greylist database: btree:, hash:, "
       "lmdb: or sqlite:PATH are one SQLite file at PATH; redis://HOST:PORT/DB is one shared "
       "by several nodes"),
    _t("greylist_delay", "300s", "s", "How long a new client/sender/recipient triplet is "
       "deferred (postgrey --delay)"),
    _t("greylist_max_age", "35d", "d", "Forget triplets and clients unseen this long "
       "(postgrey --max-age)"),
    _t("greylist_retry_window", "2d", "d", "A first retry later than this after first sight "
       "starts greylisting over (postgrey --retry-window)"),
    _s("greylist_action", "DEFER_IF_PERMIT", "Action returned for a greylisted triplet "
       "(postgrey --greylist-action)"),
    _s("greylist_text", "Greylisted, see http://postgrey.schweikert.ch/help/%r.html", "Text of "
       "that action; %r is the recipient domain, %s the seconds left (postgrey --greylist-text)"),
    _ch("greylist_client_key", "subnet", ("subnet", "host", "rdns"), "Client part of a triplet: "
        "its network, its address, or the domain of a non-dynamic confirmed name (for senders "
        "that retry from pools of addresses)"),
    _i("greylist_ipv4_cidr", "24", "Prefix length of an IPv4 client's network (--ipv4cidr)"),
    _i("greylist_ipv6_cidr", "64", "Prefix length of an IPv6 client's network (--ipv6cidr)"),
    _i("greylist_auto_whitelist_clients", "5", "Clients that passed greylisting this often are "
       "no longer greylisted; 0 is off (postgrey --auto-whitelist-clients)"),
    _l("greylist_whitelist_clients", "", "Files of clients never greylisted, in postgrey's "
       "whitelist_clients format"),
    _l("greylist_whitelist_recipients", "", "Files of recipients never greylisted, in "
       "postgrey's whitelist_recipients format"),
    _s("greylist_header", "X-Greylist: delayed %t seconds by backupmx-%v at %h; %d", "Header "
       "added to a message that passed greylisting; %t seconds, %v version, %h myhostname, "
       "%d date"),
    # queue and delivery
    _s("queue_directory", "/var/spool/backupmx", "Where the mail queue lives"),
    _s("data_directory", "/var/lib/backupmx", "Where caches and other state live"),
    _l("transport_maps", "", "Tables of next hops per recipient or domain"),
    _l("relayhost", "", "Next hop(s) for all mail instead of the recipient domain's MX"),
    Param("smtp_tcp_port", "port", "smtp", "Port of delivery connections (a number or a "
          "service name; smtp = 25)"),
    _s("smtp_bind_address", "", "Local IPv4 address of delivery connections"),
    _s("smtp_helo_name", "$myhostname", "Name sent in EHLO/HELO when delivering"),
    _t("smtp_connect_timeout", "30s", "s", "Limit for connecting to a server"),
    _t("smtp_helo_timeout", "300s", "s", "Limit for the greeting and the EHLO/HELO reply"),
    _t("smtp_mail_timeout", "300s", "s", "Limit for the MAIL FROM reply"),
    _t("smtp_rcpt_timeout", "300s", "s", "Limit for each RCPT TO reply"),
    _t("smtp_data_init_timeout", "120s", "s", "Limit for the DATA reply"),
    _t("smtp_data_xfer_timeout", "180s", "s", "Limit for each write of message content"),
    _t("smtp_data_done_timeout", "600s", "s", "Limit for the reply to the final dot"),
    _t("smtp_rset_timeout", "20s", "s", "Limit for the RSET reply"),
    _no(_t("smtp_quit_timeout", "300s", "s", "Limit for the QUIT reply"), "deliveries send "
        "QUIT without waiting for its reply (as Postfix's smtp_skip_quit_response = yes)"),
    _t("smtp_starttls_timeout", "300s", "s", "Limit for the TLS handshake of a delivery"),
    _i("smtp_destination_recipient_limit", "50", "Recipients per delivery transaction"),
    _i("smtp_mx_address_limit", "5", "Server addresses tried per delivery attempt"),
    _i("smtp_mx_session_limit", "2", "Sessions (greeting received) per delivery attempt"),
    _i("smtp_line_length_limit", "998", "Content lines longer than this are folded when "
       "delivering; 0 is no limit"),
    _b("smtp_send_xforward_command", "no", "Send the original client's name, address, port, "
       "protocol, HELO name, queue ID and source in XFORWARD before MAIL, when the server "
       "offers it"),
    _ch("smtp_tls_security_level", "may", ("", "none", "may", "encrypt", "dane", "dane-only",
        "fingerprint", "verify", "secure"), "TLS for deliveries; may (opportunistic STARTTLS) "
        "by default here, where Postfix has none"),
    _s("smtp_tls_CAfile", "", "CA certificates to verify servers with when delivering"),
    _l("smtp_tls_policy_maps", "", "Tables of per-destination TLS policies (keys: next-hop "
       "domain, .parent-domain, [host], [host]:port; values: a level with match=, ciphers=, "
       "protocols=, exclude=)"),
    _l("smtp_tls_verify_cert_match", "hostname", "Names a verify-level server certificate "
       "must match: hostname (the MX name), nexthop, dot-nexthop or a name"),
    _l("smtp_tls_secure_cert_match", "nexthop, dot-nexthop", "Names a secure-level server "
       "certificate must match"),
    _l("smtp_tls_fingerprint_cert_match", "", "Certificate fingerprints the fingerprint level "
       "accepts"),
    _ch("smtp_tls_fingerprint_digest", "sha256", ("sha256", "sha1", "md5"), "Digest of the "
        "fingerprint level"),
    _t("minimal_backoff_time", "300s", "s", "Least time between attempts; also how long a "
       "dead destination is skipped"),
    _t("maximal_backoff_time", "4000s", "s", "Most time between attempts"),
    _t("queue_run_delay", "300s", "s", "How often the deferred queue is scanned"),
    _t("maximal_queue_lifetime", "5d", "d", "Age at which undeliverable mail is returned; 0 "
       "means try once"),
    _t("bounce_queue_lifetime", "5d", "d", "The same for mail with the null sender"),
    _t("delay_warning_time", "0h", "h", "Age after which the sender gets one notice (headers "
       "only) that the mail is delayed and still being retried; 0 is never"),
    _i("default_destination_concurrency_limit", "20", "Parallel deliveries per destination"),
    _i("qmgr_message_active_limit", "20000", "Messages in delivery at once"),
    _i("hopcount_limit", "50", "Received: headers at which a message is rejected as looping"),
    _s("double_bounce_sender", "double-bounce", "Sender of notices to postmaster; mail to it "
       "is discarded"),
    _no(_l("notify_classes", "resource, software", "Problem classes reported to postmaster"),
        "no notices are sent to postmaster; problems are logged"),
    _z("bounce_size_limit", "50000", "Largest original message returned whole in a bounce"),
    _no(_s("bounce_notice_recipient", "postmaster", "Recipient of postmaster copies of "
           "bounces"), "no notices are sent to postmaster (notify_classes)"),
    _no(_s("2bounce_notice_recipient", "postmaster", "Recipient of undeliverable bounces"),
        "an undeliverable bounce is logged and discarded"),
    _b("soft_bounce", "no", "Turn every permanent failure into a temporary one (testing "
       "aid): the SMTP server sends each 5xx reply as 4xx, protocol errors included"),
    _ch("primary_reject_action", "hold", ("hold", "bounce", "discard"), "What a 5xx reply of "
        "the primary itself (at HELO, MAIL, RCPT or the end of DATA) does to the recipients it "
        "refused: hold quarantines the message on hold with the reply as its reason and sends "
        "no DSN (the sender may be forged); bounce sends the sender a DSN, as Postfix does; "
        "discard drops them without a DSN. Route failures decided here and expiry still bounce"),
    _l("fast_flush_domains", "$relay_domains", "Domains whose mail ETRN may flush"),
    # server limits
    _z("message_size_limit", "10240000", "Largest accepted message in bytes; 0 is no limit"),
    _i("smtpd_recipient_limit", "1000", "RCPT commands per message (refused or not); 0 is no "
       "limit"),
    _i("smtpd_recipient_overshoot_limit", "1000", "RCPTs beyond smtpd_recipient_limit that "
       "are refused with 452 without counting as errors"),
    _t("smtpd_timeout", "300s", "s", "Idle limit while reading from or writing to a client"),
    _ch("smtpd_upstream_proxy_protocol", "", ("", "haproxy"), "haproxy: every connection "
        "starts with a PROXY protocol v1 or v2 header (a TCP load balancer's) naming the real "
        "client; a connection without a valid one is refused with 421 4.3.0"),
    _t("smtpd_upstream_proxy_timeout", "5s", "s", "How long the PROXY header may take to "
       "arrive"),
    _b("smtpd_per_record_deadline", "yes", "smtpd_timeout bounds the receipt of a whole command "
       "or content line, not each read (backupmx default yes, against slowloris)"),
    _t("smtpd_session_time_limit", "3600s", "s", "backupmx's own: longest an SMTP session may "
       "last in all before 421 and disconnect; 0 is no limit"),
    Param("smtpd_worker_processes", "int", "the number of CPUs; 0 on one CPU",
          "backupmx's own: processes that serve SMTP while the master delivers (one Python "
          "process uses one core); 0 serves SMTP in the master process",
          compute=lambda value_of: str(_cpus() if _cpus() > 1 else 0)),
    _i("smtpd_max_sessions", "2000", "backupmx's own: simultaneous SMTP sessions in all; "
       "further clients get 421 at once"),
    _i("smtpd_hard_error_limit", "20", "Errors after which a client is disconnected"),
    _i("smtpd_soft_error_limit", "10", "Errors after which every reply is delayed"),
    _t("smtpd_error_sleep_time", "1s", "s", "That delay"),
    _i("smtpd_junk_command_limit", "100", "HELO, EHLO, RSET, NOOP, VRFY and ETRN beyond this "
       "many (plus one) since the last message each count as an error"),
    _i("smtpd_client_connection_count_limit", "50", "Simultaneous connections per client; 0 is "
       "no limit"),
    _i("smtpd_client_connection_rate_limit", "0", "Connections per client per "
       "anvil_rate_time_unit; 0 is no limit"),
    _i("smtpd_client_message_rate_limit", "0", "MAIL commands per client per "
       "anvil_rate_time_unit; 0 is no limit"),
    _i("smtpd_client_recipient_rate_limit", "0", "RCPT and VRFY commands per client per "
       "anvil_rate_time_unit; 0 is no limit"),
    _l("smtpd_client_event_limit_exceptions", "$mynetworks", "Clients exempt from the "
       "per-client limits"),
    _t("anvil_rate_time_unit", "60s", "s", "Time unit of the per-client rate limits"),
    # several nodes (backupmx/cluster/)
    _s("cluster_store", "", "redis://HOST:PORT/DB that several backupmx nodes share: the "
       "per-client connection counts and rates are counted across them and each node "
       "publishes its health and queue there (backupmx status --cluster); empty is one node"),
    _s("cluster_node_name", "$myhostname", "This node's name in cluster_store; unique among "
       "the nodes"),
    _t("cluster_publish_interval", "10s", "s", "How often a node publishes its record to "
       "cluster_store; a node silent for three intervals is shown as silent and its "
       "connections no longer count"),
    _i("line_length_limit", "2048", "Longest command line, and piece of a content line, read "
       "at once"),
    _z("header_size_limit", "102400", "Longest header kept; the excess is discarded"),
    _ch("smtpd_forbid_bare_newline", "yes", ("yes", "no", "normalize", "reject"), "Handling of "
        "bare LF in SMTP (backupmx default yes = normalize, against SMTP smuggling)"),
    _c("smtpd_forbid_bare_newline_reject_code", "550", 400, 599, "Reply code of "
       "smtpd_forbid_bare_newline = reject"),
    _l("smtpd_forbid_bare_newline_exclusions", "$mynetworks", "Clients exempt from "
       "smtpd_forbid_bare_newline"),
    _b("smtpd_forbid_unauth_pipelining", "no", "Answer 554 5.5.0 and disconnect a client that "
       "sends input ahead where RFC 2920 allows none (Postfix 3.9's default is yes)"),
    _b("disable_vrfy_command", "no", "Refuse the VRFY command"),
    _b("strict_rfc821_envelopes", "no", "Require <address> with nothing else in MAIL FROM and "
       "RCPT TO"),
    _b("smtputf8_enable", "yes", "Offer SMTPUTF8"),
    _no(_b("smtpd_delay_open_until_valid_rcpt", "yes", "Assign a queue id only at the first "
           "accepted recipient"), "a queue id is always assigned at the first accepted "
        "recipient", "yes"),
    _s("smtpd_tls_cert_file", "", "Server certificate (PEM) for STARTTLS"),
    _s("smtpd_tls_key_file", "$smtpd_tls_cert_file", "Private key (PEM) of that certificate"),
    _t("smtpd_starttls_timeout", "300s", "s", "Limit for the TLS handshake after STARTTLS"),
    _ch("smtpd_tls_security_level", "", ("", "none", "may", "encrypt"), "STARTTLS for "
        "clients; empty means none"),
)

PARAMS: dict[str, Param] = {p.name: p for p in _TABLE}


def describe() -> list[Param]:
    """Every parameter, in table order (grouped by subject), for documentation."""
    return list(_TABLE)


def render_reference() -> str:
    """A markdown table of every parameter: name, default and description."""
    lines = ["| name | default | description |", "| --- | --- | --- |"]
    for p in _TABLE:
        if p.compute is not None:
            default = p.default
        elif p.default:
            default = f"`{p.default}`"
        else:
            default = "(empty)"
        doc = p.doc + (f" (time; default unit {p.unit})" if p.type == "time" else "")
        if p.unsupported and p.supported is None:
            doc += f". **Not supported**: {p.unsupported}"
        elif p.unsupported:
            shown = f"`{p.supported}`" if p.supported else "empty"
            doc += f". **Not supported** other than {shown}: {p.unsupported}"
        lines.append(f"| `{p.name}` | {_cell(default)} | {_cell(doc)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
