"""RedisState against the real Redis: the same KPIs as MemoryState, exactly, whatever the
batching, order and duplication; a batch counts once; conflicts apply nothing."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from kpi_core.config import Config
from kpi_core.engine import ALL, CALLBACKS, WAITING, Engine
from kpi_core.events import Event, parse_event, parse_line
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import KB_SCOPE_PREFIX, MemoryState
from streams.redis.keys import decode, encode
from streams.redis.state import RedisState
from streams.redis.write import BatchConflict

pytestmark = pytest.mark.integration

CONFIG = Config()
Flat = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def events_of(lines: Iterable[bytes]) -> list[Event]:
    return [parse_line(line) for line in lines]


def memory_snapshot(events: Sequence[Event], at: float) -> Flat:
    store = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    engine = Engine(CONFIG, store)
    for event in events:
        engine.handle(event, at)
    engine.maintain(at)
    return flatten(snapshot(CONFIG, store, at))


def make_state(client: Any, prefix: str, at: float) -> RedisState:
    return RedisState(client, CONFIG, prefix=prefix, clock=lambda: at)


def run_batches(state: RedisState, events: Sequence[Event], at: float, size: int = 7) -> None:
    engine = Engine(CONFIG, state)
    for start in range(0, len(events), size):
        with state.batch():
            for event in events[start : start + size]:
                engine.handle(event, at)
    with state.batch():
        engine.maintain(at)


def redis_snapshot(state: RedisState, at: float) -> Flat:
    return flatten(snapshot(CONFIG, state, at))


def assert_golden(flat: Flat, expected: Flat) -> None:
    for key, value in expected.items():
        assert key in flat, f"missing {key}"
        assert flat[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        name, labels = key
        total = (name, tuple((k, ALL if k == "queue" else v) for k, v in labels))
        assert flat[total] == pytest.approx(value, rel=1e-12, abs=1e-12), total


def without(flat: Flat, *names: str) -> Flat:
    return {key: value for key, value in flat.items() if key[0] not in names}


# -- equivalence with MemoryState -------------------------------------------------------------
def test_golden_in_batches_equals_memory_and_expected(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float, golden_expected: Flat
) -> None:
    events = events_of(golden_lines)
    state = make_state(redis_client, redis_prefix, golden_at)
    run_batches(state, events, golden_at)
    got = redis_snapshot(state, golden_at)
    assert got == memory_snapshot(events, golden_at)
    assert_golden(got, golden_expected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_golden_shuffled_equals_memory(
    redis_client: Any,
    redis_prefix: str,
    golden_lines: list[bytes],
    golden_at: float,
    golden_expected: Flat,
    seed: int,
) -> None:
    events = events_of(golden_lines)
    random.Random(seed).shuffle(events)
    state = make_state(redis_client, redis_prefix, golden_at)
    run_batches(state, events, golden_at, size=random.Random(seed).randint(1, 13))
    got = redis_snapshot(state, golden_at)
    assert got == memory_snapshot(events, golden_at)
    assert_golden(got, golden_expected)


def test_golden_every_event_twice(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float, golden_expected: Flat
) -> None:
    events = [event for event in events_of(golden_lines) for event in (event, event)]
    state = make_state(redis_client, redis_prefix, golden_at)
    run_batches(state, events, golden_at)
    got = redis_snapshot(state, golden_at)
    assert got == memory_snapshot(events, golden_at)
    assert_golden(got, golden_expected)
    duplicates = {labels: v for (name, labels), v in got.items() if name == "ccmon_events_duplicate_total"}
    assert sum(duplicates.values()) == len(golden_lines)


def test_batch_applied_twice_changes_nothing(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float
) -> None:
    """A crash after the commit and before Kafka's offset commit replays the batch: the
    second run finds every event seen (the seen sets left in the same transaction)."""
    events = events_of(golden_lines)
    state = make_state(redis_client, redis_prefix, golden_at)
    run_batches(state, events, golden_at, size=10)
    before = redis_snapshot(state, golden_at)
    run_batches(make_state(redis_client, redis_prefix, golden_at), events, golden_at, size=10)
    after = redis_snapshot(state, golden_at)
    dup = "ccmon_events_duplicate_total"
    assert without(after, dup) == without(before, dup)
    assert sum(v for (name, _), v in after.items() if name == dup) == len(events)


def test_failed_batch_applies_nothing(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float
) -> None:
    events = events_of(golden_lines)
    state = make_state(redis_client, redis_prefix, golden_at)
    engine = Engine(CONFIG, state)
    with pytest.raises(RuntimeError), state.batch():
        for event in events:
            engine.handle(event, golden_at)
        raise RuntimeError("crash before the commit")
    assert redis_client.keys(f"{redis_prefix}:*") == []
    run_batches(state, events, golden_at)
    assert redis_snapshot(state, golden_at) == memory_snapshot(events, golden_at)


# -- conflicts ----------------------------------------------------------------------------------
def call_event(event_id: str, kind: str, ts: float, **fields: Any) -> Event:
    return parse_event({"event_id": event_id, "type": kind, "ts": ts, "queue": "support", **fields})


def test_conflict_on_a_shared_customer_record(redis_client: Any, redis_prefix: str, golden_at: float) -> None:
    """Two workers touch the same customer in overlapping batches: the later commit fails
    with BatchConflict, applies nothing, and succeeds when recomputed."""
    at = golden_at
    a = make_state(redis_client, redis_prefix, at)
    b = make_state(redis_client, redis_prefix, at)
    engine_a, engine_b = Engine(CONFIG, a), Engine(CONFIG, b)
    first = call_event("e1", "call.offered", at - 600, call_id="c1", customer_id="cust")
    second = call_event("e2", "call.offered", at - 300, call_id="c2", customer_id="cust")

    def offered() -> float:
        flat = redis_snapshot(a, at)
        return flat[("ccmon_calls_offered_total", (("tenant", "default"), ("queue", "support")))]

    with pytest.raises(BatchConflict), a.batch():
        engine_a.process(first, at)  # reads (and watches) the customer record
        with b.batch():
            engine_b.process(second, at)  # commits first, rewriting the customer record
    assert offered() == 1  # only b's event
    assert redis_client.exists(a._record_key("call", "default", "c1")) == 0
    with a.batch():  # recompute from scratch
        assert engine_a.process(first, at)
    flat = redis_snapshot(a, at)
    assert offered() == 2
    repeat = flat[("ccmon_repeat_caller_ratio", (("tenant", "default"), ("queue", "support"), ("window", "1h")))]
    assert repeat == pytest.approx(0.5)  # c2 repeats c1, whichever committed first


def test_a_record_read_by_a_batch_and_changed_before_its_commit_conflicts(
    redis_client: Any, redis_prefix: str, golden_at: float
) -> None:
    """No WATCH on records: the batch script compares each record's version as the batch read
    it (the SHA-1 of its value) with the stored one before writing anything: a change by any
    writer (another worker, one of an earlier release, a tool) conflicts. The same content
    written again (a no-op for what the batch computed) passes."""
    at = golden_at
    a = make_state(redis_client, redis_prefix, at)
    key = a._record_key("call", "default", "c1")

    def offered() -> float:
        flat = redis_snapshot(a, at)
        return flat.get(("ccmon_calls_offered_total", (("tenant", "default"), ("queue", "support"))), 0.0)

    redis_client.set(key, b'{"note":"written by a tool"}', px=3_600_000)
    event = call_event("e1", "call.offered", at - 600, call_id="c1")
    with pytest.raises(BatchConflict, match="1 record\\(s\\) it read were changed by another writer"), a.batch():
        Engine(CONFIG, a).process(event, at)
        redis_client.set(key, b'{"note":"changed meanwhile"}', keepttl=True)
    assert offered() == 0 and redis_client.get(key) == b'{"note":"changed meanwhile"}'  # nothing written

    with a.batch():  # unchanged since read: applied
        Engine(CONFIG, a).process(event, at)
    assert offered() == 1 and a.get_record("call", "default", "c1")["note"] == "changed meanwhile"

    later = call_event("e2", "call.answered", at - 590, call_id="c1", agent_id="a1")
    with pytest.raises(BatchConflict), a.batch():  # changed meanwhile by another RedisState
        Engine(CONFIG, a).process(later, at)
        with make_state(redis_client, redis_prefix, at).batch() as other:
            record = other.get_record("call", "default", "c1")
            assert record is not None
            other.put_record("call", "default", "c1", {**record, "note": "another writer"}, at + 3600)
    assert offered() == 1 and a.get_record("call", "default", "c1")["note"] == "another writer"

    with pytest.raises(BatchConflict), a.batch():  # one byte changed, the length kept: still seen
        Engine(CONFIG, a).process(later, at)
        redis_client.set(key, redis_client.get(key).replace(b"another writer", b"anotherXwriter"), keepttl=True)
    assert offered() == 1 and a.get_record("call", "default", "c1")["note"] == "anotherXwriter"

    with a.batch():  # the same content written again meanwhile: the batch still holds
        Engine(CONFIG, a).process(later, at)
        with make_state(redis_client, redis_prefix, at).batch() as other:
            record = other.get_record("call", "default", "c1")
            assert record is not None
            other.put_record("call", "default", "c1", record, at + 3600)
    flat = redis_snapshot(a, at)
    assert flat[("ccmon_calls_answered_total", (("tenant", "default"), ("queue", "support")))] == 1


def test_conflict_on_the_same_event_applied_by_another_writer(
    redis_client: Any, redis_prefix: str, golden_at: float
) -> None:
    """An event that touches no record (a survey answer) processed by two workers at once
    counts once: the loser's batch conflicts in the commit script."""
    at = golden_at
    a = make_state(redis_client, redis_prefix, at)
    b = make_state(redis_client, redis_prefix, at)
    survey = parse_event(
        {"event_id": "s1", "type": "survey.response", "ts": at - 60, "queue": "support", "survey": "ces", "score": 6}
    )
    with pytest.raises(BatchConflict), a.batch():
        assert Engine(CONFIG, a).process(survey, at)
        with b.batch():
            assert Engine(CONFIG, b).process(survey, at)
    with a.batch():
        assert not Engine(CONFIG, a).process(survey, at)  # now a duplicate
    flat = redis_snapshot(a, at)
    assert flat[("ccmon_survey_responses_total", (("tenant", "default"), ("queue", "support")))] == 1
    assert flat[("ccmon_events_duplicate_total", (("type", "survey.response"),))] == 1


