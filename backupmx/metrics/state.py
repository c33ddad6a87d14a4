"""What the master is at the moment of a scrape: queue, destinations, sessions.

Gauges of state are read when ``/metrics`` is asked rather than kept up to date on
every change: the queue manager's envelopes and the health state machines
(backupmx/health.py) are already the truth, and a scrape every few seconds walks them
far more cheaply than every message would update a gauge.  The few plain counts that
the master's objects keep for their own use (spool transactions, verification
probes) are exposed from there too, as counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from backupmx.health import State
from backupmx.metrics.instruments import NOTICES

if TYPE_CHECKING:
    from backupmx.server import Server


class ServerState(Collector):
    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        qm = server.qmgr
        now = time.time()
        count: dict[str, int] = {}
        oldest: dict[str, float] = {}
        held = 0
        for env in qm.msgs.values():
            held += env.hold
            for dest in {NOTICES if env.made_here else r.domain for r in env.open_recipients}:
                count[dest] = count.get(dest, 0) + 1
                oldest[dest] = min(oldest.get(dest, env.arrival), env.arrival)
        yield GaugeMetricFamily("backupmx_queue_messages", "Messages in the queue.",
                                value=len(qm.msgs))
        yield GaugeMetricFamily("backupmx_queue_active", "Messages being delivered.",
                                value=len(qm.active))
        yield GaugeMetricFamily("backupmx_queue_held", "Messages on hold (held by an admin, "
                                "an access map or the quarantine).", value=held)
        per = GaugeMetricFamily("backupmx_queue_destination_messages", "Messages with an "
                                "open recipient at the destination.", labels=["destination"])
        age = GaugeMetricFamily("backupmx_queue_oldest_message_age_seconds", "Age of the "
                                "oldest message with an open recipient at the destination.",
                                labels=["destination"])
        for dest in sorted(count):
            per.add_metric([dest], count[dest])
            age.add_metric([dest], max(0.0, now - oldest[dest]))
        yield per
        yield age
        yield from self._destinations()
        yield GaugeMetricFamily("backupmx_smtpd_sessions_open", "Open SMTP sessions.",
                                value=server.session_count())
        yield CounterMetricFamily("backupmx_queue_transactions", "Spool transactions the "
                                  "master committed (one fsync each).",
                                  value=server.spool.commits)
        verifier = server.svc.verifier
        yield CounterMetricFamily("backupmx_verify_probes", "Address verification probes "
                                  "sent.", value=verifier.probes)
        yield CounterMetricFamily("backupmx_verify_connections", "SMTP sessions opened for "
                                  "verification probes.", value=verifier.prober.connections)
        yield CounterMetricFamily("backupmx_verify_catchall_probes", "Catch-all checks of a "
                                  "primary sent.", value=verifier.catchall.probes)
        yield GaugeMetricFamily("backupmx_uptime_seconds", "Seconds since the server started.",
                                value=now - server.started)

    def _destinations(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("backupmx_destination_up", "1 while the destination's primary "
                               "is up, 0 while it is down or recovering (the backlog is "
                               "still being delivered).", labels=["destination"])
        state = GaugeMetricFamily("backupmx_destination_state", "1 for the destination's "
                                  "current state (up, down, recovering), 0 for the others.",
                                  labels=["destination", "state"])
        since = GaugeMetricFamily("backupmx_destination_state_since_seconds", "Unix time "
                                  "the destination entered its current state.",
                                  labels=["destination"])
        for name, current, when in self.server.qmgr.health.snapshot():
            up.add_metric([name], float(current is State.UP))
            for s in State:
                state.add_metric([name, s.value], float(s is current))
            since.add_metric([name], when)
        yield up
        yield state
        yield since
