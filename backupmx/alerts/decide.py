"""When to alert: pure decisions over what the queue and the disk look like at a time.

One alert per transition: a destination starts holding mail (a deferral, and mail for
it still queued at the next look) and, once nothing is queued for it any more, has
drained; a new deferral after that is a new transition.  The queue-age and low-disk
alerts fire once when their condition starts and are re-armed when it clears, so a
condition that lasts gives one alert, not one a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backupmx.alerts.alert import (
    DISK_LOW,
    DRAINED,
    HOLDING,
    QUARANTINED,
    QUEUE_AGE,
    Alert,
)

#: the low-disk alert is re-armed once the free space is this much above the threshold,
#: so that free space wavering around it does not alert every few seconds
DISK_REARM = 1.1


@dataclass(frozen=True)
class Backlog:
    """A destination's mail waiting in the queue (not on hold)."""

    messages: int
    recipients: int


@dataclass(frozen=True)
class QueueView:
    """The queue at one look: per destination, the messages in all, the oldest arrival."""

    backlog: dict[str, Backlog]
    messages: int
    oldest: float | None


@dataclass
class Decisions:
    """The alert state: which destinations hold mail, which conditions have fired."""

    #: destination -> (time, reason) of a deferral not yet confirmed by a look at the queue
    pending: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: destination -> since when it holds mail (its holding alert was given)
    holding: dict[str, float] = field(default_factory=dict)
    age_fired: bool = False
    disk_fired: bool = False

    def deferred(self, destination: str, reason: str, now: float) -> None:
        """Mail for ``destination`` was deferred; the next look tells whether it holds mail."""
        if destination not in self.holding and destination not in self.pending:
            self.pending[destination] = (now, reason)

    def busy(self) -> bool:
        """Something waits for a look at the queue."""
        return bool(self.pending or self.holding)

    def queue(self, view: QueueView, now: float, age_threshold: float,
              states: dict[str, str] | None = None) -> list[Alert]:
        """The alerts a look at the queue gives; ``states`` the primaries' health, if known."""
        out: list[Alert] = []
        for dest, (since, reason) in sorted(self.pending.items()):
            b = view.backlog.get(dest)
            if b is None:
                continue  # delivered before anyone looked: no backlog, no alert
            self.holding[dest] = since
            out.append(Alert(HOLDING, now, f"mail for {dest} is being held: {reason}", dest,
                             {"messages": b.messages, "recipients": b.recipients}))
        self.pending.clear()
        for dest, since in sorted(self.holding.items()):
            if dest in view.backlog:
                continue
            del self.holding[dest]
            state = (states or {}).get(dest)
            primary = f"; its primary is {state}" if state else ""
            held = round(now - since)
            out.append(Alert(DRAINED, now, f"the mail held for {dest} has drained after "
                             f"{held}s{primary}", dest,
                             {"messages": 0, "recipients": 0, "seconds": held}))
        out += self._age(view, now, age_threshold)
        return out

    def _age(self, view: QueueView, now: float, threshold: float) -> list[Alert]:
        age = None if view.oldest is None else now - view.oldest
        if threshold <= 0 or age is None or age < threshold:
            self.age_fired = False
            return []
        if self.age_fired:
            return []
        self.age_fired = True
        return [Alert(QUEUE_AGE, now, f"the oldest message in the queue has waited "
                      f"{round(age)}s, more than {round(threshold)}s", None,
                      {"messages": view.messages, "oldest_age": round(age),
                       "threshold": round(threshold)})]

    def disk(self, free: int, threshold: int, now: float) -> list[Alert]:
        """The alert ``free`` bytes on the queue's file system give, with ``threshold``."""
        if threshold <= 0 or (self.disk_fired and free >= threshold * DISK_REARM):
            self.disk_fired = False
            return []
        if self.disk_fired or free >= threshold:
            return []
        self.disk_fired = True
        return [Alert(DISK_LOW, now, f"the queue's file system has {free} bytes free, less "
                      f"than {threshold}", None,
                      {"free_bytes": free, "threshold_bytes": threshold})]

    @staticmethod
    def quarantined(queue_id: str, destination: str, reply_text: str, now: float) -> Alert:
        """Each quarantined message is an alert of its own."""
        return Alert(QUARANTINED, now, f"{queue_id}: mail for {destination} was put on hold: "
                     f"the primary refused it: {reply_text}", destination, {"messages": 1},
                     queue_id)
