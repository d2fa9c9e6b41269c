"""The worker's batch processor on the real Redis, without Kafka: dead letters, exactly-once
effect of a replayed batch (rejections included), isolation of an event the engine fails on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kpi_core.config import Config
from kpi_core.engine import AGENT_CALLS, Engine
from kpi_core.kpis import flatten, snapshot
from streams.redis.state import RedisState
from streams.worker import INTERNAL_ERROR, BatchProcessor, Message

pytestmark = pytest.mark.integration

CONFIG = Config()


def messages(lines: list[bytes]) -> list[Message]:
    out = []
    # Half as single-event messages, half as one array envelope, plus bad ones.
    half = len(lines) // 2
    for offset, line in enumerate(lines[:half]):
        out.append(Message("events", 0, offset, b"k", line, 1795168000.0))
    envelope = b"[" + b",".join(lines[half:]) + b"]"
    out.append(Message("events", 1, 0, None, envelope, 1795168000.0))
    out.append(Message("events", 2, 0, b"bad", b"{not json", 1795168000.0))
    old = b'{"event_id": "x", "type": "call.offered", "ts": 1, "queue": "support", "call_id": "old"}'
    no_call = b'{"event_id": "y", "type": "call.answered", "ts": 1795168000, "agent_id": "a"}'
    out.append(Message("events", 2, 1, b"bad", b"[" + old + b", 7, " + no_call + b"]", 1795168000.0))
    return out


def rejected(flat: dict[Any, float]) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (name, labels), v in flat.items() if name == "ccmon_events_rejected_total"}


def test_process_and_replay(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float, golden_expected: dict[Any, float]
) -> None:
    clock = lambda: golden_at  # noqa: E731
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    processor = BatchProcessor(CONFIG, state, clock)
    batch = messages(golden_lines)
    result = processor.process(batch)
    assert result.accepted == len(golden_lines)
    reasons = sorted(d.reason for d in result.dead)
    assert reasons == ["invalid_json", "missing_field:call_id", "not_an_object", "too_late"]
    dead = {d.reason: d for d in result.dead}
    assert dead["invalid_json"].value == b"{not json"
    assert dead["invalid_json"].source == "events/2/0"
    assert json.loads(dead["too_late"].value)["call_id"] == "old"
    assert dict(dead["too_late"].headers)["ccmon-reason"] == b"too_late"
    flat = flatten(snapshot(CONFIG, state, golden_at))
    for key, value in golden_expected.items():
        assert flat[key] == pytest.approx(value)
    assert rejected(flat) == {"invalid_json": 1, "missing_field:call_id": 1, "not_an_object": 1, "too_late": 1}

    # The same batch again (a crash before the offsets were committed): nothing changes but
    # the duplicate count; the rejections are still dead-lettered (at least once).
    again = BatchProcessor(CONFIG, RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock), clock)
    result = again.process(batch)
    assert result.accepted == 0 and result.duplicates == len(golden_lines)
    assert len(result.dead) == 4
    flat2 = flatten(snapshot(CONFIG, state, golden_at))
    dup = "ccmon_events_duplicate_total"
    assert {k: v for k, v in flat2.items() if k[0] != dup} == {k: v for k, v in flat.items() if k[0] != dup}


def test_an_event_the_engine_fails_on_is_isolated(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = lambda: golden_at  # noqa: E731
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    processor = BatchProcessor(CONFIG, state, clock)

    class Flaky(Engine):  # a subclass, not a patched instance: the compiled engine's are read-only
        def process(self, event: Any, now: float) -> bool:
            if event.event_id == "g5":
                raise KeyError("a bug")
            return super().process(event, now)

    processor.engine = Flaky(CONFIG, state)
    result = processor.process(messages(golden_lines))
    assert [d.reason for d in result.dead].count(INTERNAL_ERROR) == 1
    assert result.accepted == len(golden_lines) - 1
    flat = flatten(snapshot(CONFIG, state, golden_at))
    assert rejected(flat)[INTERNAL_ERROR] == 1
    assert sum(v for (name, _l), v in flat.items() if name == "ccmon_events_total") == len(golden_lines) - 1


def test_a_backlogs_take_is_computed_with_the_collector_paused_and_it_is_on_again_after(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float
) -> None:
    """The cyclic collector's passes over a take's acyclic records find nothing to free: on a
    take of many chunks (a backlog's) it is off while the engine folds the events, and on again
    once the take is applied, whether every chunk landed or an event made the engine fail. A
    take of one chunk (live traffic) keeps it on."""
    import gc

    clock = lambda: golden_at  # noqa: E731
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    seen: list[bool] = []

    class Watching(Engine):
        def process(self, event: Any, now: float) -> bool:
            seen.append(gc.isenabled())
            if event.event_id == "g5":
                raise KeyError("a bug")
            return super().process(event, now)

    processor = BatchProcessor(CONFIG, state, clock)
    processor.engine = Watching(CONFIG, state)
    processor.chunk_events = 10  # the golden lines in chunks of 10
    assert gc.isenabled()
    result = processor.process(messages(golden_lines))
    assert gc.isenabled()
    assert [d.reason for d in result.dead].count(INTERNAL_ERROR) == 1
    assert len(seen) >= len(golden_lines) and not any(seen)

    seen.clear()
    processor.chunk_events = len(golden_lines) + 10  # one chunk
    processor.process(messages(golden_lines))
    assert seen and all(seen)


def test_an_event_the_batch_script_fails_on_is_isolated_not_retried_forever(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script error is not an outage: retrying the batch would fail the same way and stall
    the stream. The event that trips it is narrowed down and dead-lettered; the rest count."""
    from streams.redis import scripts

    poisoned = "local s = 0 for i = 1, #ARGV do if ARGV[i] == 'POISON' then error('poisoned') end end\n"
    monkeypatch.setattr(scripts, "APPLY_LUA", poisoned + scripts.APPLY_LUA)
    poison = json.dumps(
        {"event_id": "p1", "type": "call.offered", "ts": golden_at - 60, "queue": "POISON", "call_id": "pc"}
    ).encode()
    clock = lambda: golden_at  # noqa: E731
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    processor = BatchProcessor(CONFIG, state, clock)
    result = processor.process([*messages(golden_lines), Message("events", 3, 0, None, poison, golden_at)])
    assert [json.loads(d.value)["event_id"] for d in result.dead if d.reason == INTERNAL_ERROR] == ["p1"]
    assert result.accepted == len(golden_lines)
    flat = flatten(snapshot(CONFIG, state, golden_at))
    assert rejected(flat)[INTERNAL_ERROR] == 1
    assert sum(v for (name, _l), v in flat.items() if name == "ccmon_events_total") == len(golden_lines)


def test_redis_errors_wait_and_retry_the_same_batch(
    redis_client: Any,
    redis_prefix: str,
    golden_lines: list[bytes],
    golden_at: float,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import redis

    clock = lambda: golden_at  # noqa: E731
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    processor = BatchProcessor(CONFIG, state, clock)
    original = RedisState._commit
    failures = [redis.ConnectionError("connection refused"), redis.TimeoutError("timed out")]

    def flaky_commit(self: RedisState, batch: Any) -> None:
        if failures:
            raise failures.pop(0)
        original(self, batch)

    monkeypatch.setattr(RedisState, "_commit", flaky_commit)
    with caplog.at_level("WARNING", logger="ccmon.worker"):
        result = processor.process(messages(golden_lines))
    assert result.attempts == 3
    assert result.accepted == len(golden_lines)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Redis error" in errors[0].getMessage()
    assert any("Redis is back" in r.getMessage() for r in caplog.records)
    flat = flatten(snapshot(CONFIG, state, golden_at))
    assert sum(v for (name, _l), v in flat.items() if name == "ccmon_events_total") == len(golden_lines)


def test_a_batch_reads_its_records_ahead_in_one_wave_per_kind(redis_client: Any, redis_prefix: str) -> None:
    """Every record the engine reads in a batch was read ahead (one round trip per wave),
    none on its own while the events are applied: a record read per event (the agents'
    ``agent_calls`` before it was in the plan) cost a round trip each, -36 % events/s."""
    at = 1795168000.0
    clock = lambda: at  # noqa: E731
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    processor = BatchProcessor(CONFIG, state, clock)

    def event(i: int, **fields: Any) -> bytes:
        return json.dumps({"event_id": f"e{i}", "ts": at - 600 + i, "queue": "support", **fields}).encode()

    calls = [f"c{n}" for n in range(5)]
    first = [event(n * 2, type="call.offered", call_id=c) for n, c in enumerate(calls)]
    first += [event(n * 2 + 1, type="call.answered", call_id=c, agent_id=f"a{n}") for n, c in enumerate(calls)]
    processor.process([Message("events", 0, i, b"k", line, at) for i, line in enumerate(first)])
    # The second batch ends the calls: each changes its agent's agent_calls record (talk -> handled).
    second = [event(100 + n, type="call.ended", call_id=c, talk_seconds=60) for n, c in enumerate(calls)]
    reads: list[list[str]] = []
    original = state._read_records
    applying = {"now": False}

    def counted(b: Any, keys: list[str]) -> None:
        reads.append(list(keys) if applying["now"] else [])
        original(b, keys)

    class Flagged(Engine):  # a subclass, not a patched instance: the compiled engine's are read-only
        def process(self, event: Any, now: float) -> bool:
            applying["now"] = True
            try:
                return super().process(event, now)
            finally:
                applying["now"] = False

    state._read_records = counted  # type: ignore[method-assign]
    processor.engine = Flagged(CONFIG, state)
    result = processor.process([Message("events", 0, 100 + i, b"k", line, at) for i, line in enumerate(second)])
    assert result.accepted == len(second) and result.dead == []
    assert reads and [keys for keys in reads if keys] == []  # nothing read while applying
    for n in range(5):  # and the agents' records hold the calls as handled
        record = state.get_record(AGENT_CALLS, "default", f"a{n}")
        assert record is not None and list(record["counts"].values()) == [[1, 0]] and not record["facts"], record
