"""Each destination's state machine, fed outcomes and probe results at times of a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from backupmx import health
from backupmx.envelope import BOUNCED, DEFERRED, DELIVERED, Envelope, Recipient
from backupmx.health import Health, State, evidence
from backupmx.outcome import Outcome, Stage
from backupmx.status import queued, report, text

REFUSED = Outcome(DEFERRED, "4.4.1", "connect to mx1.nausch.org[127.0.0.2]:25: Connection "
                  "refused", Stage.CONNECT)
LOST = Outcome(DEFERRED, "4.4.2", "lost connection with mx1.nausch.org[127.0.0.2] while "
               "sending end of data", Stage.SESSION, "mx1.nausch.org[127.0.0.2]:25")
UNKNOWN = Outcome(BOUNCED, "5.1.1", "host mx1.nausch.org[127.0.0.2] said: 550 5.1.1 unknown "
                  "(in reply to RCPT TO command)", Stage.RECIPIENT,
                  "mx1.nausch.org[127.0.0.2]:25", "smtp; 550 5.1.1 unknown")
SENT = Outcome(DELIVERED, "2.0.0", "250 2.0.0 Ok", Stage.RECIPIENT, "mx1.nausch.org[127.0.0.2]:25")
NO_DNS = Outcome(DEFERRED, "4.4.3", "Host or domain name not found", Stage.ROUTE)
SUSPENDED = Outcome(DEFERRED, "4.4.1", "delivery temporarily suspended: ...", Stage.SUSPENDED)


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def states(h: Health, domain: str = "nausch.org") -> list[tuple[State | None, State]]:
    dest = h.get(domain)
    assert dest is not None
    return [(t.old, t.new) for t in dest.history]


def test_evidence_reads_the_stage_never_the_text() -> None:
    assert evidence([SENT]) == (True, f"mx1.nausch.org[127.0.0.2]:25 answered: {SENT.text}")
    assert evidence([UNKNOWN])[0] is True  # a refused recipient: the primary is there
    assert evidence([REFUSED, REFUSED]) == (False, REFUSED.text)
    assert evidence([REFUSED, SENT])[0] is True
    for silent in ([], [LOST], [NO_DNS], [SUSPENDED], [LOST, REFUSED]):
        assert evidence(silent) == (None, "")


def test_first_word_sets_the_state(clock: Clock) -> None:
    h = Health()
    t = h.delivered("Nausch.ORG", [SENT], clock())
    assert t is not None and (t.old, t.new, t.time) == (None, State.UP, clock.now)
    other = h.delivered("example.com", [REFUSED], clock())
    assert other is not None and other.new is State.DOWN and other.reason == REFUSED.text
    assert h.snapshot() == [("example.com", State.DOWN, clock.now),
                            ("nausch.org", State.UP, clock.now)]


def test_outage_down_recovering_up(clock: Clock) -> None:
    h = Health()
    start = clock()
    h.delivered("nausch.org", [SENT], start)
    assert h.delivered("nausch.org", [SENT], clock.tick(5)) is None  # still up, no transition
    down = h.delivered("nausch.org", [REFUSED], clock.tick(10))
    assert down is not None and (down.old, down.new) == (State.UP, State.DOWN)
    assert h.delivered("nausch.org", [REFUSED], clock.tick(60)) is None
    assert h.get("nausch.org").since == down.time  # type: ignore[union-attr]
    back = h.observe("nausch.org", True, "mx1.nausch.org[127.0.0.2] answers again", clock.tick(30))
    assert back is not None and (back.old, back.new) == (State.DOWN, State.RECOVERING)
    assert h.recovering()
    # mail for it is still queued: still recovering, even as deliveries succeed
    assert h.drained({"nausch.org"}, clock.tick(1)) == []
    assert h.delivered("nausch.org", [SENT], clock.tick(1)) is None
    up = h.drained({"example.com"}, clock.tick(1))
    assert [(t.old, t.new, t.time) for t in up] == [(State.RECOVERING, State.UP, clock.now)]
    assert not h.recovering()
    assert states(h) == [(None, State.UP), (State.UP, State.DOWN),
                         (State.DOWN, State.RECOVERING), (State.RECOVERING, State.UP)]
    assert h.get("nausch.org").since == clock.now  # type: ignore[union-attr]


def test_down_again_while_recovering(clock: Clock) -> None:
    h = Health()
    h.delivered("nausch.org", [REFUSED], clock())
    h.observe("nausch.org", True, "answers", clock.tick(1))
    t = h.delivered("nausch.org", [REFUSED], clock.tick(1))
    assert t is not None and (t.old, t.new) == (State.RECOVERING, State.DOWN)


def test_healthy_until_counts_from_the_last_success(clock: Clock) -> None:
    h = Health()
    assert h.healthy_until("nausch.org", 180) is None
    h.delivered("nausch.org", [SENT], clock())
    assert h.healthy_until("nausch.org", 180) == clock.now + 180
    h.observe("nausch.org", True, "probe", clock.tick(60))
    assert h.healthy_until("nausch.org", 180) == clock.now + 180
    h.delivered("nausch.org", [REFUSED], clock.tick(1))
    assert h.healthy_until("nausch.org", 180) is None  # down: not healthy, however recent
    h.observe("nausch.org", True, "probe", clock.tick(1))
    assert h.healthy_until("nausch.org", 180) == clock.now + 180  # recovering counts


def test_listeners_hear_every_update_with_its_transition(clock: Clock) -> None:
    h = Health()
    heard: list[tuple[str, State | None]] = []
    h.listeners.append(lambda name, dest, moved: heard.append((name, moved and moved.new)))
    h.delivered("nausch.org", [SENT], clock())
    h.delivered("nausch.org", [SENT], clock.tick(1))
    h.delivered("nausch.org", [LOST], clock.tick(1))  # says nothing: nobody is told
    h.delivered("nausch.org", [REFUSED], clock.tick(1))
    assert heard == [("nausch.org", State.UP), ("nausch.org", None),
                     ("nausch.org", State.DOWN)]


def test_history_and_destinations_are_bounded(clock: Clock,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    h = Health()
    for i in range(health.HISTORY + 5):
        h.observe("nausch.org", i % 2 == 1, f"round {i}", clock.tick(1))
    dest = h.get("nausch.org")
    assert dest is not None and len(dest.history) == health.HISTORY
    assert dest.history[-1].reason == f"round {health.HISTORY + 4}"
    monkeypatch.setattr(health, "LIMIT", 3)
    for name in ("a.example", "b.example", "c.example"):
        h.observe(name, True, "ok", clock.tick(1))
    # the one heard from longest ago made room
    assert sorted(h.names()) == ["a.example", "b.example", "c.example"]


def _env(qid: str, arrival: float, *addrs: str, hold: bool = False,
         done: tuple[str, ...] = ()) -> Envelope:
    env = Envelope(id=qid, sender="s@sender.example", recipients=[Recipient(a) for a in addrs],
                   arrival=arrival, hold=hold)
    for r in env.recipients:
        if r.address in done:
            r.state = DELIVERED
    return env


def test_queue_per_destination() -> None:
    envs = [
        _env("A", 100.0, "a@nausch.org", "b@nausch.org", "c@example.com"),
        _env("B", 50.0, "d@nausch.org", hold=True),
        _env("C", 10.0, "e@nausch.org", "f@example.com", done=("e@nausch.org",)),
    ]
    assert queued(envs) == {
        "nausch.org": {"messages": 2, "recipients": 3, "held": 1, "oldest": 50.0},
        "example.com": {"messages": 2, "recipients": 2, "held": 0, "oldest": 10.0},
    }


def test_report_without_a_server_shows_the_queue_and_unknown_states() -> None:
    data = report(None, [_env("A", 0.0, "a@nausch.org")], 180, True)
    assert data == {"states_known": False, "standby": True, "destinations": [{
        "destination": "nausch.org", "state": None, "since": None, "reason": None,
        "last_ok": None, "healthy_until": None, "history": [],
        "queue": {"messages": 1, "recipients": 1, "held": 0, "oldest": "1970-01-01T00:00:00Z"},
    }], "catchall": []}
    assert text(data) == (
        "no running server answers: destination states are unknown\n"
        "standby_while_primary_up = yes\n"
        "nausch.org: unknown\n"
        "    queue: 1 messages, 1 recipients, oldest 1970-01-01T00:00:00Z\n")


def test_report_with_states() -> None:
    h = Health()
    h.delivered("nausch.org", [REFUSED], 60.0)
    h.observe("nausch.org", True, "mx1.nausch.org[127.0.0.2]:25 answers EHLO", 120.0)
    h.delivered("example.com", [SENT], 0.0)
    data = report(h, [_env("A", 30.0, "a@nausch.org")], 180, False)
    assert data["states_known"] and not data["standby"]
    ex, na = data["destinations"]
    assert (ex["destination"], ex["state"], ex["since"], ex["healthy_until"]) == (
        "example.com", "up", "1970-01-01T00:00:00Z", "1970-01-01T00:03:00Z")
    assert ex["queue"]["messages"] == 0
    assert na["state"] == "recovering" and na["since"] == "1970-01-01T00:02:00Z"
    assert na["history"] == [
        {"time": "1970-01-01T00:01:00Z", "from": None, "to": "down", "reason": REFUSED.text},
        {"time": "1970-01-01T00:02:00Z", "from": "down", "to": "recovering",
         "reason": "mx1.nausch.org[127.0.0.2]:25 answers EHLO"},
    ]
    assert "nausch.org: recovering since 1970-01-01T00:02:00Z" in text(data)
