"""Where entity state should live: records in the worker's memory (with a changelog) or in Redis.

Issue #16 item 9, measured, not built: the product keeps every entity record (calls, agents,
customers, callbacks, tickets...) in Redis and reads it, ``WATCH``ed, in every batch. The
alternative the stream processors use (Kafka Streams, Quix Streams) keeps the records of a
worker's partitions in its own memory, backed by a compacted changelog topic, with Redis
holding only what the exporter reads (buckets, live sets, seen ids, counts, series). Three
questions on one simulated day (``streams.sim``, as bench/profile_processor.py drives it:
envelopes of 100, takes of 20 envelopes, the clock at each take's newest event):

1. **Throughput bound.** ``streams.worker.BatchProcessor`` over today's :class:`RedisState`
   against the same processor over :class:`HybridState` (records in a dict, everything else to
   the real ``RedisState`` in the same batches), alternating, each on a fresh prefix; and the
   engine on ``MemoryState`` (everything in memory, the same envelopes decoded the same way) as
   the ceiling. Events/s, then a cProfile of one more run of each Redis store: cumulative time of
   the batch's phases as a share of ``BatchProcessor.process``.
2. **Memory per worker.** A whole day of ``--sizes`` queues through the engine on
   ``MemoryState`` (the records are the engine's, whatever the store): records at the end of the
   day (count by kind, bytes as the JSON the changelog would carry), and the record writes the
   day made (the changelog's volume before compaction).
3. **Restore after a rebalance.** Each size's final records produced to a compacted topic of
   our own (one partition, keys ``kind \\x1f tenant \\x1f key``), then a fresh process reads it
   from the beginning into a dict with aiokafka (Faust's client, C record parsing), as a worker
   taking the partition over would: seconds, messages/s, and that process's RSS growth (the
   held records plus the client's buffers). (kafka-python without the ``crc32c`` package checks
   CRCs in pure Python: ~1,700 messages/s here, not what a worker would see.)
   The topics are deleted at the end.

Needs the real services (``KAFKA_BOOTSTRAP``, ``REDIS_URL``); never starts or flushes them. Not
part of ``make bench``; the figures are in docs/BENCHMARKS.md ("State placement")::

    python bench/bench_state_placement.py --queues 20 --sizes 20 --rounds 1   # smoke
    python bench/bench_state_placement.py --queues 60 --rounds 2 --no-profile --sizes ""   # ~6 min
    python bench/bench_state_placement.py --queues 60 --rounds 0 --sizes ""   # the profiles, ~4 min
    python bench/bench_state_placement.py --sizes-only                         # ~3 min
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import marshal
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import orjson
from bench_pipeline import sim_events

from kpi_core.config import Config
from kpi_core.events import Event, envelope_items, parse_ts
from kpi_core.state import MemoryState, Record
from streams.decoding import loads
from streams.redis.state import RedisState
from streams.worker import Message

#: A take: the envelopes one ``BatchProcessor.process`` call gets, and the clock for it.
Take = tuple[list[Message], float]
#: A record's key in memory and on the changelog.
RecordKey = tuple[str, str, str]


def record_key_bytes(key: RecordKey) -> bytes:
    """The changelog key of a record: ``kind \\x1f tenant \\x1f key`` (no part holds \\x1f)."""
    return "\x1f".join(key).encode("utf-8", "surrogatepass")


class HybridState(RedisState):
    """``RedisState`` with the records in this process: what a worker owning its partitions'
    entities would keep (restored from a changelog, not read from Redis).

    ``get_record``/``put_record``/``delete_record``/``prefetch_records`` use a dict of
    ``key -> (JSON bytes, expire_at)``; everything else goes to Redis in the batch's one
    transaction, as today. Inside a batch, records are decoded once into a per-batch cache (the
    engine mutates what it reads, as it does with ``RedisState``'s cache) and the changes are
    kept aside; they reach the dict only when the Redis transaction committed, so a batch that
    conflicts or fails leaves both untouched and is recomputed from the same state. Nothing is
    ``WATCH``ed for records: nobody else writes them. ``changelog`` counts what the batches would
    have produced to the changelog topic (one message per record changed per batch).

    Record expiry is ``MemoryState``'s: records are kept until :meth:`prune` (Redis expires them
    by wall-clock TTL, which a bench day does not reach either)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: dict[RecordKey, tuple[bytes, float]] = {}
        self._cache: dict[RecordKey, Record | None] | None = None
        self._dirty: dict[RecordKey, tuple[Record | None, float]] = {}
        self.changelog_messages = 0
        self.changelog_bytes = 0

    @contextmanager
    def batch(self) -> Iterator[HybridState]:
        if self._cache is not None:
            raise RuntimeError("HybridState.batch() does not nest")
        self._cache, self._dirty = {}, {}
        try:
            with super().batch():
                yield self
            self._committed()
        finally:
            self._cache, self._dirty = None, {}

    def _committed(self) -> None:
        """The Redis transaction committed: the batch's records reach the dict (a worker would
        produce its changelog messages here, stamped as the design note in BENCHMARKS.md says)."""
        for key, (record, expire_at) in self._dirty.items():
            if record is None:
                self.records.pop(key, None)
                self.changelog_bytes += len(record_key_bytes(key))
            else:
                value = orjson.dumps(record)
                self.records[key] = (value, expire_at)
                self.changelog_bytes += len(record_key_bytes(key)) + len(value)
            self.changelog_messages += 1

    def prefetch_records(self, kind: str, tenant: str, keys: Any) -> None:
        """Nothing to fetch: the records are here."""

    def get_record(self, kind: str, tenant: str, key: str) -> Record | None:
        rkey = (kind, tenant, key)
        cache = self._cache
        if cache is None:
            entry = self.records.get(rkey)
            return orjson.loads(entry[0]) if entry is not None else None
        if rkey not in cache:
            entry = self.records.get(rkey)
            cache[rkey] = orjson.loads(entry[0]) if entry is not None else None
        return cache[rkey]

    def put_record(self, kind: str, tenant: str, key: str, record: Record, expire_at: float) -> None:
        if self._cache is None:
            self.records[(kind, tenant, key)] = (orjson.dumps(record), expire_at)
            return
        rkey = (kind, tenant, key)
        self._cache[rkey] = record
        self._dirty[rkey] = (record, expire_at)

    def delete_record(self, kind: str, tenant: str, key: str) -> None:
        if self._cache is None:
            self.records.pop((kind, tenant, key), None)
            return
        rkey = (kind, tenant, key)
        self._cache[rkey] = None
        self._dirty[rkey] = (None, 0.0)

    def prune(self, now: float) -> int:
        """Drop the records expired at ``now`` (``MemoryState.maintain``'s rule); how many."""
        before = len(self.records)
        self.records = {k: v for k, v in self.records.items() if v[1] >= now}
        return before - len(self.records)


