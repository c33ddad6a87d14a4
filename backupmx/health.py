"""The health of each destination's primary: up, down or recovering, with its history.

Pure logic over plain data and a time the caller gives: the queue manager feeds it the
outcomes of each destination's deliveries and the results of health probes, the master
tells it which destinations still have mail queued, and it answers what state each
destination is in, since when and why.  A destination is what the queue manager groups
deliveries by: the recipient domain.

The states:

- ``up``: the last word from the destination was good (a server took a recipient's
  reply stage, or a probe got 220 and 250 to EHLO), and it was not down before, or
  the mail queued while it was down has drained.
- ``down``: nobody answered there (every outcome of an attempt a deferral at the
  connect stage, or a probe that got no greeting or no EHLO reply).
- ``recovering``: reachable again after being down, while mail queued for it is still
  waiting; it becomes ``up`` once no message (not on hold) has an open recipient there.

Evidence that says nothing about the primary (a DNS failure, a ``transport_maps``
action, a session that broke after the greeting, a deferral without an attempt) leaves
the state as it is.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from backupmx.outcome import Outcome, Stage

#: transitions kept per destination
HISTORY = 20
#: destinations remembered; beyond it the one heard from longest ago is forgotten
LIMIT = 1000


class State(enum.Enum):
    UP = "up"
    DOWN = "down"
    RECOVERING = "recovering"


@dataclass(frozen=True)
class Transition:
    """One change of state; ``old`` is None for the first thing learnt."""

    time: float
    old: State | None
    new: State
    reason: str


@dataclass
class Destination:
    name: str
    state: State
    since: float
    reason: str
    #: the last time the primary was found healthy (a delivery or a probe), or None
    last_ok: float | None = None
    #: the last time anything was learnt about it
    heard: float = 0.0
    history: deque[Transition] = field(default_factory=lambda: deque(maxlen=HISTORY))


def evidence(outcomes: list[Outcome]) -> tuple[bool | None, str]:
    """What one attempt at a destination says about its primary: healthy (True), down
    (False) or nothing (None), with the reason to record."""
    if not outcomes:
        return None, ""
    if all(o.unreachable for o in outcomes):
        return False, outcomes[0].text
    for o in outcomes:
        if o.stage is Stage.RECIPIENT:
            return True, f"{o.relay or 'the primary'} answered: {o.text}"
    return None, ""


Listener = Callable[[str, Destination, Transition | None], None]


@dataclass
class Health:
    """Every destination's state machine.  ``listeners`` hear of every update, with the
    transition it made, if any."""

    destinations: dict[str, Destination] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)

    def get(self, domain: str) -> Destination | None:
        return self.destinations.get(domain.lower())

    def delivered(self, domain: str, outcomes: list[Outcome], now: float) -> Transition | None:
        """Learn from the outcomes of one attempt at ``domain``."""
        ok, reason = evidence(outcomes)
        if ok is None:
            return None
        return self.observe(domain, ok, reason, now)

    def observe(self, domain: str, ok: bool, reason: str, now: float) -> Transition | None:
        """The primary of ``domain`` was found healthy (``ok``) or unreachable."""
        d = domain.lower()
        dest = self.destinations.get(d)
        if dest is None:
            dest = self._add(d, State.UP if ok else State.DOWN, reason, now)
            moved: Transition | None = dest.history[-1]
        elif ok:
            moved = self._move(dest, State.RECOVERING if dest.state is State.DOWN
                               else dest.state, reason, now)
        else:
            moved = self._move(dest, State.DOWN, reason, now)
        if ok:
            dest.last_ok = now
        dest.heard = now
        self._tell(dest, moved)
        return moved

    def drained(self, queued: set[str], now: float) -> list[Transition]:
        """Every recovering destination without queued mail (``queued``: the domains that
        still have some) is up again."""
        moved = []
        for dest in list(self.destinations.values()):
            if dest.state is State.RECOVERING and dest.name not in queued:
                t = self._move(dest, State.UP, "the mail queued during the outage has drained",
                               now)
                if t is not None:
                    moved.append(t)
                    self._tell(dest, t)
        return moved

    def recovering(self) -> bool:
        """Some destination waits for its backlog to drain."""
        return any(d.state is State.RECOVERING for d in self.destinations.values())

    def healthy_until(self, domain: str, lifetime: float) -> float | None:
        """Until when the primary of ``domain`` counts as known healthy, or None (down, or
        never found healthy)."""
        dest = self.destinations.get(domain.lower())
        if dest is None or dest.state is State.DOWN or dest.last_ok is None:
            return None
        return dest.last_ok + lifetime

    def snapshot(self) -> list[tuple[str, State, float]]:
        """(destination, state, since), by name: what metrics and the status show."""
        return [(d.name, d.state, d.since) for d in sorted(self.destinations.values(),
                                                           key=lambda d: d.name)]

    def names(self) -> Iterable[str]:
        return self.destinations.keys()

    def _add(self, name: str, state: State, reason: str, now: float) -> Destination:
        if len(self.destinations) >= LIMIT:
            oldest = min(self.destinations.values(), key=lambda d: d.heard)
            del self.destinations[oldest.name]
        dest = Destination(name, state, now, reason, heard=now)
        dest.history.append(Transition(now, None, state, reason))
        self.destinations[name] = dest
        return dest

    @staticmethod
    def _move(dest: Destination, state: State, reason: str, now: float) -> Transition | None:
        if state is dest.state:
            return None
        t = Transition(now, dest.state, state, reason)
        dest.state, dest.since, dest.reason = state, now, reason
        dest.history.append(t)
        return t

    def _tell(self, dest: Destination, moved: Transition | None) -> None:
        for listener in self.listeners:
            listener(dest.name, dest, moved)
