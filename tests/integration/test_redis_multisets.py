"""A bucket's maxima in Redis (streams/redis/keys.py, ``MULTISET_TOP``): a quiet bucket keeps
its multiset counts, a busy one (more than ``multiset_spill`` fields) has them moved beside it,
to its multiset hash, and holds one top per maximum, which the batch script keeps right
through additions, retractions of the top, counts that fall below 0 and rollbacks; both
readers (the store's field-by-field sums and the scrape's window script) give what
MemoryState gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import redis

from kpi_core.config import Config
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.redis.state import RedisState

pytestmark = pytest.mark.integration

CONFIG = Config()
AT = 1_795_000_000.0 - 1_795_000_000.0 % 3600 + 1800  # half past an hour
FINE = CONFIG.bucket_seconds

Adds = Sequence[tuple[float, Mapping[str, int]]]  # (ts, deltas) into tenant "default", queue "q"


def apply(state: RedisState, memory: MemoryState, batches: Sequence[Adds]) -> None:
    for adds in batches:
        with state.batch():
            for ts, deltas in adds:
                state.add("default", "q", ts, deltas)
        for ts, deltas in adds:
            memory.add("default", "q", ts, deltas)


def reads(state: RedisState, memory: MemoryState) -> dict[Any, float]:
    """The snapshot by the store's reads, by the scrape's reader, and MemoryState's: equal."""
    flat = flatten(snapshot(CONFIG, state, AT))
    assert flatten(snapshot(CONFIG, state.snapshot_reader(CONFIG, AT), AT)) == flat
    assert flat == flatten(snapshot(CONFIG, memory, AT))
    return flat


def max_wait(flat: dict[Any, float], window: str) -> float | None:
    return flat.get(("ccmon_max_wait_seconds", (("tenant", "default"), ("queue", "q"), ("window", window))))


def text(mapping: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in mapping.items()}


@pytest.fixture
def stores(redis_client: Any, redis_prefix: str) -> tuple[RedisState, MemoryState]:
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    state.multiset_spill = 0  # every bucket's multisets beside it (the default: once it is busy)
    return state, MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)


