"""The queue manager's decisions, over plain data and a time given by the caller.

Nothing here waits, reads a disk or opens a socket: what is due, what a set of
outcomes means for an envelope (soft_bounce, expiry, the DSN due, the next attempt),
which destinations are dead, and which due mail waits parked for a delivery slot.
The shell around it (``manager.py``) does the I/O through the ports in ``ports.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backupmx import bounce
from backupmx.envelope import BOUNCED, DEFERRED, DISCARDED, HELD, Envelope, Recipient
from backupmx.outcome import Outcome, Stage

if TYPE_CHECKING:
    from backupmx.config import Config

SUSPENDED = "delivery temporarily suspended: "
#: attempts started per destination, as a multiple of its concurrency limit; the rest of
#: its due mail waits parked, without a task (see Slots)
STARTED_PER_SLOT = 2


@dataclass(frozen=True)
class Policy:
    """The queue manager's parameters of one configuration."""

    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    queue_lifetime: float = 5 * 86400.0
    bounce_lifetime: float = 5 * 86400.0
    soft_bounce: bool = False
    active_limit: int = 20000
    run_delay: float = 300.0
    concurrency: int = 20
    connect_timeout: float = 30.0
    delay_warning: float = 0.0  # 0: no delay notices
    reject_action: str = "hold"  # primary_reject_action: hold | bounce | discard

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        return cls(
            minimal_backoff=cfg.time("minimal_backoff_time"),
            maximal_backoff=cfg.time("maximal_backoff_time"),
            queue_lifetime=cfg.time("maximal_queue_lifetime"),
            bounce_lifetime=cfg.time("bounce_queue_lifetime"),
            soft_bounce=cfg.bool("soft_bounce"),
            active_limit=cfg.int("qmgr_message_active_limit"),
            run_delay=cfg.time("queue_run_delay"),
            concurrency=cfg.int("default_destination_concurrency_limit"),
            connect_timeout=cfg.time("smtp_connect_timeout"),
            delay_warning=cfg.time("delay_warning_time"),
            reject_action=cfg.str("primary_reject_action"),
        )

    def lifetime(self, env: Envelope) -> float:
        """bounce_queue_lifetime for a bounce (null sender), else maximal_queue_lifetime."""
        return self.bounce_lifetime if env.sender == "" else self.queue_lifetime

    def expired(self, env: Envelope, now: float) -> bool:
        return now >= env.arrival + self.lifetime(env)

    def warning_due(self, env: Envelope, now: float) -> bool:
        """Queued longer than delay_warning_time, and the sender not told yet."""
        return (self.delay_warning > 0 and not env.warned and env.sender != ""
                and now >= env.arrival + self.delay_warning)

    @property
    def start_bound(self) -> int:
        """How many attempts one destination may have started at once."""
        return STARTED_PER_SLOT * max(1, self.concurrency)


def backoff(now: float, arrival: float, minimal: float, maximal: float) -> float:
    """Postfix's delay: time in queue, clamped (roughly doubling intervals)."""
    return min(max(now - arrival, minimal), maximal)


def due(env: Envelope, now: float, notice_due: float | None = None) -> float:
    """When the message is next due: its earliest recipient or the retry of a notice
    that could not be stored (``notice_due``), else now.  A recipient without a next
    attempt (new, flushed, or held until released) is due now."""
    times = [now if r.next_attempt is None else r.next_attempt for r in env.open_recipients]
    if notice_due is not None:
        times.append(notice_due)
    return min(times) if times else now


@dataclass
class Verdict:
    """What one attempt's outcomes mean for the envelope."""

    #: every recipient's final outcome of this attempt, as it is logged
    results: list[tuple[Recipient, Outcome]]
    #: the recipients whose sender is due a non-delivery notice
    failures: list[tuple[Recipient, Outcome]]
    #: the recipients the primary refused that are quarantined (primary_reject_action)
    held: list[tuple[Recipient, Outcome]]
    #: out of queue lifetime: the deferrals became bounces
    expired: bool
    #: something was attempted (not only suspended): the new state is worth persisting
    attempted: bool


def settle(env: Envelope, results: list[tuple[Recipient, Outcome]], now: float,
           policy: Policy) -> Verdict:
    """Classify an attempt's outcomes: soft_bounce first, then the primary's refusals,
    then expiry.

    The one place where a bounce may turn into a deferral (``soft_bounce``), a 5xx of
    the primary itself into a quarantine or a silent drop (``primary_reject_action``),
    and a deferral into a bounce (the queue lifetime is over).  A bounce decided here
    (no route, a ``transport_maps`` error, a check of ours) and expiry keep the DSN; so
    does a notice of our own, which went to the sender's server, not to a primary.
    """
    expired = policy.expired(env, now)
    action = "bounce" if env.made_here else policy.reject_action
    final: list[tuple[Recipient, Outcome]] = []
    any_expired = False
    for r, o in results:
        if policy.soft_bounce:
            o = o.soft()
        if o.refused:
            o = refusal(o, action)
        elif expired and o.kind == DEFERRED:
            o, any_expired = o.expired(), True
        final.append((r, o))
    return Verdict(
        results=final,
        failures=[(r, o) for r, o in final if o.kind == BOUNCED],
        held=[(r, o) for r, o in final if o.kind == HELD],
        expired=any_expired,
        attempted=not all(o.suspended for _, o in final),
    )


def refusal(o: Outcome, action: str) -> Outcome:
    """What primary_reject_action makes of the primary's 5xx: held, discarded or bounced."""
    if action == "hold":
        return o.as_kind(HELD)
    if action == "discard":
        return o.as_kind(DISCARDED)
    return o


