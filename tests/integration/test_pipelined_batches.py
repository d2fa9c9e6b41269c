"""The worker's pipelined chunks (``BatchProcessor._pipelined``) on the real Redis: a take of
many events is applied in chunks, each computed while Redis runs the script of the one before,
on what Redis held before it plus what that one writes. The same for a live worker's takes
(``BatchProcessor.take``): a take's last chunk stays in flight while the next take is computed.
Whatever happens to the chunk in flight (another worker applying one of its events first, the
connection lost under it), every event counts once and Redis ends holding what one chunk after
the other leaves, key by key."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_event, parse_ts
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.redis.keys import encode, seen_digest
from streams.redis.state import RedisState
from streams.redis.write import DeferredCommit
from streams.worker import BatchProcessor, Message

pytestmark = pytest.mark.integration

CONFIG = Config()
START = parse_ts("2026-11-20T08:00:00Z")
AT = START + 3600 + 60
ENVELOPE = 10  # events per Kafka message
TAKE = 40  # messages per take: 400 events
CHUNK = 60  # events per pipelined chunk: ~7 chunks a take
LIVE_TAKE = 5  # messages per take of one chunk (a live worker's)
#: How the takes are applied: ``process`` (each take landed before the next), ``take`` with
#: takes of one chunk (each held in flight until the next), ``take`` with takes of many chunks.
MODES = {"chunks": (False, TAKE), "held takes": (True, LIVE_TAKE), "held takes of many chunks": (True, TAKE)}


@pytest.fixture(scope="module")
def day() -> list[bytes]:
    """A simulated hour of three queues, shuffled, one event in ten sent twice."""
    from streams.sim import SimParams, Simulator, default_queues

    params = SimParams(start=START, hours=1.0, queues=default_queues(3), seed=5)
    lines = [orjson.dumps(raw) for _t, raw in Simulator(params).stream() if isinstance(raw, dict)]
    rng = random.Random(7)
    lines += rng.sample(lines, len(lines) // 10)
    rng.shuffle(lines)
    return lines


def takes(lines: list[bytes], size: int = TAKE) -> list[list[Message]]:
    envelopes = [b"[" + b",".join(lines[i : i + ENVELOPE]) + b"]" for i in range(0, len(lines), ENVELOPE)]
    messages = [Message("events", 0, offset, None, value, AT) for offset, value in enumerate(envelopes)]
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def run(state: RedisState, lines: list[bytes], chunk: int | None, mode: str = "chunks") -> tuple[int, int]:
    """Apply ``lines`` in takes, as ``mode`` says; ``take``'s takes must each land exactly
    once, in order, and each was in flight (``holds``) when its call returned."""
    processor = BatchProcessor(CONFIG, state, lambda: AT)
    processor.chunk_events = chunk
    held, size = MODES[mode]
    accepted = duplicates = 0
    landed: list[tuple[object, Any]] = []
    in_flight = 0
    all_takes = takes(lines, size)
    for token, take in enumerate(all_takes):
        if not held:
            landed.append((token, processor.process(take)))
            continue
        landed += processor.take(take, token)
        in_flight += processor.holds(token)
    landed += processor.flush()
    assert [token for token, _result in landed] == list(range(len(all_takes)))
    if held and chunk is not None:
        assert in_flight >= len(all_takes) - len(all_takes) // 4, (in_flight, len(all_takes))
    for _token, result in landed:
        assert not result.dead
        accepted += result.accepted
        duplicates += result.duplicates
    return accepted, duplicates


def stored(client: Any, prefix: str) -> dict[str, Any]:
    """Every key of ``prefix`` (the prefix cut off) with its value, but the window versions
    (``:wv:``: stamped from Redis's clock, so two runs never hold the same ones)."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode()
        if ":wv:" in key:
            continue
        kind = client.type(raw).decode()
        if kind == "string":
            value: Any = client.get(raw)
        elif kind == "hash":
            value = client.hgetall(raw)
        elif kind == "zset":
            value = client.zrange(raw, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(raw))
        else:
            raise AssertionError(f"{key}: a {kind}, not expected")
        out[key[len(prefix) :]] = value
    return out


def in_memory(lines: list[bytes]) -> dict[Any, float]:
    store = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    engine = Engine(CONFIG, store)
    for line in lines:
        engine.handle(parse_event(orjson.loads(line)), AT)
    return flatten(snapshot(CONFIG, store, AT))


@pytest.fixture
def one_after_the_other(redis_client: Any, redis_prefix: str, day: list[bytes]) -> tuple[dict[str, Any], Any]:
    """What the take's chunks leave applied one after the other (no pipelining)."""
    state = RedisState(redis_client, CONFIG, prefix=f"{redis_prefix}-a", clock=lambda: AT)
    distinct = len({orjson.loads(line)["event_id"] for line in day})
    assert run(state, day, None) == (distinct, len(day) - distinct)
    return stored(redis_client, f"{redis_prefix}-a"), flatten(snapshot(CONFIG, state, AT))


@pytest.mark.parametrize("mode", MODES)
def test_pipelined_chunks_leave_redis_as_one_chunk_after_the_other(
    redis_client: Any, redis_prefix: str, day: list[bytes], one_after_the_other: tuple[dict[str, Any], Any], mode: str
) -> None:
    keys, flat = one_after_the_other
    state = RedisState(redis_client, CONFIG, prefix=f"{redis_prefix}-b", clock=lambda: AT)
    finished: list[str] = []
    finish = state.finish_commit

    def finish_commit(commit: DeferredCommit) -> None:
        sent_before = commit.sent  # sent by the next chunk, after its reads
        try:
            finish(commit)
        except Exception as exc:
            finished.append(f"{type(exc).__name__}: {exc}")
            raise
        finished.append("landed after the next chunk's reads" if sent_before else "landed")

    state.finish_commit = finish_commit  # type: ignore[method-assign]
    accepted, duplicates = run(state, day, CHUNK, mode)
    distinct = len({orjson.loads(line)["event_id"] for line in day})
    assert (accepted, duplicates) == (distinct, len(day) - distinct)
    # Every chunk but each take's last (held takes: but the last take's) was in flight while
    # the next was computed, and each landed at once: the next one's view of it (records,
    # seen ids) was what Redis then held.
    chunks_in_flight = finished.count("landed after the next chunk's reads")
    if mode == "chunks":
        assert chunks_in_flight >= len(takes(day)) * 5, finished
    else:
        assert chunks_in_flight >= len(takes(day, MODES[mode][1])) - 1, finished
    assert set(finished) <= {"landed after the next chunk's reads", "landed"}
    assert stored(redis_client, f"{redis_prefix}-b") == keys
    assert flatten(snapshot(CONFIG, state, AT)) == flat == in_memory(day)


class Interfering(RedisState):
    """A RedisState whose chunk in flight meets trouble at its ``when``-th send: ``other``
    (another worker on the same prefix) applies one of its events first, or the connection
    dies: dropped by Redis before the script runs, or cut after it ran (its reply lost)."""

    def __init__(self, *args: Any, trouble: str, when: int, lines: list[bytes], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trouble, self.when = trouble, when
        self.sends = self.troubles = self.dropped = 0
        self.by_digest = {seen_digest(orjson.loads(line)["event_id"]): line for line in lines}
        self.other = BatchProcessor(
            CONFIG, RedisState(self.client, CONFIG, prefix=self.prefix, clock=lambda: AT), lambda: AT
        )

    def send_commit(self, commit: DeferredCommit) -> None:  # type: ignore[override]
        self.sends += 1
        if self.sends % self.when or commit.sent:
            super().send_commit(commit)
            return
        self.troubles += 1
        if self.trouble == "applied first":
            digest = next(iter(next(iter(commit.seen.values()))))
            line = self.by_digest[digest]
            result = self.other.process([Message("events", 1, self.sends, None, line, AT)])
            assert result.accepted == 1
            super().send_commit(commit)
        elif self.trouble == "lost before it ran":  # Redis dropped the connection: the script never runs
            conn = commit.pipe.connection or commit.pipe.connection_pool.get_connection()
            commit.pipe.connection = conn
            conn.send_command("CLIENT", "ID")
            assert self.client.client_kill_filter(_id=conn.read_response()) == 1
            super().send_commit(commit)
        else:  # "reply lost after it ran": the script landed, then the network dropped its reply
            super().send_commit(commit)
            seen_key, digests = next(iter(commit.seen.items()))
            while self.client.zscore(seen_key, next(iter(digests))) is None:
                time.sleep(0.001)
            commit.pipe.connection.disconnect()  # the reply, sent or not, is never read

    def drop_commit(self, commit: DeferredCommit) -> None:  # type: ignore[override]
        self.dropped += 1
        super().drop_commit(commit)


@pytest.mark.parametrize("mode", ["chunks", "held takes"])
@pytest.mark.parametrize("trouble", ["applied first", "lost before it ran", "reply lost after it ran"])
def test_a_chunk_in_trouble_in_flight_is_applied_alone_and_the_next_computed_again(
    redis_client: Any,
    redis_prefix: str,
    day: list[bytes],
    one_after_the_other: tuple[dict[str, Any], Any],
    trouble: str,
    mode: str,
) -> None:
    """Another worker applies one of the chunk's events while it is in flight (its script then
    refuses the batch), or its connection dies before the script ran, or after, with its reply
    lost: the chunk is applied on
    its own, as any batch is, the chunk computed on top of it is dropped unsent and computed
    again. Every event counts once; Redis holds what one chunk after the other leaves."""
    keys, flat = one_after_the_other
    prefix = f"{redis_prefix}-b"
    state = Interfering(redis_client, CONFIG, prefix=prefix, clock=lambda: AT, trouble=trouble, when=5, lines=day)
    accepted, duplicates = run(state, day, CHUNK, mode)
    distinct = len({orjson.loads(line)["event_id"] for line in day})
    troubles = state.troubles
    assert troubles >= 5 and state.dropped >= 3  # chunks computed on one in trouble, computed again
    # Each event counts once. A refused chunk's events that landed meanwhile (the other
    # worker's, or the chunk's own when it ran before its reply was lost) are duplicates on its retry:
    # the duplicate counter is all that may differ, by exactly those.
    assert accepted + duplicates == len(day)
    if trouble == "applied first":
        assert accepted + troubles == distinct
    else:
        assert distinct - CHUNK * troubles <= accepted <= distinct
    got_keys, got = stored(redis_client, prefix), flatten(snapshot(CONFIG, state, AT))
    dup = "ccmon_events_duplicate_total"
    assert sum(v for (name, _l), v in flat.items() if name == dup) == len(day) - distinct
    counted_dups = sum(v for (name, _l), v in got.items() if name == dup)
    if trouble == "applied first":
        assert counted_dups == duplicates
    elif trouble == "lost before it ran":
        assert (accepted, counted_dups) == (distinct, duplicates)
    else:  # a chunk that landed counted its own duplicates then, and all of its events on its retry
        assert accepted < distinct
        assert duplicates <= counted_dups <= duplicates + (len(day) - distinct)
    counted = ":count:" + encode("sum:duplicates")
    assert {k: v for k, v in got_keys.items() if not k.endswith(counted)} == {
        k: v for k, v in keys.items() if not k.endswith(counted)
    }
    assert {k: v for k, v in got.items() if k[0] != dup} == {k: v for k, v in flat.items() if k[0] != dup}
    assert flat == in_memory(day)


@pytest.mark.parametrize("trouble", ["applied first", "lost before it ran", "reply lost after it ran"])
def test_a_held_take_in_trouble_is_applied_alone_when_flushed(
    redis_client: Any, redis_prefix: str, day: list[bytes], trouble: str
) -> None:
    """A live take's last chunk, in flight when no next take comes, meets trouble: ``flush``
    (what the worker runs when it is idle) applies it alone, and hands it out once."""
    lines = day[: ENVELOPE * LIVE_TAKE]
    state = Interfering(
        redis_client, CONFIG, prefix=f"{redis_prefix}-c", clock=lambda: AT, trouble=trouble, when=1, lines=day
    )
    processor = BatchProcessor(CONFIG, state, lambda: AT)
    processor.chunk_events = CHUNK
    (take,) = takes(lines, LIVE_TAKE)
    assert processor.take(take, "t") == []
    assert processor.holds("t") and state.troubles == 1
    (landed,) = processor.flush()
    assert not processor.holds("t") and processor.flush() == []
    token, result = landed
    distinct = len({orjson.loads(line)["event_id"] for line in lines})
    assert token == "t" and not result.dead and result.accepted + result.duplicates == len(lines)
    assert result.accepted == {"applied first": distinct - 1, "lost before it ran": distinct}.get(trouble, 0)
    dup = "ccmon_events_duplicate_total"
    got = flatten(snapshot(CONFIG, state, AT))
    assert {k: v for k, v in got.items() if k[0] != dup} == {k: v for k, v in in_memory(lines).items() if k[0] != dup}


def test_a_take_without_events_lands_the_take_held_then_itself(
    redis_client: Any, redis_prefix: str, day: list[bytes]
) -> None:
    lines = day[: ENVELOPE * LIVE_TAKE]
    state = RedisState(redis_client, CONFIG, prefix=f"{redis_prefix}-d", clock=lambda: AT)
    processor = BatchProcessor(CONFIG, state, lambda: AT)
    processor.chunk_events = CHUNK
    (take,) = takes(lines, LIVE_TAKE)
    assert processor.take(take, "events") == []
    landed = processor.take([Message("events", 0, 99, None, b"[]", AT)], "empty")
    assert [(token, result.accepted) for token, result in landed] == [
        ("events", len({orjson.loads(line)["event_id"] for line in lines})),
        ("empty", 0),
    ]
    assert processor.flush() == []


def test_the_upkeep_lands_the_take_in_flight_first_and_hands_it_out(
    redis_client: Any, redis_prefix: str, day: list[bytes]
) -> None:
    """The upkeep reads Redis, so the take in flight lands first; ``maintain`` returns it, to
    be acknowledged (the worker's idle flush then finds nothing: else its offsets would never
    be committed)."""
    lines = day[: ENVELOPE * LIVE_TAKE]
    state = RedisState(redis_client, CONFIG, prefix=f"{redis_prefix}-e", clock=lambda: AT)
    processor = BatchProcessor(CONFIG, state, lambda: AT)
    processor.chunk_events = CHUNK
    (take,) = takes(lines, LIVE_TAKE)
    assert processor.take(take, "t") == [] and processor.holds("t")
    landed = processor.maintain()
    assert [(token, result.accepted) for token, result in landed] == [
        ("t", len({orjson.loads(line)["event_id"] for line in lines}))
    ]
    assert not processor.holds("t") and processor.flush("t") == [] and processor.flush() == []