class CountingMemoryState(MemoryState):
    """``MemoryState`` that counts record writes: the changelog's volume before compaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record_writes = 0

    def put_record(self, kind: str, tenant: str, key: str, record: Record, expire_at: float) -> None:
        self.record_writes += 1
        super().put_record(kind, tenant, key, record, expire_at)

    def delete_record(self, kind: str, tenant: str, key: str) -> None:
        self.record_writes += 1
        super().delete_record(kind, tenant, key)

    def json_records(self) -> dict[RecordKey, bytes]:
        """The records as the changelog would carry them (compact JSON)."""
        return {key: orjson.dumps(marshal.loads(raw)) for key, (raw, _expire_at) in self._records.items()}


# -- the day -------------------------------------------------------------------------------------
def day_takes(queues: int) -> tuple[list[Take], int]:
    """A whole simulated day of ``queues`` queues as the worker's takes, and its event count."""
    events = sim_events(10**9, queues)
    total = len(events)
    messages = [
        Message("bench", 0, i, None, json.dumps(events[j : j + 100]).encode())
        for i, j in enumerate(range(0, total, 100))
    ]
    takes = [
        (messages[i : i + 20], max(parse_ts(e["ts"]) for e in events[i * 100 : (i + 20) * 100]))
        for i in range(0, len(messages), 20)
    ]
    return takes, total