def delayed(env: Envelope, verdict: Verdict, now: float,
            policy: Policy) -> list[tuple[Recipient, Outcome]]:
    """The deferred recipients the sender is now told about (once, NOTIFY permitting)."""
    if not policy.warning_due(env, now):
        return []
    return [(r, o) for r, o in verdict.results
            if o.kind == DEFERRED and bounce.should_notify(env, r, bounce.DELAYED)]


def record(env: Envelope, verdict: Verdict, now: float, policy: Policy) -> None:
    """Write the verdict into the envelope: states, history and the next attempt.

    A quarantined recipient keeps the primary's refusal and puts the message on hold.
    """
    retry = now + backoff(now, env.arrival, policy.minimal_backoff, policy.maximal_backoff)
    for r, o in verdict.results:
        r.attempts += 1
        r.last_reply = o.text
        r.state = o.kind
        r.next_attempt = retry if o.kind == DEFERRED else None
        r.refusal = refusal_record(o) if o.kind == HELD else None
        env.history.append(
            {"time": now, "recipient": r.address, "result": o.kind, "relay": o.relay or "none",
             "reply": o.text}
        )
    if verdict.held:
        env.hold = True


def refusal_record(o: Outcome) -> dict[str, str | None]:
    """What the envelope keeps of a refusal, so that a later DSN can report it."""
    return {"status": o.status, "text": o.text, "relay": o.relay, "diagnostic": o.diagnostic,
            "stage": o.stage.value}


def refused_outcome(r: Recipient) -> Outcome:
    """A held recipient's refusal, as the bounce it becomes when the administrator says so."""
    rec = r.refusal or {}
    return Outcome(BOUNCED, rec.get("status") or "5.0.0", rec.get("text") or r.last_reply or "",
                   Stage(rec.get("stage") or Stage.RECIPIENT.value), rec.get("relay"),
                   rec.get("diagnostic"), replied=True)


def quarantined(env: Envelope) -> list[Recipient]:
    """The recipients held for the administrator (bounce or release decides)."""
    return [r for r in env.recipients if r.state == HELD]


def leaves_queue(env: Envelope, dsn_pending: bool) -> bool:
    """The message may be removed: nothing open, and no notice still to be made durable."""
    return env.done and not dsn_pending


def suspended(reason: str) -> Outcome:
    """The deferral of mail for a destination known dead, without an attempt."""
    return Outcome(DEFERRED, "4.4.1", f"{SUSPENDED}{reason}", Stage.SUSPENDED)


@dataclass
class Dead:
    until: float
    reason: str


@dataclass
class DeadDestinations:
    """Postfix's dead-destination cache: nobody answered there lately."""

    entries: dict[str, Dead] = field(default_factory=dict)

    def reason(self, domain: str, now: float) -> str | None:
        """Why ``domain`` is dead, while its entry is in force."""
        dead = self.entries.get(domain)
        return dead.reason if dead and dead.until > now else None

    def listed(self, domain: str) -> bool:
        """Still listed (in force or not): its health probe keeps knocking."""
        return domain in self.entries

    def judge(self, domain: str, outcomes: list[Outcome], now: float, policy: Policy) -> bool:
        """Learn from an attempt; True when ``domain`` is dead now (nobody answered)."""
        if outcomes and all(o.unreachable for o in outcomes):
            self.entries[domain] = Dead(now + policy.minimal_backoff, outcomes[0].text)
            return True
        self.entries.pop(domain, None)
        return False

    def revive(self, domain: str | None = None) -> None:
        """Forget ``domain`` (or every destination): a flush tries them again."""
        if domain is None:
            self.entries.clear()
        else:
            self.entries.pop(domain, None)

    def suspend(self, env: Envelope, now: float,
                policy: Policy) -> list[tuple[Recipient, Outcome]] | None:
        """Deferrals without an attempt when every destination of ``env`` is dead.

        None (try it) unless every open recipient's destination is dead and the message
        is neither out of lifetime nor due a delay notice: a DSN needs the attempt.
        """
        rcpts = env.open_recipients
        if not rcpts or policy.expired(env, now) or policy.warning_due(env, now):
            return None
        results = []
        for r in rcpts:
            why = self.reason(r.domain, now)
            if why is None:
                return None
            results.append((r, suspended(why)))
        return results


@dataclass
class Slots:
    """Attempts started per destination, and the due mail parked behind them.

    A task per due message would hold every message of a large backlog in memory at
    once while all but a few wait for a delivery slot (20,000 of them cost the master
    about 150 MB that it kept).  Parked, a message costs a dict entry; it is started
    as that destination's attempts finish.
    """

    started: dict[str, int] = field(default_factory=dict)
    parked: dict[str, dict[str, None]] = field(default_factory=dict)

    def park(self, qid: str, domains: set[str], bound: int) -> bool:
        """Park ``qid`` if one of its destinations has its fill of attempts."""
        for d in domains:
            if self.started.get(d, 0) >= bound:
                self.parked.setdefault(d, {})[qid] = None
                return True
        return False

    def start(self, domains: set[str]) -> None:
        for d in domains:
            self.started[d] = self.started.get(d, 0) + 1

    def finish(self, domains: set[str]) -> None:
        for d in domains:
            left = self.started.get(d, 0) - 1
            if left <= 0:
                self.started.pop(d, None)
            else:
                self.started[d] = left

    def unpark(self, domain: str, bound: int, dead: bool) -> list[str]:
        """The parked mail of ``domain`` to schedule again: as much as there is room
        for, or all of it once the destination is dead (it is then deferred without
        an attempt)."""
        parked = self.parked.get(domain)
        if not parked:
            return []
        room = len(parked) if dead else bound - self.started.get(domain, 0)
        out = []
        for _ in range(min(room, len(parked))):
            qid = next(iter(parked))
            del parked[qid]
            out.append(qid)
        if not parked:
            del self.parked[domain]
        return out
