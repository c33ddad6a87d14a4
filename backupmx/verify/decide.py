"""The cache decisions of address verification, as plain functions over plain data.

They follow Postfix's verify(8) (spec/address-verification.md §3.3) with one
deliberate difference: an entry is never dropped or downgraded because the
primary could not be asked.  An OK entry past its expiry is re-probed, and while
that probe cannot get an answer the old OK is still used: during an outage of the
primary, known users keep getting mail, which is when a backup MX matters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from backupmx.config import Config

OK, DEFER, BOUNCE, TODO = 0, 1, 2, 3  # Postfix's status numbers
STATUS_NAMES = {OK: "deliverable", DEFER: "deferred", BOUNCE: "undeliverable", TODO: "unknown"}

# Postfix does not re-probe an address within this many seconds of the last probe.
PROBE_TTL = 1000.0


@dataclass(frozen=True)
class Entry:
    """One cache record: status, when a probe was last sent and answered, the reason."""

    status: int
    probed: float  # time of the last probe attempt, 0 = none
    updated: float  # time of the last stored result, 0 = never
    text: str


@dataclass(frozen=True)
class Timing:
    positive_expire: float
    positive_refresh: float
    negative_expire: float
    negative_refresh: float
    negative_cache: bool

    @classmethod
    def from_cfg(cls, cfg: Config) -> Timing:
        return cls(
            positive_expire=cfg.time("address_verify_positive_expire_time"),
            positive_refresh=cfg.time("address_verify_positive_refresh_time"),
            negative_expire=cfg.time("address_verify_negative_expire_time"),
            negative_refresh=cfg.time("address_verify_negative_refresh_time"),
            negative_cache=cfg.bool("address_verify_negative_cache"),
        )

    @property
    def retry(self) -> float:
        """Least time between two probes of an entry whose probe got no answer."""
        return min(PROBE_TTL, self.negative_refresh)


@dataclass(frozen=True)
class Decision:
    """What to do with a query.

    ``answer``: the answer now, or None when the answer is the probe's.
    ``probe``: send a probe (unless one for the address is already running).
    ``stale``: an expired OK entry, the answer when the probe gets no answer.
    ``drop``: delete the stored entry.
    """

    answer: Entry | None
    probe: bool
    stale: Entry | None = None
    drop: bool = False


def query(entry: Entry | None, now: float, t: Timing) -> Decision:
    """The answer to a query for an address whose record is ``entry``."""
    if entry is None or entry.status not in (OK, DEFER, BOUNCE):
        return Decision(None, True)
    age = now - entry.updated
    may_probe = now - entry.probed > t.retry
    if entry.status == OK:
        if age > t.positive_expire:
            return Decision(None, may_probe, stale=entry)
        return Decision(entry, may_probe and age > t.positive_refresh)
    if age > t.negative_expire or not t.negative_cache:
        return Decision(None, True, drop=True)
    return Decision(entry, may_probe and age > t.negative_refresh)


def probing(entry: Entry | None, now: float) -> Entry | None:
    """The record to store when a probe for it starts (None: store nothing)."""
    return None if entry is None else replace(entry, probed=now)


def update(
    entry: Entry | None, status: int, text: str, now: float, t: Timing
) -> Entry | None:
    """The record after a probe answered ``status``; None deletes the record.

    A failed probe never overwrites OK; an undeliverable answer does only once the
    OK has expired (before that, Postfix's optimism: a primary that briefly rejects
    everyone must not turn all known users into 5xx).
    """
    if status == OK:
        return Entry(OK, 0.0, now, text)
    if entry is not None and entry.status == OK:
        expired = now - entry.updated > t.positive_expire
        if status == DEFER or not expired:
            return entry
    if not t.negative_cache:
        return None
    return Entry(status, 0.0, now, text)


def worth_learning(entry: Entry | None, status: int, now: float) -> bool:
    """Does a delivery's answer change the record?  Not a deliverable one that is fresh."""
    return not (status == OK and entry is not None and entry.status == OK
                and now - entry.updated < PROBE_TTL)


def purgeable(entry: Entry, now: float, t: Timing) -> bool:
    """Cleanup drops a record nobody has asked about since it expired.

    An expired OK record that is still being asked for (its refresh probes keep
    failing) stays: it is what keeps a known user's mail coming during an outage.
    """
    if now - entry.probed < PROBE_TTL:
        return False
    if entry.status == OK:
        return now - entry.updated > t.positive_expire and now - entry.probed > t.positive_expire
    return now - entry.updated > t.negative_expire