def test_a_bucket_keeps_its_top_through_additions_and_retractions(
    redis_client: Any, stores: tuple[RedisState, MemoryState]
) -> None:
    state, memory = stores
    ts = AT - 100
    start = int(ts // FINE) * FINE
    bucket = state._bucket_key("default", "f", "q", start)
    multisets = state._multiset_key("default", "f", "q", start)

    def top() -> str | None:
        value = redis_client.hget(bucket, "mt:wait")
        return value.decode() if value is not None else None

    apply(state, memory, [[(ts, {"offered": 4, "mx:wait:5000": 1, "mx:wait:9000": 1, "mx:wait:7000": 2})]])
    assert top() == "9000"
    assert text(redis_client.hgetall(multisets)) == {"mx:wait:5000": "1", "mx:wait:9000": "1", "mx:wait:7000": "2"}
    assert not [f for f in text(redis_client.hgetall(bucket)) if f.startswith("mx:")]
    assert abs(redis_client.pexpiretime(multisets) - redis_client.pexpiretime(bucket)) < 1000
    assert max_wait(reads(state, memory), "5m") == 9.0

    apply(state, memory, [[(ts, {"mx:wait:9000": -1})]])  # the top retracted: the next one
    assert top() == "7000"
    assert max_wait(reads(state, memory), "5m") == 7.0
    apply(state, memory, [[(ts, {"mx:wait:7000": -1, "mx:wait:6000": 1})]])  # 7000 still counted once
    assert top() == "7000"
    apply(state, memory, [[(ts, {"mx:wait:7000": -1})], [(ts, {"mx:wait:12000": 1})]])
    assert top() == "12000"
    assert max_wait(reads(state, memory), "15m") == 12.0
    apply(state, memory, [[(ts, {"mx:wait:12000": -1, "mx:wait:6000": -1, "mx:wait:5000": -1})]])
    assert top() is None  # nothing counted: no top, and the multiset hash is gone
    assert redis_client.exists(multisets) == 0
    assert max_wait(reads(state, memory), "15m") is None


def test_a_count_below_zero_marks_the_bucket_and_the_windows_sum_field_by_field(
    redis_client: Any, stores: tuple[RedisState, MemoryState]
) -> None:
    """A retraction applied before its addition, in another bucket of the same windows: the
    counts cancel out over the window, so there is no maximum, though one bucket counts it."""
    state, memory = stores
    early, late = AT - 200, AT - 100
    assert int(early // FINE) != int(late // FINE)
    apply(state, memory, [[(early, {"offered": 1, "mx:wait:3000": -1})], [(late, {"offered": 1, "mx:wait:3000": 1})]])
    marked = state._bucket_key("default", "f", "q", int(early // FINE) * FINE)
    counted = state._bucket_key("default", "f", "q", int(late // FINE) * FINE)
    assert text(redis_client.hgetall(marked)).get("mt:!") == "1"
    assert text(redis_client.hgetall(counted)).get("mt:wait") == "3000"
    flat = reads(state, memory)
    assert max_wait(flat, "5m") is None
    assert max_wait(flat, "today") is None
    apply(state, memory, [[(late, {"mx:wait:8000": 1})]])
    assert max_wait(reads(state, memory), "15m") == 8.0


def test_a_rolled_back_batch_leaves_the_tops_and_counts_as_they_were(
    redis_client: Any, redis_prefix: str, stores: tuple[RedisState, MemoryState]
) -> None:
    state, memory = stores
    ts = AT - 100
    apply(state, memory, [[(ts, {"offered": 2, "mx:wait:5000": 1, "mx:wait:9000": 1})]])

    def everything() -> dict[bytes, Any]:
        out: dict[bytes, Any] = {}
        for key in redis_client.scan_iter(match=f"{redis_prefix}:*", count=1000):
            kind = redis_client.type(key)
            if kind == b"hash":
                out[key] = (redis_client.hgetall(key), redis_client.pexpiretime(key))
            elif kind == b"zset":
                out[key] = (redis_client.zrange(key, 0, -1, withscores=True), redis_client.pexpiretime(key))
            elif kind == b"set":
                out[key] = (redis_client.smembers(key), redis_client.pexpiretime(key))
            else:
                out[key] = (redis_client.get(key), redis_client.pexpiretime(key))
        return out

    before = everything()
    failed = []
    for k in [-1, *range(1, 60)]:
        state.fail_at_write = k
        try:
            with state.batch():
                state.add("default", "q", ts, {"mx:wait:9000": -1, "mx:wait:4000": -2, "mx:wait:11000": 1})
        except redis.ResponseError as exc:
            assert "rolled back" in str(exc)
            assert everything() == before, f"fail at write {k}"
            failed.append(k)
            continue
        break  # k is past the batch's last write: it was applied
    state.fail_at_write = 0
    assert len(failed) > 5 and failed[-1] < 59
    memory.add("default", "q", ts, {"mx:wait:9000": -1, "mx:wait:4000": -2, "mx:wait:11000": 1})
    assert max_wait(reads(state, memory), "5m") == 11.0


def test_buckets_written_with_their_multisets_inside_read_and_upgrade_exactly(
    redis_client: Any, redis_prefix: str
) -> None:
    """State written by the release before (each bucket's multiset fields in the bucket, no
    tops), then the next half hour and late events of the first (retracting values counted in
    the old place): every read is MemoryState's fed everything, bit for bit."""
    from kpi_core.engine import Engine
    from kpi_core.events import parse_event, parse_ts
    from streams.sim import SimParams, Simulator, default_queues

    start = parse_ts("2026-11-20T08:00:00Z")
    params = SimParams(start=start, hours=1.0, queues=default_queues(2), seed=11)
    events = [parse_event(r) for _t, r in Simulator(params).stream() if isinstance(r, dict)]
    at = start + 3600 + 60
    cut = start + 1800
    kinds = ("call.answered", "call.abandoned", "call.transferred", "call.ended")
    late = {e.event_id for e in events[::3] if e.ts < cut and e.type in kinds}
    # A call transferred (a 180 s wait counted) whose answer, 5 s after the offer, comes late:
    # it retracts the 180 s counted in the old place.
    offered, transferred, answered = (
        parse_event(
            {"event_id": f"late-{kind}", "type": kind, "ts": cut - 600 + dt, "call_id": "late-c", "queue": "q", **extra}
        )
        for kind, dt, extra in (
            ("call.offered", 0, {}),
            ("call.transferred", 180, {"to_queue": "b"}),
            ("call.answered", 5, {"agent_id": "a1"}),
        )
    )
    first = [offered, transferred, *(e for e in events if e.ts < cut and e.event_id not in late)]
    rest = [answered, *(e for e in events if e.ts >= cut or e.event_id in late)]
    events = [*first, *rest]
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: at)
    state.multiset_spill = 0
    engine = Engine(CONFIG, state)
    for part in (first[i : i + 100] for i in range(0, len(first), 100)):
        with state.batch():
            for event in part:
                engine.handle(event, at)
    moved = 0
    for key in list(redis_client.scan_iter(match=f"{redis_prefix}:*:bx:*", count=1000)):
        bucket = key.replace(b":bx:", b":b:", 1)
        counts = redis_client.hgetall(key)
        tops = [f for f in redis_client.hkeys(bucket) if f.startswith(b"mt:")]
        with redis_client.pipeline() as pipe:
            pipe.hset(bucket, mapping=counts)
            pipe.hdel(bucket, *tops)
            pipe.delete(key)
            pipe.execute()
        moved += len(counts)
    assert len(late) > 10 and moved > 50
    state.multiset_spill = RedisState.multiset_spill  # the default: quiet buckets keep them, busy ones move them out
    for part in (rest[i : i + 100] for i in range(0, len(rest), 100)):
        with state.batch():
            for event in part:
                engine.handle(event, at)
    memory = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    reference = Engine(CONFIG, memory)
    for event in events:
        reference.handle(event, at)
    flat = flatten(snapshot(CONFIG, state, at))
    assert flatten(snapshot(CONFIG, state.snapshot_reader(CONFIG, at), at)) == flat
    assert flat == flatten(snapshot(CONFIG, memory, at))
    fields = [f for k in redis_client.scan_iter(match=f"{redis_prefix}:*:b:*") for f in redis_client.hkeys(k)]
    assert any(f.startswith(b"mx:") for f in fields)  # still in the old place: both layouts were read


def test_a_retired_queue_takes_its_multiset_hashes_with_its_buckets(
    redis_client: Any, redis_prefix: str, stores: tuple[RedisState, MemoryState]
) -> None:
    state, _memory = stores
    with state.batch():
        for ts in (AT - 100, AT - 1000, AT - 5000):
            state.add("default", "q", ts, {"offered": 1, "mx:wait:5000": 1})
        state.series_touch("queue", "default", "q", AT - 100)
    beside = list(redis_client.scan_iter(match=f"{redis_prefix}:*:bx:*:q:*"))
    assert len(beside) >= 4  # fine and coarse buckets
    assert state.series_retire("queue", "default", {"q": AT - 100}) == 1
    assert not list(redis_client.scan_iter(match=f"{redis_prefix}:*:q:*"))


def test_a_bucket_moves_its_multisets_beside_it_once_it_is_busy(redis_client: Any, redis_prefix: str) -> None:
    """The default: a bucket keeps its multiset fields while it holds at most 128 fields; the
    batch that takes it beyond moves them all out (a rollback of that batch at any write puts
    them back), and the bucket then keeps its tops."""
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    memory = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    limit = state.multiset_spill
    assert limit == 128
    ts = AT - 100
    start = int(ts // FINE) * FINE
    bucket = state._bucket_key("default", "f", "q", start)
    multisets = state._multiset_key("default", "f", "q", start)
    values = [1000 + 37 * i for i in range(limit + 20)]
    for i in range(0, limit - 8, 20):  # limit - 8 values and "offered": limit - 7 fields
        apply(state, memory, [[(ts, {"offered": 20, **{f"mx:wait:{v}": 1 for v in values[i : i + 20]}})]])
    held = text(redis_client.hgetall(bucket))
    assert len([f for f in held if f.startswith("mx:")]) == limit - 8 and not [f for f in held if f.startswith("mt:")]
    assert redis_client.exists(multisets) == 0
    assert max_wait(reads(state, memory), "5m") == values[limit - 9] / 1000

    def everything() -> dict[bytes, Any]:
        return {key: (redis_client.hgetall(key), redis_client.pexpiretime(key)) for key in (bucket, multisets)}

    before = everything()
    spilling = {"mx:wait:1000": -1, **{f"mx:wait:{v}": 1 for v in values[limit - 8 : limit + 2]}}
    failed = []
    for k in [-1, *range(1, 60)]:
        state.fail_at_write = k
        try:
            with state.batch():
                state.add("default", "q", ts, spilling)
        except redis.ResponseError as exc:
            assert "rolled back" in str(exc)
            assert everything() == before, f"fail at write {k}"
            failed.append(k)
            continue
        break
    state.fail_at_write = 0
    assert len(failed) > 10 and failed[-1] < 59
    memory.add("default", "q", ts, spilling)
    held = text(redis_client.hgetall(bucket))
    assert not [f for f in held if f.startswith("mx:")]
    assert held["mt:wait"] == str(values[limit + 1]) and "mt:!" not in held
    counts = text(redis_client.hgetall(multisets))
    assert len(counts) == limit + 1 and "mx:wait:1000" not in counts
    assert abs(redis_client.pexpiretime(multisets) - redis_client.pexpiretime(bucket)) < 1000
    assert max_wait(reads(state, memory), "5m") == values[limit + 1] / 1000
    apply(state, memory, [[(ts, {f"mx:wait:{values[limit + 1]}": -1, "mx:wait:500": 1})]])  # beside now
    assert text(redis_client.hgetall(bucket))["mt:wait"] == str(values[limit])
    assert max_wait(reads(state, memory), "15m") == values[limit] / 1000


def test_a_count_below_zero_moved_beside_marks_the_bucket(redis_client: Any, redis_prefix: str) -> None:
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    memory = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    early, late = AT - 200, AT - 100
    apply(state, memory, [[(early, {"offered": 1, "mx:wait:90000": -1})], [(late, {"mx:wait:90000": 1})]])
    bucket = state._bucket_key("default", "f", "q", int(early // FINE) * FINE)
    assert text(redis_client.hgetall(bucket)).get("mx:wait:90000") == "-1"  # kept in the bucket
    n = state.multiset_spill + 10
    apply(state, memory, [[(early, {f"mx:wait:{1000 + i}": 1 for i in range(n)})]])  # moved beside
    held = text(redis_client.hgetall(bucket))
    assert held.get("mt:!") == "1" and held.get("mt:wait") == str(999 + n)
    flat = reads(state, memory)
    assert max_wait(flat, "5m") == (999 + n) / 1000  # 90 s cancels out over the window
