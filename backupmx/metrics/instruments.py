"""The counters and histograms that the code increments, one registry per process.

Every process (the master and each smtpd worker) imports this module and counts into
its own :data:`REGISTRY`; the master sums the workers' registries into its answer on
``/metrics`` (:mod:`backupmx.metrics.scrape`).  Only counters and histograms live here,
since those add up across processes; what is a state of the master (queue, health,
open sessions) is read when scraped (:mod:`backupmx.metrics.state`).  Label values are
bounded by the configuration (restriction names, DNS lists, policy services, the
destinations backed up), never taken from what a client sends.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

# A _created sample per series would be summed across processes into nonsense.
prometheus_client.disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=False)

#: the destination label of the recipients of backupmx's own notices (DSNs), whose
#: domains are the senders' and unbounded
NOTICES = "notices"

#: a delivery attempt of one message to one destination: connect to the last reply
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)
#: one group commit of the spool (one fsync of the WAL)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5)
#: arrival to delivery: seconds when the primary is up, hours after an outage
DELAY_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0,
                 86400.0, 2 * 86400.0, 5 * 86400.0)

CONNECTIONS = Counter(
    "backupmx_smtpd_connections", "SMTP connections by outcome: served (greeted), "
    "over_session_limit (smtpd_max_sessions), over_client_limit (anvil), "
    "spoke_first (before the greeting), proxy_refused (no valid PROXY header).",
    ["outcome"], registry=REGISTRY)
SESSIONS = Counter(
    "backupmx_smtpd_sessions_ended", "Ended SMTP sessions by how they ended: quit, lost, "
    "timeout, time_limit, too_many_errors, disconnected (a 421/521 or a protocol "
    "violation), shutdown, error.", ["end"], registry=REGISTRY)
REJECTS = Counter(
    "backupmx_smtpd_rejects", "SMTP replies that refused something, by stage, by the "
    "restriction or check that refused, and by reply class (4xx, 5xx).",
    ["stage", "restriction", "class"], registry=REGISTRY)
MESSAGES = Counter(
    "backupmx_smtpd_messages_accepted", "Messages accepted (250 after DATA, durable).",
    registry=REGISTRY)
MESSAGE_BYTES = Counter(
    "backupmx_smtpd_message_bytes_accepted", "Bytes of the messages accepted, as received.",
    registry=REGISTRY)
GREYLIST = Counter(
    "backupmx_greylist_decisions", "Decisions of the built-in greylist: greylist or pass, "
    "and error when its store failed.", ["decision"], registry=REGISTRY)
DNSBL_HITS = Counter(
    "backupmx_dnsbl_hits", "DNS list lookups that found the client or a name listed, per "
    "list (the reply filter applied).", ["list"], registry=REGISTRY)
DNSBL_ERRORS = Counter(
    "backupmx_dnsbl_errors", "DNS list lookups that failed or timed out (counted as not "
    "listed), per list.", ["list"], registry=REGISTRY)
POLICY_ACTIONS = Counter(
    "backupmx_policy_actions", "Actions policy services answered (postgrey's greylisting "
    "is DEFER_IF_PERMIT), per service and action word; other for an action backupmx "
    "does not know.", ["service", "action"], registry=REGISTRY)
POLICY_ERRORS = Counter(
    "backupmx_policy_errors", "Policy service requests that failed after every attempt "
    "(the default action applied), per service.", ["service"], registry=REGISTRY)
SPOOL_COMMITS = Histogram(
    "backupmx_spool_commit_seconds", "Duration of one spool transaction (one fsync), in "
    "every process that writes the spool.", buckets=COMMIT_BUCKETS, registry=REGISTRY)
DELIVERIES = Counter(
    "backupmx_delivery_results", "Recipient results of delivery attempts by result "
    "(delivered, deferred, bounced, held, discarded) and destination; notices of "
    "backupmx's own count as destination \"notices\".", ["result", "destination"],
    registry=REGISTRY)
ATTEMPTS = Histogram(
    "backupmx_delivery_attempt_seconds", "Duration of one delivery attempt of one message "
    "to one destination.", ["destination"], buckets=ATTEMPT_BUCKETS, registry=REGISTRY)
DELAYS = Histogram(
    "backupmx_delivery_delay_seconds", "Time from arrival to delivery of each delivered "
    "recipient.", buckets=DELAY_BUCKETS, registry=REGISTRY)
VERIFY_LOOKUPS = Counter(
    "backupmx_verify_cache_lookups", "Address verification answers by source: hit (the "
    "cache knew) or miss (a probe was needed).", ["result"], registry=REGISTRY)
VERIFY_PROBES = Counter(
    "backupmx_verify_probe_results", "Address verification probes by result (deliverable, "
    "undeliverable, deferred).", ["result"], registry=REGISTRY)
VERIFY_LEARNED = Counter(
    "backupmx_verify_learned", "Verify cache records set by a delivery's RCPT reply "
    "(deliverable, undeliverable; failed when the store failed).", ["result"],
    registry=REGISTRY)
STANDBY_REFUSALS = Counter(
    "backupmx_standby_refusals", "RCPTs refused with 450 4.7.1 while the destination's "
    "primary is up (standby_while_primary_up).", ["destination"], registry=REGISTRY)
