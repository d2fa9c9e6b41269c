"""Exact aggregation in Redis (kpi_core.state, "Exact arithmetic"; streams.redis.write.s
batch script): whole deltas by HINCRBY, maxima as multisets retracted across batches and
deleted at 0, no multiset in the lifetime totals, and a Redis holding the old layout (float
sums, ``max_*`` fields, records with legacy contributions) upgraded in place."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from harness.exact import AT, parsed, retraction_stream

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import Event, parse_event, parse_ts
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.redis.state import RedisState

pytestmark = pytest.mark.integration

CONFIG = Config()


def fold(store: Any, events: Sequence[Event], at: float, size: int) -> None:
    engine = Engine(CONFIG, store)
    batched = isinstance(store, RedisState)
    for start in range(0, len(events), size):
        if batched:
            with store.batch():
                for event in events[start : start + size]:
                    engine.handle(event, at)
        else:
            for event in events[start : start + size]:
                engine.handle(event, at)


def memory(events: Sequence[Event], at: float) -> dict[Any, float]:
    store = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    fold(store, events, at, 1)
    return flatten(snapshot(CONFIG, store, at))


def both_reads(state: RedisState, at: float) -> dict[Any, float]:
    """The store's own reads and the exporter's snapshot reader (window sums in Lua), equal."""
    flat = flatten(snapshot(CONFIG, state, at))
    assert flatten(snapshot(CONFIG, state.snapshot_reader(CONFIG, at), at)) == flat
    return flat


def value(flat: dict[Any, float], name: str, window: str, queue: str = "q") -> float | None:
    return flat.get((name, (("tenant", "default"), ("queue", queue), ("window", window))))


def bucket_hashes(client: Any, prefix: str) -> dict[str, dict[str, str]]:
    out = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        name = key.decode()
        if ":b:" in name or ":tot:" in name:
            out[name] = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    return out


@pytest.mark.parametrize("size", [1, 3])
def test_a_transfer_arriving_before_the_answer_leaves_no_stale_maximum(
    redis_client: Any, redis_prefix: str, size: int
) -> None:
    """Answered 5 s after the offer, transferred at 180 s, the transfer delivered first (in
    an earlier batch, or the same one): the longest wait is 5 s; the 180 s value is gone
    from every bucket, and the totals hold no multiset."""
    events = parsed(
        [
            {"type": "call.offered", "ts": AT - 600, "call_id": "c", "queue": "q"},
            {"type": "call.transferred", "ts": AT - 420, "call_id": "c", "queue": "q", "to_queue": "b"},
            {"type": "call.answered", "ts": AT - 595, "call_id": "c", "queue": "q", "agent_id": "a1"},
        ]
    )
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    fold(state, events, AT, size)
    flat = both_reads(state, AT)
    assert value(flat, "ccmon_max_wait_seconds", "15m") == 5.0
    assert value(flat, "ccmon_max_wait_seconds", "today", "_all") == 5.0
    assert flat == memory(events, AT)
    hashes = bucket_hashes(redis_client, redis_prefix)
    buckets = {k: h for k, h in hashes.items() if ":b:" in k and ":q:" in k}
    assert not [k for k, h in buckets.items() if "mx:wait:180000" in h]
    assert len([k for k, h in buckets.items() if h.get("mx:wait:5000") == "1"]) == 2  # fine and coarse
    assert not [f for k, h in hashes.items() if ":tot:" in k for f in h if f.startswith("mx:")]
    # every value the engine wrote is a whole number, by HINCRBY
    assert all("." not in v for h in hashes.values() for v in h.values()), hashes


def test_a_retracted_fractional_wait_leaves_no_float_noise(redis_client: Any, redis_prefix: str) -> None:
    """(6.063 + 437.682) - 437.682 in one bucket, over three batches: ASA is 6.063 exactly."""
    events = retraction_stream()
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    fold(state, events, AT, 2)
    flat = both_reads(state, AT)
    for window in ("5m", "15m", "1h", "today"):
        assert value(flat, "ccmon_average_speed_of_answer_seconds", window) == 6.063
        assert value(flat, "ccmon_max_wait_seconds", window) == 10.0
    assert flat == memory(events, AT)


def test_a_shuffled_simulated_morning_in_redis_is_the_in_order_one_exactly(
    redis_client: Any, redis_prefix: str
) -> None:
    """Times in ms, shuffled, in batches of 50: the very bits of MemoryState fed in order,
    maxima and occupancy included (no long-double noise: every delta is whole)."""
    from streams.sim import SimParams, Simulator, default_queues

    start = parse_ts("2026-11-20T08:00:00Z")
    params = SimParams(start=start, hours=1.0, queues=default_queues(3), seed=9)
    events = [parse_event(r) for _t, r in Simulator(params).stream() if isinstance(r, dict)]
    at = start + 3600 + 60
    shuffled = list(events)
    random.Random(3).shuffle(shuffled)
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: at)
    fold(state, shuffled, at, 50)
    assert both_reads(state, at) == memory(events, at)


# -- a Redis in the old layout ---------------------------------------------------------------
def legacy_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """What the code before exact aggregation wrote: float seconds under the legacy name,
    maxima as ``max_*`` fields (the same as tests/unit/kpi_core/test_exact_aggregation.py's)."""
    out: dict[str, Any] = {}
    for name, v in fields.items():
        if name.startswith("mx:"):
            kind, _sep, ms = name[3:].rpartition(":")
            if float(v) > 0:
                out["max_" + kind] = max(out.get("max_" + kind, float("-inf")), int(ms) / 1000)
        elif "_ms" in name.partition("@")[0]:
            base, at, mark = name.partition("@")
            out[base[:-3] + at + mark] = out.get(base[:-3] + at + mark, 0.0) + float(v) / 1000
        else:
            out[name] = v
    return out


def legacify(client: Any, prefix: str) -> int:
    """Rewrite every bucket, totals hash and record under ``prefix`` in the old layout
    (expiries kept); returns how many legacy ``max_*`` fields it wrote."""
    maxima = 0
    for key in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
        name = key.decode()
        if ":bx:" in name:  # the old layout kept a bucket's multisets in the bucket
            continue
        if ":b:" in name or ":tot:" in name:
            fields = {k.decode(): v.decode() for k, v in client.hgetall(key).items() if not k.startswith(b"mt:")}
            if ":b:" in name:
                multisets = name.replace(":b:", ":bx:", 1)
                fields |= {k.decode(): v.decode() for k, v in client.hgetall(multisets).items()}
                client.delete(multisets)
            old = legacy_fields(fields)
            maxima += sum(1 for k in old if k.startswith("max_"))
            expire_at = client.pexpiretime(key)
            with client.pipeline() as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping={k: repr(float(v)) if isinstance(v, float) else v for k, v in old.items()})
                if expire_at > 0:
                    pipe.pexpireat(key, expire_at)
                pipe.execute()
        elif ":rec:" in name:
            record = orjson.loads(client.get(key))
            for field in ("applied", "applied_repeat"):
                for contribution in record.get(field, {}).values():
                    contribution[2] = legacy_fields(contribution[2])
            for day, sums in record.get("days", {}).items():
                record["days"][day] = legacy_fields(sums)
            client.set(key, orjson.dumps(record), keepttl=True)
    return maxima


