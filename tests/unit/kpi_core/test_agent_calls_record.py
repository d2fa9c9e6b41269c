"""An agent's ``agent_calls`` record (:meth:`kpi_core.engine.agents.AgentsMixin._agent_calls`,
issue #16): day counts, current calls and future-stamped facts instead of every fact of the
day, so its size and the work per call event do not grow with the day; the answers of
:func:`kpi_core.kpis.live_agents` are those of the calls' facts in any arrival order; a record
in the format before (``calls``) is read and converted on its next write; old ``talk`` facts
and old days are pruned only when due."""

from __future__ import annotations

import marshal
import random
from collections.abc import Callable
from typing import Any

from kpi_core.config import config_from_dict
from kpi_core.engine import AGENT_CALLS, DAY, Engine
from kpi_core.events import Event, parse_event, parse_ts
from kpi_core.kpis import live_agents
from kpi_core.state import MemoryState

AT = parse_ts("2026-11-20T10:00:00Z")  # local midnight (UTC) is AT - 10 h
MIDNIGHT = AT - 10 * 3600
CONFIG = config_from_dict({"tenants": {"acme": {}}})


def event(n: int, kind: str, ts: float, **fields: Any) -> Event:
    return parse_event({"event_id": f"e{n}", "tenant": "acme", "type": kind, "ts": ts, **fields})


def on_call(n: int, agent: str, ts: float) -> Event:
    return event(n, "agent.state", ts, agent_id=agent, state="on_call", queues=["q"])


def calls_handled(agent: str, count: int, start: float, first: int = 0) -> list[Event]:
    """``count`` inbound calls the agent answers and ends, one a minute from ``start``, each
    after a ring another agent (``b``) did not pick up."""
    events = []
    for i in range(first, first + count):
        t = start + 60 * (i - first)
        events += [
            event(4 * i, "call.offered", t, call_id=f"c{i}", queue="q"),
            event(4 * i + 1, "call.ring_no_answer", t + 5, call_id=f"c{i}", queue="q", agent_id="b"),
            event(4 * i + 2, "call.answered", t + 10, call_id=f"c{i}", queue="q", agent_id=agent),
            event(4 * i + 3, "call.ended", t + 40, call_id=f"c{i}", queue="q", talk_seconds=30),
        ]
    return events


def run(
    events: list[Event],
    now: float | None = None,
    store: MemoryState | None = None,
    clock: Callable[[Event], float] = lambda ev: ev.ts + 1,
) -> MemoryState:
    """Each event at ``now`` (None: at ``clock(event)``, by default its own time, as a stream
    delivers it)."""
    store = store if store is not None else MemoryState()
    engine = Engine(CONFIG, store)
    for ev in events:
        assert engine.handle(ev, clock(ev) if now is None else now) == "accepted", ev
    return store


def row(store: MemoryState, agent: str, at: float = AT) -> tuple[Any, ...]:
    found = {r["agent"]: r for r in live_agents(CONFIG, store, at, "acme")}[agent]
    return found["current_call"], found["current_queue"], found["handled_today"], found["missed_today"]


def from_calls(store: MemoryState, agent: str, at: float) -> tuple[Any, ...]:
    """What the calls' records last gave the agent (``agents``), read as ``live_agents`` does:
    the facts of the day up to ``at``, the newest current call (ties: the greatest call id)."""
    facts = [
        (key, fact)
        for kind, tenant, call in list(store._records)
        if kind == "call"
        for key, fact in (store.get_record(kind, tenant, call) or {}).get("agents", {}).get(agent, {}).items()
    ]
    talks = [(f[1], f[3], key, f) for key, f in facts if f[0] == "talk" and f[1] <= at]
    talk = max(talks)[3] if talks else None
    counts = [sum(1 for _k, f in facts if f[0] == kind and MIDNIGHT <= f[1] <= at) for kind in ("handled", "missed")]
    return (talk[3] if talk else None, talk[2] if talk else None, *counts)


def test_the_record_does_not_grow_with_the_day() -> None:
    agent_state = [on_call(9000, "a", MIDNIGHT + 3600)]
    store = run(agent_state + calls_handled("a", 20, MIDNIGHT + 7200))
    small = len(marshal.dumps(store.get_record(AGENT_CALLS, "acme", "a")))
    run(calls_handled("a", 180, MIDNIGHT + 8400, first=20), store=store)
    record = store.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and record["counts"] == {str(int(MIDNIGHT)): [200, 0]} and record["facts"] == {}
    assert len(marshal.dumps(record)) == small < 200
    ringing = store.get_record(AGENT_CALLS, "acme", "b")
    assert ringing is not None and ringing["counts"] == {str(int(MIDNIGHT)): [0, 200]}
    assert row(store, "a") == (None, None, 200, 0)