def run_engine(takes: Sequence[Take], config: Config) -> tuple[float, float, CountingMemoryState]:
    """The engine on ``MemoryState``, fed the same envelopes the same way: wall seconds, this
    process's CPU seconds, the store."""
    from kpi_core.engine import Engine
    from kpi_core.errors import InvalidEventError

    store = CountingMemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    for take, now in takes:
        for message in take:
            for _raw, parsed in envelope_items(message.value, loads):
                if isinstance(parsed, Event):
                    try:
                        engine.process(parsed, now)
                    except InvalidEventError as exc:
                        engine.reject(exc.reason)
                else:
                    engine.reject(parsed.reason)
    return time.perf_counter() - start, time.process_time() - cpu, store


def run_processor(
    kind: str, takes: Sequence[Take], config: Config, redis_url: str, profile: cProfile.Profile | None = None
) -> tuple[float, float, dict[str, Any]]:
    """The batch processor on a fresh prefix over ``kind`` ("redis" or "hybrid"): wall seconds,
    this process's CPU seconds (the worker's own cost: on a loaded machine the wall time mostly
    measures the neighbours; Redis's CPU is not in it), and for the hybrid what it holds at the
    end. The prefix is cleared afterwards."""
    import redis

    from streams.worker import BatchProcessor

    client = redis.Redis.from_url(redis_url)
    prefix = common.unique(f"bench-placement-{kind}")
    now = [0.0]
    cls = HybridState if kind == "hybrid" else RedisState
    state = cls(client, config, prefix=prefix, clock=lambda: now[0])
    processor = BatchProcessor(config, state, lambda: now[0])
    extra: dict[str, Any] = {}
    gc.collect()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        for take, clock in takes:
            now[0] = clock
            processor.process(take)
        if profile is not None:
            profile.disable()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if isinstance(state, HybridState):
            extra = {
                "records": len(state.records),
                "changelog_messages": state.changelog_messages,
                "changelog_bytes": state.changelog_bytes,
                "record_values": {k: v[0] for k, v in state.records.items()},
            }
    finally:
        common.clear_prefix(redis_url, prefix)
        client.close()
    return elapsed, cpu, extra


#: The batch's phases in a cProfile: (label, file suffix, function). Cumulative times overlap
#: where one calls another (record reads happen inside the engine when not prefetched).
PHASES = [
    ("decode envelopes (envelope_items)", "kpi_core/events.py", "envelope_items"),
    ("seen-id lookups (prefetch_seen)", "streams/redis/write.py", "prefetch_seen"),
    ("series lookups (prefetch_series)", "streams/redis/write.py", "prefetch_series"),
    ("record reads, WATCHed (_read_records)", "streams/redis/write.py", "_read_records"),
    ("record reads, in memory (HybridState.get_record)", "bench_state_placement.py", "get_record"),
    ("engine (Engine.process, incl. lazy reads)", "kpi_core/engine/__init__.py", "process"),
    ("commit: encode (RedisState._encode)", "streams/redis/write.py", "_encode"),
    ("commit: transaction (RedisState._commit, incl. encode)", "streams/redis/write.py", "_commit"),
    ("records to the dict after commit (HybridState._committed)", "bench_state_placement.py", "_committed"),
]