def test_a_redis_in_the_old_layout_reads_as_a_fresh_store_fed_every_event(redis_client: Any, redis_prefix: str) -> None:
    """A simulated hour written in the old layout, then the next hour and some late events of
    the first (retracting legacy contributions under the legacy names, with HINCRBYFLOAT):
    the snapshot is MemoryState's fed everything, up to float rounding of the legacy sums."""
    from streams.sim import SimParams, Simulator, default_queues

    start = parse_ts("2026-11-20T08:00:00Z")
    params = SimParams(start=start, hours=2.0, queues=default_queues(2), seed=3)
    events = [parse_event(r) for _t, r in Simulator(params).stream() if isinstance(r, dict)]
    at = start + 2 * 3600 + 60
    cut = start + 3600
    late = {e.event_id for e in events[::7] if e.ts < cut and e.type in ("call.answered", "call.ended", "agent.state")}
    before = [e for e in events if e.ts < cut and e.event_id not in late]
    after = [e for e in events if e.ts >= cut or e.event_id in late]
    assert len(late) > 20
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: at)
    fold(state, before, at, 100)
    assert legacify(redis_client, redis_prefix) > 10
    fold(state, after, at, 100)
    got = both_reads(state, at)
    want = memory(events, at)
    assert got.keys() == want.keys()
    assert got == pytest.approx(want, rel=1e-9, abs=1e-6)


def test_the_batch_scripts_hash_sums_are_exact_on_every_path(redis_client: Any, redis_prefix: str) -> None:
    """The batch script's ``H`` op on every kind of field: whole deltas by HINCRBY (beyond 2^53
    too), a fraction or a field holding one (an older release's) by HINCRBYFLOAT, maxima kept
    only when higher. Each gives the text exact arithmetic gives, a multiset field at 0 is
    deleted, and a field named twice is added twice."""
    from decimal import Decimal

    from streams.redis.scripts import APPLY_LUA

    key = f"{redis_prefix}:{{t:x}}:b:f:q:0"
    old = {
        "b": "123",
        "mx:7": "2",
        "c": "999999999999999",  # the sum has 16 digits
        "d": "9007199254740993",  # above 2^53: not a double
        "e": "1.5",  # a fraction from an old release: HINCRBYFLOAT
        "g": "7",
        "h": "-42",
        "i": "5",
        "m": "10",
        "n": "10",
    }
    redis_client.hset(key, mapping=old)
    sums = [
        ("a", "5"),  # absent
        ("b", "-123"),  # to 0, kept
        ("mx:7", "-2"),  # a multiset count to 0: deleted
        ("mx:8", "0"),  # absent and 0: stays absent
        ("c", "1"),
        ("d", "1"),
        ("e", "2"),
        ("g", "0.25"),
        ("h", "100000000000000"),
        ("j", "-1000000000000000"),
    ]
    maxima = [("m", "12"), ("n", "3")]
    argv: list[Any] = [0, 0, "H", 0, len(sums), len(maxima)]
    for field, delta in [*sums, *maxima]:
        argv += [field, delta]
    assert redis_client.eval(APPLY_LUA, 1, key, *argv) == 0

    def exact(was: str | None, delta: str) -> str:
        total = Decimal(was or 0) + Decimal(delta)
        return str(int(total)) if total == int(total) else str(total.normalize())

    want = dict(old)
    for field, delta in sums:
        want[field] = exact(old.get(field), delta)
    want["m"] = "12"
    del want["mx:7"], want["mx:8"]
    got = {k.decode(): v.decode() for k, v in redis_client.hgetall(key).items()}
    assert got == want
    assert got["c"] == "1000000000000000" and got["d"] == "9007199254740994" and got["g"] == "7.25"

    # A field named twice in one op (the writer merges them; the script adds both anyway).
    twice = [0, 0, "H", 0, 3, 0, "i", "1", "i", "2", "a", "1"]
    assert redis_client.eval(APPLY_LUA, 1, key, *twice) == 0
    assert redis_client.hmget(key, ["i", "a"]) == [b"8", b"6"]