AGENTS = ["a0", "a1", "a2"]


def random_calls(rng: random.Random) -> list[Event]:
    """The agents on a call since midnight, and 40 calls: rings, answers, ends, late abandons
    and earlier answers by another agent that take an answer back, outbound calls, yesterday's
    calls, calls stamped after AT."""
    events = [on_call(9000 + n, a, MIDNIGHT + 60) for n, a in enumerate(AGENTS)]

    def add(kind: str, ts: float, **fields: Any) -> None:
        events.append(event(len(events), kind, ts, **fields))

    for i in range(40):
        call = f"c{i}"
        # Yesterday's calls all end (a current call max_call_age old is dropped when the agent's
        # record is next written, which the calls' records do not say); today's are younger.
        t = rng.choice([AT - rng.randint(11 * 3600, 20 * 3600), AT - rng.randint(60, 3 * 3600), AT + 30])
        ends = t < MIDNIGHT or rng.random() < 0.6
        if rng.random() < 0.15:
            agent = rng.choice(AGENTS)
            add("call.offered", t, call_id=call, queue="q", direction="outbound", agent_id=agent)
            if ends:
                add(
                    "call.ended", t + rng.randint(1, 200), call_id=call, queue="q", direction="outbound", talk_seconds=9
                )
            continue
        add("call.offered", t, call_id=call, queue="q")
        for _ring in range(rng.randint(0, 2)):
            add("call.ring_no_answer", t + rng.randint(1, 20), call_id=call, queue="q", agent_id=rng.choice(AGENTS))
        if rng.random() < 0.2:
            add("call.abandoned", t + rng.randint(1, 40), call_id=call, queue="q")
        if rng.random() < 0.9:
            add("call.answered", t + rng.randint(20, 40), call_id=call, queue="q", agent_id=rng.choice(AGENTS))
        if rng.random() < 0.2:  # another agent's answer, earlier or later: the first one is the outcome
            add("call.answered", t + rng.randint(15, 45), call_id=call, queue="q", agent_id=rng.choice(AGENTS))
        if ends:
            add("call.ended", t + rng.randint(50, 220), call_id=call, queue="q", talk_seconds=10)
    return events


def test_the_answers_are_the_calls_facts_in_any_arrival_order() -> None:
    """Random calls in shuffled orders, at one clock and each at its own time: each agent's
    row is what the calls' records gave it, up to AT and to AT + 300 (after every clock)."""
    for seed in range(12):
        rng = random.Random(seed)
        events = random_calls(rng)
        shuffled = list(events)
        rng.shuffle(shuffled)
        # At AT (yesterday's calls at their time: at AT they are older than the state kept).
        at_clock = run(shuffled, clock=lambda ev: AT if ev.ts >= MIDNIGHT else ev.ts + 1)
        streamed = run(shuffled)  # each at its own time: the clock goes back and forth
        for agent in AGENTS:
            for at in (AT, AT + 300):
                assert row(at_clock, agent, at) == from_calls(at_clock, agent, at), (seed, agent, at)
            assert row(streamed, agent, AT + 300) == from_calls(streamed, agent, AT + 300), (seed, agent)
            assert row(streamed, agent, AT + 300) == row(at_clock, agent, AT + 300), (seed, agent)


def test_a_fact_stamped_after_the_clock_counts_from_its_time_on() -> None:
    """A call ended 100 s ahead of the clock (within engine.max_future_seconds) counts from its
    end on, before and after a later write moves it into the day's counts."""
    store = run([on_call(9000, "a", AT - 600), *calls_handled("a", 1, AT - 60)], now=AT)  # ends at AT - 20
    ahead = [
        event(10, "call.offered", AT + 40, call_id="f", queue="q"),
        event(11, "call.answered", AT + 50, call_id="f", queue="q", agent_id="a"),
        event(12, "call.ended", AT + 100, call_id="f", queue="q", talk_seconds=50),
    ]
    run(ahead, now=AT, store=store)
    record = store.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and list(record["facts"].values()) == [["handled", AT + 100]]
    assert [row(store, "a", at)[2] for at in (AT, AT + 99, AT + 100)] == [1, 1, 2]
    run(calls_handled("a", 1, AT + 120, first=5), now=AT + 200, store=store)  # ends at AT + 160
    record = store.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and record["facts"] == {} and record["counts"] == {str(int(MIDNIGHT)): [3, 0]}
    assert row(store, "a", AT + 200)[2] == 3
    # A late abandon before the answer takes the call back, from the counts now.
    run([event(13, "call.abandoned", AT + 45, call_id="f", queue="q")], now=AT + 200, store=store)
    assert row(store, "a", AT + 200)[2] == 2