def phase_shares(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of each phase and of ``BatchProcessor.process`` ("total")."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    total = 0.0
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.items():
        path = filename.replace(os.sep, "/")
        if name == "process" and path.endswith("streams/worker.py"):
            total = max(total, ct)
        for label, suffix, function in PHASES:
            if name == function and path.endswith(suffix):
                out[label] = out.get(label, 0.0) + ct
    out["total"] = total
    return out


# -- the changelog -------------------------------------------------------------------------------
RESTORE = r"""
import asyncio, gc, json, sys, time
from aiokafka import AIOKafkaConsumer, TopicPartition

def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096

async def main(bootstrap, topic):
    gc.collect()
    base = rss()
    start = time.perf_counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    store = {}
    messages = 0
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        connected = time.perf_counter() - start
        while await consumer.position(tp) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=1000, max_records=100000)).values():
                for m in batch:
                    messages += 1
                    if m.value is None:
                        store.pop(m.key, None)
                    else:
                        store[m.key] = m.value
        seconds = time.perf_counter() - start
    finally:
        await consumer.stop()
    gc.collect()
    held = rss()
    deep = sys.getsizeof(store) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in store.items())
    print(json.dumps({"seconds": seconds, "connect_seconds": connected, "messages": messages, "records": len(store),
                      "rss_delta": held - base, "deep_bytes": deep}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def create_compacted_topic(kafka: str, topic: str) -> None:
    import kafka as kafka_lib
    from kafka.admin import NewTopic

    admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()


def write_changelog(kafka: str, topic: str, records: dict[RecordKey, bytes]) -> float:
    """Produce every record (key, JSON) to ``topic`` with aiokafka (Faust's client, as a worker
    would write its changelog), acks=all; seconds to produce and flush."""
    from aiokafka import AIOKafkaProducer

    async def produce() -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka, acks="all", linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20
        )
        await producer.start()
        try:
            start = time.perf_counter()
            for key, value in records.items():
                await producer.send(topic, key=record_key_bytes(key), value=value, partition=0)
            await producer.flush()
            return time.perf_counter() - start
        finally:
            await producer.stop()

    return asyncio.run(produce())


def restore(kafka: str, topic: str) -> dict[str, Any]:
    """Read ``topic`` from the beginning into a dict in a fresh process (its own RSS)."""
    done = subprocess.run([sys.executable, "-c", RESTORE, kafka, topic], check=True, capture_output=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def throughput(args: argparse.Namespace, config: Config, redis_url: str, doc: dict[str, Any]) -> None:
    """Part 1: the engine on MemoryState, then the processor over each Redis store, alternating."""
    takes, total = day_takes(args.queues)
    print(f"throughput day: {total:,} simulator events, {args.queues} queues, {len(takes)} takes", flush=True)
    seconds, cpu, mem_store = run_engine(takes, config)
    runs: dict[str, list[float]] = {"memory": [total / seconds], "redis": [], "hybrid": []}
    cpu_runs: dict[str, list[float]] = {"memory": [total / cpu], "redis": [], "hybrid": []}
    print(
        f"  engine on MemoryState: {total / seconds:8,.0f} events/s, {total / cpu:8,.0f} events per CPU s", flush=True
    )
    hybrid_extra: dict[str, Any] = {}
    for r in range(args.rounds):
        for kind in ("redis", "hybrid") if r % 2 == 0 else ("hybrid", "redis"):
            seconds, cpu, extra = run_processor(kind, takes, config, redis_url)
            runs[kind].append(total / seconds)
            cpu_runs[kind].append(total / cpu)
            hybrid_extra = extra or hybrid_extra
            print(
                f"  round {r + 1}: processor over {kind:6}: {total / seconds:8,.0f} events/s ({seconds:.1f} s), "
                f"{total / cpu:8,.0f} events per CPU s",
                flush=True,
            )
    # The hybrid's records must be the engine's (same day, same clock): the store is faithful.
    expected = mem_store.json_records()
    got = hybrid_extra.pop("record_values", None)
    same = None
    if got is not None:  # (--rounds 0: the profiles only)
        same = set(got) == set(expected) and all(orjson.loads(got[k]) == orjson.loads(expected[k]) for k in expected)
        print(f"  hybrid's {len(got):,} records == the engine-on-MemoryState records: {same}", flush=True)
    doc["throughput"] = {
        "events": total,
        "events_per_s": runs,
        "events_per_cpu_s": cpu_runs,
        "hybrid": hybrid_extra,
        "records_match": same,
    }
    if same is False:
        print("  MISMATCH: the hybrid store does not reproduce the engine's records", file=sys.stderr)
    if not args.no_profile:
        shares: dict[str, dict[str, float]] = {}
        for kind in ("redis", "hybrid"):
            profile = cProfile.Profile()
            run_processor(kind, takes, config, redis_url, profile)
            shares[kind] = phase_shares(profile)
        doc["phases"] = shares
        print(f"  {'phase (cumulative, cProfile)':58} {'redis':>14} {'hybrid':>14}")
        for label, _suffix, _function in PHASES:
            cells = []
            for kind in ("redis", "hybrid"):
                s = shares[kind]
                cells.append(
                    f"{s.get(label, 0.0):6.1f} s {100 * s.get(label, 0.0) / s['total']:3.0f} %"
                    if label in s
                    else f"{'-':>14}"
                )
            print(f"  {label:58} {cells[0]:>14} {cells[1]:>14}")
        print(
            f"  {'BatchProcessor.process':58} {shares['redis']['total']:6.1f} s 100 % "
            f"{shares['hybrid']['total']:6.1f} s 100 %"
        )
    del takes, mem_store, expected, got
    gc.collect()


# -- report --------------------------------------------------------------------------------------
def mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=60, help="queues of the throughput day (default 60)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each Redis store (default 2)")
    parser.add_argument("--sizes", default="20,60,200", help="queues of the memory/restore days (default 20,60,200)")
    parser.add_argument("--sizes-only", action="store_true", help="skip the throughput part (1.)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    if not common.services_reachable():
        print("Kafka/Redis not reachable at KAFKA_BOOTSTRAP/REDIS_URL (this bench never starts them)", file=sys.stderr)
        return 2
    kafka, redis_url = common.services_env()
    config = Config()
    doc: dict[str, Any] = {"machine": common.machine(), "queues": args.queues, "rounds": args.rounds}

    if not args.sizes_only:
        throughput(args, config, redis_url, doc)

    # 2 and 3. Memory per worker and restore, per size.
    doc["sizes"] = {}
    topics: list[str] = []
    try:
        for queues in sizes:
            takes, total = day_takes(queues)
            seconds, _cpu, store = run_engine(takes, config)
            del takes
            records = store.json_records()
            by_kind: dict[str, int] = {}
            for kind, _tenant, _key in records:
                by_kind[kind] = by_kind.get(kind, 0) + 1
            value_bytes = sum(map(len, records.values()))
            key_bytes = sum(len(record_key_bytes(k)) for k in records)
            topic = common.unique(f"bench-changelog-{queues}")
            topics.append(topic)
            create_compacted_topic(kafka, topic)
            produce_s = write_changelog(kafka, topic, records)
            restored = restore(kafka, topic)
            if restored["records"] != len(records):
                print(f"  restore read {restored['records']:,} records, wrote {len(records):,}", file=sys.stderr)
            row = {
                "events": total,
                "engine_events_per_s": total / seconds,
                "records": len(records),
                "by_kind": by_kind,
                "json_bytes": value_bytes,
                "key_bytes": key_bytes,
                "record_writes": store.record_writes,
                "produce_s": produce_s,
                "restore": restored,
            }
            doc["sizes"][queues] = row
            print(
                f"{queues} queues: {total:,} events ({total / seconds:,.0f}/s on MemoryState), "
                f"{len(records):,} records "
                f"{by_kind}, JSON {mib(value_bytes)} + keys {mib(key_bytes)}, {store.record_writes:,} record writes "
                f"({store.record_writes / total:.2f}/event); changelog produced in {produce_s:.1f} s "
                f"({len(records) / produce_s:,.0f}/s); restore "
                f"{restored['messages']:,} messages in {restored['seconds']:.2f} s (connect "
                f"{restored['connect_seconds']:.2f} s) "
                f"({restored['messages'] / restored['seconds']:,.0f}/s), RSS +{mib(restored['rss_delta'])}, "
                f"dict {mib(restored['deep_bytes'])}",
                flush=True,
            )
            del store, records
            gc.collect()
    finally:
        common.delete_topics(kafka, topics)
    common.write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