# -- names and keys ---------------------------------------------------------------------------
ODD_NAMES = ["a:b", "{x}", "}{", "with space", "ünï cødé 😀", "~tilde", "x" * 128, "q:{t:default}:b:f"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_encode_round_trips(name: str) -> None:
    part = encode(name)
    assert decode(part) == name
    assert not set(part) & set(":{}")


def test_odd_names_round_trip(redis_client: Any, redis_prefix: str, golden_at: float) -> None:
    at = golden_at
    state = make_state(redis_client, redis_prefix, at)
    engine = Engine(CONFIG, state)
    tenants = ["acme:{1}", "plain"]
    with state.batch():
        for t, tenant in enumerate(tenants):
            for q, queue in enumerate(ODD_NAMES):
                base = {"tenant": tenant, "queue": queue}
                engine.process(
                    parse_event(
                        {
                            **base,
                            "event_id": f"o{t}-{q}",
                            "type": "call.offered",
                            "ts": at - 100,
                            "call_id": f"id:{{{q}}} ü",
                        }
                    ),
                    at,
                )
                engine.process(
                    parse_event(
                        {
                            **base,
                            "event_id": f"r{t}-{q}",
                            "type": "callback.requested",
                            "ts": at - 50,
                            "callback_id": f"cb {q}",
                            "customer_id": f"c:{q}",
                        }
                    ),
                    at,
                )
            engine.process(
                parse_event(
                    {
                        "tenant": tenant,
                        "event_id": f"kb{t}",
                        "type": "kb.viewed",
                        "ts": at - 10,
                        "article_id": "art:{1}",
                        "session_id": "s 1",
                    }
                ),
                at,
            )
    scopes = state.scopes()
    assert set(scopes) == set(tenants)
    for t, tenant in enumerate(tenants):
        assert set(scopes[tenant]) == {*ODD_NAMES, KB_SCOPE_PREFIX + "art:{1}"}
        for q, queue in enumerate(ODD_NAMES):
            # member: queue, call id, leg (the offer's event id)
            assert state.live(WAITING, tenant, queue) == {f"{queue}\x1fid:{{{q}}} ü\x1fo{t}-{q}": at - 100}
            assert state.live(CALLBACKS, tenant, queue) == {f"c:{q}": at - 50}
            assert state.read_window(tenant, queue, at - 3600, at)["offered"] == 1
            assert state.totals(tenant, queue)["cb_due"] == 1
            assert state.get_record("call", tenant, f"id:{{{q}}} ü") is not None
    # Every key of a tenant carries its hash tag; totals keep, buckets and records expire.
    for tenant in tenants:
        tag = f"{redis_prefix}:{{t:{encode(tenant)}}}:"
        keys = [
            k.decode()
            for k in redis_client.scan_iter(match=f"{tag}*".replace("{", "\\{").replace("}", "\\}").replace("[", "\\["))
        ]
        assert keys
        for key in keys:
            ttl = redis_client.ttl(key)
            if ":tot:" in key or ":live:" in key or ":count:" in key or key.endswith((":scopes", ":counts")):
                assert ttl == -1, key
            else:
                assert ttl > 0, key
    flat = redis_snapshot(state, at)
    assert flat[("ccmon_calls_waiting", (("tenant", "acme:{1}"), ("queue", "ünï cødé 😀")))] == 1


def test_writes_outside_a_batch_apply_at_once(redis_client: Any, redis_prefix: str, golden_at: float) -> None:
    state = make_state(redis_client, redis_prefix, golden_at)
    assert state.claim_event("t", "e", golden_at)
    assert not state.claim_event("t", "e", golden_at)
    state.add("t", "q", golden_at - 5, {"offered": 1, "max_wait": 3})
    state.add("t", "q", golden_at - 5, {"offered": 1, "max_wait": 2})
    state.count("events", "call.offered")
    state.count_max("last_event_ts", "", 5.0)
    state.count_max("last_event_ts", "", 4.0)
    assert state.read_window("t", "q", golden_at - 60, golden_at) == {"offered": 2, "max_wait": 3}
    assert state.counts() == {"events": {"call.offered": 1}, "last_event_ts": {"": 5.0}}


def test_two_upkeeps_expire_a_call_once(redis_client: Any, redis_prefix: str, golden_at: float) -> None:
    at = golden_at
    a = make_state(redis_client, redis_prefix, at)
    b = make_state(redis_client, redis_prefix, at)
    engine_a, engine_b = Engine(CONFIG, a), Engine(CONFIG, b)
    with a.batch():  # a call offered 5 h ago that never got an outcome
        engine_a.process(call_event("w1", "call.offered", at - 5 * 3600, call_id="stuck"), at)
    with pytest.raises(BatchConflict), a.batch():
        engine_a.maintain(at)
        with b.batch():
            engine_b.maintain(at)
    with a.batch():
        engine_a.maintain(at)
    flat = redis_snapshot(a, at)
    assert flat[("ccmon_calls_expired_total", (("tenant", "default"), ("queue", "support")))] == 1
    assert flat[("ccmon_calls_waiting", (("tenant", "default"), ("queue", "support")))] == 0


# -- the scrape's prefetched reader ------------------------------------------------------------
def _random_calls(rng: random.Random, at: float, queues: Sequence[str], tenants: Sequence[str], n: int) -> list[Event]:
    """Calls over the last 26 hours (so ``today`` and every sliding window have edges), some
    arriving late, in several tenants and oddly named queues."""
    raw: list[dict[str, Any]] = []
    for i in range(n):
        tenant, queue = rng.choice(tenants), rng.choice(queues)
        offered = at - rng.uniform(0, 26 * 3600)
        call = {"tenant": tenant, "queue": queue, "call_id": f"c{i}"}
        raw.append({**call, "event_id": f"{i}o", "type": "call.offered", "ts": round(offered, 3)})
        wait = rng.choice([rng.uniform(0, 40), rng.uniform(0, 400)])
        if offered + wait >= at:
            continue
        if rng.random() < 0.75:
            raw.append(
                {**call, "event_id": f"{i}a", "type": "call.answered", "ts": round(offered + wait, 3), "agent_id": "a1"}
            )
            if offered + wait + 120 < at:
                raw.append(
                    {
                        **call,
                        "event_id": f"{i}e",
                        "type": "call.ended",
                        "ts": round(offered + wait + 120, 3),
                        "talk_seconds": rng.choice([37, 90.25, 113.5]),
                    }
                )
        else:
            raw.append({**call, "event_id": f"{i}b", "type": "call.abandoned", "ts": round(offered + wait, 3)})
    rng.shuffle(raw)  # late arrivals: buckets written out of time order
    return [parse_event(e) for e in raw]


def _fold_into(config: Config, stores: Iterable[Any], events: Sequence[Event], now: float, batch: int) -> None:
    """``events`` through the engine into each store, ``batch`` at a time (one Redis
    transaction each)."""
    for store in stores:
        engine = Engine(config, store)
        for i in range(0, len(events), batch):
            with store.batch() if isinstance(store, RedisState) else contextlib.nullcontext():
                for event in events[i : i + batch]:
                    engine.handle(event, now)


def test_snapshot_reader_equals_the_store_at_moving_instants(redis_client: Any, redis_prefix: str) -> None:
    """The exporter's SnapshotReader (window sums in Redis, reads prefetched, bucket indexes)
    gives exactly the snapshot of the store's own reads and of MemoryState, as windows slide
    and the day turns; also for state without bucket indexes (written before they existed)."""
    from kpi_core.config import config_from_dict

    config = config_from_dict({"tenants": {"acme": {"timezone": "Asia/Kathmandu"}, "default": {"timezone": "UTC"}}})
    rng = random.Random(7)
    base = 1795003200.0  # 2026-11-17T09:20:00Z
    events = _random_calls(rng, base, ["support", "sales:{eu}", "ünï cødé", "x" * 60], ["default", "acme"], 600)
    redis_state = RedisState(redis_client, config, prefix=redis_prefix, clock=lambda: base)
    memory = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    _fold_into(config, (redis_state, memory), events, base, 50)
    for at in (base, base + 420, base + 3600, base + 15 * 3600 + 45 * 60):
        want = flatten(snapshot(config, memory, at))
        assert flatten(snapshot(config, redis_state, at)) == want
        assert flatten(snapshot(config, redis_state.snapshot_reader(config, at), at)) == want, at
    indexes = list(redis_client.scan_iter(match=f"{redis_prefix}:*:bi:*", count=1000))
    assert indexes, "the writes keep bucket indexes"
    redis_client.delete(*indexes)
    assert flatten(snapshot(config, redis_state.snapshot_reader(config, base), base)) == flatten(
        snapshot(config, memory, base)
    )


def test_a_resent_event_is_a_duplicate_even_with_another_ts(redis_client: Any, redis_prefix: str) -> None:
    """Idempotence on event_id alone, in Redis too: the copy re-stamped into the next hour (and
    the next day) is a duplicate, in the same batch or a later one."""
    at = 1795003200.0 + 6 * 3600
    first = {"event_id": "e1", "type": "survey.response", "ts": at - 3601, "queue": "q", "survey": "nps", "score": 0}
    copies = [{**first, "ts": at - 3599}, {**first, "ts": at - 10}]
    state = make_state(redis_client, redis_prefix, at)
    engine = Engine(CONFIG, state)
    with state.batch():
        assert [engine.handle(parse_event(e), at) for e in (first, copies[0])] == ["accepted", "duplicate"]
    with state.batch():
        assert engine.handle(parse_event(copies[1]), at) == "duplicate"
    flat = redis_snapshot(state, at)
    assert flat[("ccmon_survey_responses_total", (("tenant", "default"), ("queue", "q")))] == 1
    assert flat[("ccmon_events_duplicate_total", (("type", "survey.response"),))] == 2


def test_live_sets_are_summed_up_in_redis_as_in_memory(redis_client: Any, redis_prefix: str) -> None:
    """Scrapes read live sets as summaries computed inside Redis (LIVE_LUA): sizes, members in
    a score range (count, oldest, sum of ages in ascending order) and agents by state. They
    equal MemoryState's to the bit, through the store and the SnapshotReader, for sets of
    thousands of members, tied scores, odd names and open bounds."""
    import math

    from kpi_core.engine import AGENTS, TICKETS

    at = 1795003200.0
    rng = random.Random(11)
    state = make_state(redis_client, redis_prefix, at)
    memory = MemoryState()
    scopes = ["q", "sales:{eu}", "ünï cødé", ALL]
    with state.batch():
        for store in (state, memory):
            for scope in scopes:
                for i in range(3000 if scope == "q" else 40):
                    agent_state = rng.choice(["available", "on_call", "acw", "away", "logged_out"])
                    score = at - rng.choice([0, 1, 2.5, 60, 3600.125, 86400]) + rng.choice([0.0, 0.0, 30.0])
                    store.live_put(AGENTS, "t", scope, f"{agent_state}\x1fagent-{i}", score)
                    store.live_put(TICKETS, "t", scope, f"\x1ftk\x1f{i}", at - rng.random() * 1e6)
                    store.live_put(CALLBACKS, "t", scope, f"\x1fcb\x1f{i}", at + rng.uniform(-7200, 600))
            rng.seed(11)  # the same sets in both stores
    reader = state.snapshot_reader(Config(), at)
    bounds = [(-math.inf, at), (at - 3600.125, at), (-math.inf, math.inf), (at - 60, at - 1), (at + 1, at + 2)]
    for scope in [*scopes, "empty"]:
        for name in (AGENTS, TICKETS, CALLBACKS):
            want = memory.live_size(name, "t", scope)
            assert state.live_size(name, "t", scope) == want
            assert reader.live_size(name, "t", scope) == want
            for lo, hi in bounds:
                want_summary = memory.live_summary(name, "t", scope, lo, hi, at)
                assert state.live_summary(name, "t", scope, lo, hi, at) == want_summary, (name, scope, lo, hi)
                assert reader.live_summary(name, "t", scope, lo, hi, at) == want_summary
        want_states = memory.live_states(AGENTS, "t", scope, at)
        assert state.live_states(AGENTS, "t", scope, at) == want_states
        assert reader.live_states(AGENTS, "t", scope, at) == want_states
    big = memory.live_summary(TICKETS, "t", "q", -math.inf, at, at)
    assert big.size == 3000 and big.oldest is not None and big.age_sum > 0
    every, before = memory.live_states(AGENTS, "t", "q", at)
    assert sum(every.values()) == 3000 and 0 < sum(before.values()) < 3000


def test_snapshot_of_a_simulated_day_in_redis_equals_memory(redis_client: Any, redis_prefix: str) -> None:
    """A simulated contact center (agents changing state, callbacks, tickets, surveys) folded
    into Redis and into MemoryState: the exporter's SnapshotReader, the store's own reads and
    MemoryState give the same snapshot at instants through the day, live-set gauges included."""
    from streams.sim import SimParams, Simulator, default_queues

    start = 1795003200.0  # 2026-11-17T09:20:00Z
    params = SimParams(start=start, hours=3, queues=default_queues(6), seed=5)
    events = [parse_event(r) for _t, r in Simulator(params).stream() if isinstance(r, dict)]
    assert {"agent.state", "callback.requested", "ticket.created"} <= {e.type for e in events}
    config = Config()
    at_end = start + 3 * 3600
    redis_state = RedisState(redis_client, config, prefix=redis_prefix, clock=lambda: at_end)
    memory = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    _fold_into(config, (redis_state, memory), events, at_end, 500)
    # At the writers' clock and after it (the stores keep what a window can still need from
    # then on, not what instants before the clock needed).
    for at in (at_end, at_end + 17.5, at_end + 420):
        want = flatten(snapshot(config, memory, at))
        if at == at_end:  # live sets hold the latest state: agents count from their last change
            assert any(key[0] == "ccmon_agents" and value for key, value in want.items())
            assert any(key[0] == "ccmon_tickets_open" and value for key, value in want.items())
        got = flatten(snapshot(config, redis_state, at))
        # Exactly: every delta is a whole number (durations and occupancy's time terms in ms),
        # added by HINCRBY, so Redis and MemoryState hold the same integers.
        assert got.keys() == want.keys()
        wrong = {k: (v, want[k]) for k, v in got.items() if v != want[k]}
        assert not wrong, (at, list(wrong.items())[:5])
        live = {
            k: v
            for k, v in want.items()
            if k[0].startswith(
                (
                    "ccmon_agents",
                    "ccmon_tickets_open",
                    "ccmon_calls_waiting",
                    "ccmon_callbacks",
                    "ccmon_open_ticket_age",
                )
            )
        }
        assert {k: got[k] for k in live} == live
        assert flatten(snapshot(config, redis_state.snapshot_reader(config, at), at)) == got, at


def test_the_read_plans_first_wave_leaves_in_one_round_trip(
    redis_client: Any, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seen ids, the guard's names and records of every kind asked for before the batch
    needs one are read in one round trip (with a record asked for then), each as stored; a
    record the batch writes after asking for it keeps what the batch wrote."""
    import streams.redis.write

    at = 1_795_168_800.0
    state = make_state(redis_client, redis_prefix, at)
    with state.batch():
        state.put_record("call", "default", "c1", {"queue": "support", "n": 1}, at + 3600)
        state.put_record("call", "default", "c2", {"queue": "sales", "n": 2}, at + 3600)
        state.put_record("customer", "default", "u1", {"calls": [1, 2]}, at + 3600)
        assert state.claim_event("default", "e1", at)
        state.series_touch("queue", "default", "support", at - 60)

    sends: list[int] = []
    send = streams.redis.write._send
    monkeypatch.setattr(
        streams.redis.write, "_send", lambda pipe, commands: sends.append(len(commands)) or send(pipe, commands)
    )
    with state.batch():
        state.prefetch_seen([("default", "e1", at), ("default", "e2", at)])
        state.prefetch_series([("queue", "default", "support"), ("queue", "default", "new")], at - 3600)
        state.prefetch_records("call", "default", ["c1", "c2", "c9"])
        state.prefetch_records("customer", "default", ["u1"])
        state.prefetch_records("agent_calls", "default", ["a1"])
        state.put_record("agent_calls", "default", "a1", {"written": True}, at + 3600)
        assert sends == []
        assert state.get_record("callback", "default", "b1") is None  # not asked for: with the rest
        assert sends == [4]  # in one write: the seen ids' ZMSCORE, the names' ZMSCORE and ZCOUNT, one MGET
        assert state.get_record("call", "default", "c1") == {"queue": "support", "n": 1}
        assert state.get_record("call", "default", "c2") == {"queue": "sales", "n": 2}
        assert state.get_record("call", "default", "c9") is None
        assert state.get_record("customer", "default", "u1") == {"calls": [1, 2]}
        assert state.get_record("agent_calls", "default", "a1") == {"written": True}
        assert not state.claim_event("default", "e1", at)
        assert state.claim_event("default", "e2", at)
        assert state.series_seen("queue", "default", "support") == at - 60
        assert state.series_seen("queue", "default", "new") is None
        assert state.series_count("queue", "default", at - 3600) == 1
        assert sends == [4]
    assert len(sends) == 2  # and the batch script


def test_a_scrape_reads_in_four_round_trips_and_loads_its_scripts_when_redis_lost_them(own_redis: Any) -> None:
    """Under load every round trip of a scrape waits for the batch Redis is running, so the
    SnapshotReader reads in four whatever the number of scopes and tenants (one more per
    further window-script call of WINDOW_SCOPES_PER_CALL scopes), with the workers' counters,
    consumer lag and stuck partitions among them. Its scripts go by EVALSHA alone: a Redis
    that lost them (SCRIPT FLUSH, a restart) gets them loaded, and the scrape is the same."""
    import redis as redis_lib
    from redis.connection import AbstractConnection

    from streams.exporter import KpiCollector
    from streams.redis.read import WINDOW_SCOPES_PER_CALL

    client = redis_lib.Redis.from_url(own_redis.url)
    at = 1795003200.0
    rng = random.Random(3)
    many = [f"q{i:03d}" for i in range(WINDOW_SCOPES_PER_CALL + 5)]  # two window calls for "acme"
    events = _random_calls(rng, at, ["support", "sales"], ["default"], 150)
    events += _random_calls(rng, at, many, ["acme"], 400)
    from kpi_core.config import config_from_dict

    config = config_from_dict({"tenants": {"acme": {"timezone": "Asia/Kathmandu"}, "default": {"timezone": "UTC"}}})
    state = RedisState(client, config, prefix="rt", clock=lambda: at)
    _fold_into(config, (state,), events, at, 50)
    with state.batch():
        state.count("rejected", "bad_json", 3.0)
    state.put_consumer_lag({("events", 0): 12.0, ("events", 1): 0.0})
    state.put_stuck_partitions({("events", 1): at - 60})
    windows_calls = sum(-(-len(scopes) // WINDOW_SCOPES_PER_CALL) for scopes in state.scopes().values())
    assert windows_calls == 3  # default: 1, acme: 2

    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        send(self, command, check_health)

    want = flatten(snapshot(config, state, at))  # the store's own reads, one by one
    assert want[("ccmon_events_rejected_total", (("reason", "bad_json"),))] == 3
    collector = KpiCollector(config, state, lambda: at)
    collector.families()  # the scripts are loaded
    for flushed in (False, True):
        if flushed:
            client.script_flush()
        sent.clear()
        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        try:
            families = collector.families()
        finally:
            AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
        # Round trips: 4, one per further window call, and after the flush, the scripts
        # loaded (two SCRIPT LOADs) and the fourth again; never a SCRIPT EXISTS.
        assert len(sent) == 4 + (windows_calls - 1) + (3 if flushed else 0), [c[:60] for c in sent]
        assert not any(b"EXISTS" in c[:40] for c in sent)
        got = {f.name: f for f in families}
        assert got["ccmon_consumer_lag"].samples == [
            ("", (("topic", "events"), ("partition", "0")), 12.0),
            ("", (("topic", "events"), ("partition", "1")), 0.0),
        ]
        assert got["ccmon_stuck_partition_timestamp_seconds"].samples == [
            ("", (("topic", "events"), ("partition", "1")), at - 60)
        ]
        kpis = [f for f in families if f.name not in {"ccmon_consumer_lag", "ccmon_stuck_partition_timestamp_seconds"}]
        kpis = [f for f in kpis if f.name != "ccmon_exporter_scrape_seconds"]
        assert flatten(kpis) == want