def test_a_record_in_the_old_format_is_read_and_converted_on_its_next_write() -> None:
    """A record written before the counts (``calls``: every fact of the day, as the calls'
    records gave them) answers the same, and its next write converts it: the facts it held
    can still be taken back."""
    events = [on_call(9000, "a", AT - 3600), *calls_handled("a", 3, AT - 1800)]
    events += [  # a ring a missed, and its current call
        event(20, "call.offered", AT - 300, call_id="x", queue="q"),
        event(21, "call.ring_no_answer", AT - 290, call_id="x", queue="q", agent_id="a"),
        event(22, "call.offered", AT - 200, call_id="y", queue="q"),
        event(23, "call.answered", AT - 190, call_id="y", queue="q", agent_id="a"),
    ]
    store = run(events)
    old = {
        key: fact
        for kind, tenant, call in list(store._records)
        if kind == "call"
        for key, fact in (store.get_record(kind, tenant, call) or {}).get("agents", {}).get("a", {}).items()
    }
    assert len(old) == 5
    store.put_record(AGENT_CALLS, "acme", "a", {"calls": old}, AT + DAY)
    assert row(store, "a") == ("y", "q", 3, 1)
    # Late: c0's caller had hung up before its answer, y's before its answer too; a new call.
    late = [
        event(30, "call.abandoned", AT - 1800 + 8, call_id="c0", queue="q"),
        event(31, "call.abandoned", AT - 195, call_id="y", queue="q"),
        *calls_handled("a", 1, AT - 120, first=9),
    ]
    run(late, store=store)
    record = store.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and "calls" not in record
    assert record["counts"] == {str(int(MIDNIGHT)): [3, 1]} and record["facts"] == {}
    assert row(store, "a") == (None, None, 3, 1) == from_calls(store, "a", AT)


def test_old_talk_facts_and_old_days_are_pruned_only_when_due() -> None:
    age = CONFIG.max_call_age_seconds
    t0 = AT - 3 * DAY
    store = MemoryState()
    scans: list[float] = []

    class Counted(Engine):  # a subclass, not a patched instance: the compiled engine's are read-only
        def _agent_calls_scan(self, tenant: str, rec: Any, oldest_talk: float) -> None:
            scans.append(oldest_talk)
            super()._agent_calls_scan(tenant, rec, oldest_talk)

    engine = Counted(CONFIG, store)

    def feed(events: list[Event]) -> None:
        for ev in events:
            assert engine.handle(ev, ev.ts + 1) == "accepted"

    # A call a answers and never ends, then calls it handles: nothing is due, nothing scanned.
    feed([on_call(9000, "a", t0), event(1, "call.offered", t0, call_id="z", queue="q")])
    feed([event(2, "call.answered", t0 + 10, call_id="z", queue="q", agent_id="a")])
    feed(calls_handled("a", 30, t0 + 60, first=10))
    record = store.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and list(record["facts"]) == ["z\x1fe1"] and record["first_talk"] == t0 + 10
    assert scans == []
    # max_call_age later, z is too old to be a current call: the next write drops it.
    feed(calls_handled("a", 1, t0 + 10 + age + 60, first=50))
    record = store.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and record["facts"] == {} and "first_talk" not in record and len(scans) == 1
    day0 = str(int(t0 - 10 * 3600))
    assert record["counts"] == {day0: [31, 0]}
    # Two days on, the first day's counts go; a late fact of that day is neither counted nor
    # taken off.
    feed(calls_handled("a", 1, t0 + 2 * DAY, first=60))
    record = store.get_record(AGENT_CALLS, "acme", "a")
    day2 = str(int(t0 - 10 * 3600 + 2 * DAY))
    assert record is not None and record["counts"] == {day2: [1, 0]} and len(scans) == 1
    feed([event(900, "call.abandoned", t0 + 68, call_id="c10", queue="q")])  # before its answer
    record = store.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and record["counts"] == {day2: [1, 0]}
    # The record expires a day after its newest fact (c60's end).
    assert store._records[(AGENT_CALLS, "acme", "a")][1] == t0 + 2 * DAY + 40 + DAY
