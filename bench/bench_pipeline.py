"""The pipeline on the real services: ceiling, one and two workers, scrape, Redis memory.

In the same run, on the same events (``streams.sim``, a day of a contact center with
``--queues`` queues, JSON-array envelopes of 100 events per partition keyed by entity, as
``ccmon simulate --kafka`` writes them, on fresh 4-partition topics):

1. **ceiling**: raw aiokafka consumption of the topic, ``getmany`` with no processing
   (events/s = events in the topic / time to read every message), and the same with a
   ``json.loads`` per message;
2. **one ``ccmon worker``** end to end: the worker joins its group on an empty topic, then
   the events are produced and the time until Redis (what ``/metrics`` renders) counts
   them is measured: the steady rate between 10 % and 90 % counted, and first to last;
   one scrape of ``/metrics`` at the end checks that it shows every event;
3. **two workers on four partitions**, same group, same events on a fresh topic: the same
   rates, and the scaling ratio (two / one);
4. **``/metrics`` time and size** with 10, 100 and 1,000 queues (state written through the
   worker's BatchProcessor into Redis, every window populated), median of 5 scrapes; and
   with ``--day-queues`` (100; quick 20) queues of a simulated day written from midnight to
   16:00 on the event-time clock (``bench_scrape.build_day_state``): a real day's traffic,
   where ``today`` holds every bucket since midnight;
5. **Redis memory per queue** at steady state: ``MEMORY USAGE`` of every key of the run's
   prefix at the end of each of three simulated days on the same queues (the windows fill
   within the 25 h horizon: days 2 and 3 are the steady state, at different event counts).

Counting: the rates poll the pipeline counters in Redis every 0.1 s (a few small reads);
polling /metrics itself at that rate would take a core from the worker on a 2-core machine.

Needs Kafka and Redis (``deploy/local/services.sh up``; started here when they do not
answer). Prints a JSON document of the numbers (``--json FILE``); ``bench/run_all.py``
runs it several times and writes docs/BENCHMARKS.md.

    python bench/bench_pipeline.py              # full sizes
    python bench/bench_pipeline.py --quick      # a minute or two
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DAY = 1_795_132_800  # 2026-11-20T00:00:00Z


def sim_events(
    n: int, queues: int, start: float = DAY, hours: float = 24.0, seed: int = 1, tenant: str = "default"
) -> list[dict[str, Any]]:
    """The first ``n`` valid events of a simulated day (``streams.sim``)."""
    from streams.sim import SimParams, Simulator, default_queues

    params = SimParams(start=start, hours=hours, queues=default_queues(queues), seed=seed, tenant=tenant)
    out: list[dict[str, Any]] = []
    for _emit_at, record in Simulator(params).stream():
        if isinstance(record, dict):
            out.append(record)
            if len(out) >= n:
                break
    return out


def end_instant(events: list[dict[str, Any]]) -> float:
    """The next whole minute after the newest event (every window then holds events), kept
    before the next (UTC) midnight: a day's events evaluated after it are all ``too_late``
    (the lateness cutoff is the evaluation day's midnight). A whole simulated day (the
    default size at 80 queues) ends at 23:59:xx, whose next minute is midnight."""
    from kpi_core.events import parse_ts

    newest = max(parse_ts(e["ts"]) for e in events)
    at = float(math.floor(newest / 60) * 60 + 60)
    midnight = float(math.floor(newest / 86400) * 86400 + 86400)
    return at if at < midnight else (newest + midnight) / 2


# -- 1. ceiling --------------------------------------------------------------------------------
async def _consume(kafka: str, topic: str, messages: int, decode: bool) -> float:
    import json

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        group_id=common.unique("ceiling"),
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    started: float | None = None
    try:
        while seen < messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in batches.values():
                if started is None:
                    started = time.perf_counter()
                if decode:
                    for record in records:
                        json.loads(record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    return time.perf_counter() - (started or time.perf_counter())


def ceiling(kafka: str, topic: str, messages: int, events: int) -> dict[str, float]:
    raw = asyncio.run(_consume(kafka, topic, messages, decode=False))
    decoded = asyncio.run(_consume(kafka, topic, messages, decode=True))
    return {"raw": events / raw, "json": events / decoded}


# -- 2, 3. workers end to end ------------------------------------------------------------------
def wait_group(kafka: str, group: str, members: int, timeout: float = 120) -> float:
    """Block until the consumer group is Stable with ``members`` members; seconds waited."""
    import kafka as kafka_lib

    started = time.monotonic()
    admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
    try:
        while True:
            try:
                info = admin.describe_groups([group]).get(group, {})
            except Exception:  # the coordinator may not know the group yet
                info = {}
            if info.get("group_state") == "Stable" and len(info.get("members", [])) == members:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"group {group} not stable with {members} members after {timeout:.0f} s: {info}")
            time.sleep(0.5)
    finally:
        admin.close()


def workers_run(
    kafka: str, redis_url: str, events: list[dict[str, Any]], at: float, workers: int, log_dir: Path
) -> dict[str, Any]:
    """``workers`` ccmon workers in one group on a fresh 4-partition topic: they join while the
    topic is empty, then the events are produced and counted as they land in Redis."""
    topic = common.unique(f"bench-e2e{workers}")
    prefix = common.unique(f"bench-e2e{workers}")
    clock = f"fixed:{at}"
    common.create_topic(kafka, topic, 4)
    common.create_topic(kafka, f"{topic}-dlq", 1)
    procs = [
        common.ccmon(common.worker_args(kafka, redis_url, topic, prefix, prefix, clock), log_dir / f"{prefix}-w{i}.log")
        for i in range(workers)
    ]
    port = common.free_port()
    exporter = common.ccmon(common.exporter_args(redis_url, prefix, port, clock), log_dir / f"{prefix}-exporter.log")
    try:
        joined = wait_group(kafka, prefix, workers)
        count = common.Counted(redis_url, prefix)
        cpu_before = common.redis_cpu(redis_url)
        produced: dict[str, float] = {}

        def produce() -> None:
            prod = common.producer(kafka)
            started = time.perf_counter()
            for part, key, value, _n in common.envelopes(events, 4):
                prod.send(topic, key=key, value=value, partition=part)
            prod.flush(300)
            produced["seconds"] = time.perf_counter() - started
            prod.close()

        # Produced while the workers consume (as in production); counting starts with it.
        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        rates = common.drain_rate(count, len(events), timeout=3600, processes=procs)
        redis_cost = common.redis_cpu_delta(cpu_before, common.redis_cpu(redis_url), len(events))
        thread.join()
        produce_seconds = produced.get("seconds", math.nan)
        common.wait_http(port)
        text = common.scrape(port).decode()
        shown = sum(
            v
            for name in ("ccmon_events_total", "ccmon_events_rejected_total", "ccmon_events_duplicate_total")
            for v in common.sample_values(text, name).values()
        )
        rejected = sum(common.sample_values(text, "ccmon_events_rejected_total").values())
        if rejected:
            # Rejections take another path (DLQ sends): a rate of them is not the worker's.
            raise RuntimeError(
                f"{rejected:.0f} of {len(events)} events were rejected "
                f"({common.sample_values(text, 'ccmon_events_rejected_total')}): not a measurement"
            )
        return {
            **rates,
            "worker_peak_mib": max(peak_rss_mib(proc.pid) for proc in procs),
            "joined_seconds": joined,
            "produce_seconds": produce_seconds,
            "metrics_events": shown,
            "rejected": rejected,
            "redis": redis_cost,
        }
    finally:
        common.stop([*procs, exporter])
        common.clear_prefix(redis_url, prefix)
        common.delete_topics(kafka, [topic, f"{topic}-dlq", f"{prefix}-__assignor-__leader"])


def peak_rss_mib(pid: int) -> float:
    """A running process's peak resident memory (``VmHWM``), MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return math.nan


# -- state written in-process through the worker's own batch code ------------------------------
def apply_events(
    redis_url: str, prefix: str, events: list[dict[str, Any]], at: float | None, expiry: dict[str, float] | None = None
) -> None:
    """``events`` into Redis under ``prefix`` via ``streams.worker.BatchProcessor`` (envelopes
    of 100, takes of 20 envelopes). The clock is ``at``, or (``at`` None) the newest event
    time of each take, as a live worker's would be. ``expiry`` collects every key's expiry
    instant on that clock (the TTLs the batch script sets, which only ever extend)."""
    import json

    import redis

    from kpi_core.config import Config
    from kpi_core.events import parse_ts
    from streams.redis.state import RedisState
    from streams.worker import BatchProcessor, Message

    now = [at if at is not None else 0.0]

    class Tracked(RedisState):
        def _encode(self, b: Any) -> Any:
            seen_ops, ops = super()._encode(b)
            if expiry is not None:
                for key, op in (*seen_ops, *ops):
                    if op[0] in ("H", "M", "I", "R", "S", "G", "W") and op[1]:
                        expiry[key] = max(expiry.get(key, 0.0), now[0] + op[1] / 1000)
                    elif op[0] == "D":
                        expiry.pop(key, None)
            return seen_ops, ops

    config = Config()
    state = Tracked(redis.Redis.from_url(redis_url), config, prefix=prefix, clock=lambda: now[0])
    processor = BatchProcessor(config, state, lambda: now[0])
    messages = [
        Message("bench", 0, i, None, json.dumps(events[j : j + 100]).encode())
        for i, j in enumerate(range(0, len(events), 100))
    ]
    for i in range(0, len(messages), 20):
        if at is None:
            now[0] = max(parse_ts(e["ts"]) for e in events[i * 100 : (i + 20) * 100])
        processor.process(messages[i : i + 20])


# -- 4. scrape ---------------------------------------------------------------------------------
#: The instant of the day scrape: 16:00 of the simulated day, its afternoon peak.
DAY_SCRAPE_AT = DAY + 16 * 3600


def scrape_run(
    redis_url: str, queues: int, at: float, scrapes: int, log_dir: Path, day: bool = False
) -> dict[str, Any]:
    from gen_events import generate

    if day:
        from bench_scrape import build_day_state

        at = DAY_SCRAPE_AT
        prefix = build_day_state(redis_url, queues, at)
    else:
        prefix = common.unique(f"bench-scrape{queues}")
        # gen_events makes queues q000..: 60 events per queue over the last 6 hours, so every
        # window (5m, 15m, 1h, today) of every queue holds events.
        events = list(generate(queues * 60, queues, seed=3, start=int(at) - 6 * 3600))
        apply_events(redis_url, prefix, events, at)
    port = common.free_port()
    exporter = common.ccmon(
        common.exporter_args(redis_url, prefix, port, f"fixed:{at}"), log_dir / f"{prefix}-exporter.log"
    )
    try:
        common.wait_http(port)
        common.scrape(port)  # warm-up: imports, connections
        times, size = [], 0
        for _ in range(scrapes):
            t = time.perf_counter()
            size = len(common.scrape(port))
            times.append(time.perf_counter() - t)
        return {"seconds": statistics.median(times), "bytes": size, "queues": queues, "day": day}
    finally:
        common.stop([exporter])
        common.clear_prefix(redis_url, prefix)


# -- 5. Redis memory per queue -------------------------------------------------------------------
KINDS = (
    (":b:", "buckets"),
    (":bx:", "bucket_multisets"),
    (":bi:", "bucket_index"),
    (":wc:", "window_cache"),
    (":mc:", "minute_folds"),
    (":wv:", "window_version"),
    (":tot:", "totals"),
    (":live:", "live"),
    (":rec:", "records"),
    (":seen", "seen_ids"),
    (":series:", "series"),
)
PER_QUEUE = (
    "buckets",
    "bucket_multisets",
    "bucket_index",
    "window_cache",
    "minute_folds",
    "window_version",
    "totals",
    "live",
)


def prefix_memory(redis_url: str, prefix: str) -> dict[str, float]:
    """``MEMORY USAGE key SAMPLES 0`` of every key of ``prefix``, summed by kind (and
    ``<kind>_keys``: how many keys)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=5000)]
    sizes: list[int] = []
    for i in range(0, len(keys), 1000):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[i : i + 1000]:
                pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
            sizes += [int(s or 0) for s in pipe.execute()]
    kinds: dict[str, float] = {}
    for key, size in zip(keys, sizes, strict=True):
        kind = next((name for part, name in KINDS if part in key), "other")
        kinds[kind] = kinds.get(kind, 0) + size
        kinds[f"{kind}_keys"] = kinds.get(f"{kind}_keys", 0) + 1
    return kinds


def memory_run(redis_url: str, queues: int, days: int = 3) -> dict[str, Any]:
    """Simulated days on ``queues`` queues one after the other, written as a live worker
    would (clock = event time), measured at the end of each day (midnight).

    Redis counts TTLs in real time and the bench writes a day in seconds, so the keys a live
    Redis would have expired by the end of a day are deleted here first, by the expiry
    instants the batch script set (event-time clock + TTL; TTLs only extend); what remains
    is what a live Redis holds at that instant. The windows fill within the lateness horizon
    (25 h with ``today``): days 2 and 3 are the steady state, the same queues with twice the
    events. Per-queue state (buckets and their multiset hashes, bucket indexes, window caches
    and versions, minute folds, totals, live sets; every key of a scope) is divided by the
    queues; per-entity state (call/customer/ticket records, seen event ids) follows the
    traffic of the horizon, not the number of queues, and is shown apart."""
    import redis

    prefix = common.unique(f"bench-mem{queues}")
    client = redis.Redis.from_url(redis_url)
    expiry: dict[str, float] = {}
    out: dict[str, Any] = {"queues": queues, "days": []}
    events_so_far = 0
    try:
        for day in range(days):
            events = sim_events(10**9, queues, start=DAY + day * 86400, seed=11)
            events_so_far += len(events)
            apply_events(redis_url, prefix, events, None, expiry)
            at = DAY + (day + 1) * 86400.0  # midnight at the end of the simulated day
            gone = [key for key, when in expiry.items() if when <= at]
            for i in range(0, len(gone), 2000):
                client.unlink(*gone[i : i + 2000])
            for key in gone:
                del expiry[key]
            kinds = prefix_memory(redis_url, prefix)
            per_queue = sum(kinds.get(k, 0) for k in PER_QUEUE)
            out["days"].append(
                {
                    "events": len(events),
                    "events_so_far": events_so_far,
                    "expired_keys": len(gone),
                    "kinds": kinds,
                    "per_queue_bytes": per_queue / queues,
                    "all_keys_bytes": sum(v for k, v in kinds.items() if not k.endswith("_keys")),
                }
            )
    finally:
        common.clear_prefix(redis_url, prefix)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute or two")
    parser.add_argument("--events", type=int, default=None, help="events (default 300,000; quick 40,000)")
    parser.add_argument("--queues", type=int, default=None, help="queues of the simulated day (default 80; quick 12)")
    parser.add_argument("--scrape-queues", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument(
        "--day-queues", type=int, default=None, help="queues of the day scrape (default 100; quick 20; 0: none)"
    )
    parser.add_argument("--scrapes", type=int, default=None, help="scrapes per size (default 5; quick 3)")
    parser.add_argument("--memory-queues", type=int, default=None, help="queues for Redis memory (default 20; quick 4)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ceiling", "one", "two", "scrape", "memory"])
    parser.add_argument("--json", default=None, help="write the results here (default: stdout)")
    args = parser.parse_args(argv)
    n_events = args.events or (40_000 if args.quick else 300_000)
    queues = args.queues or (12 if args.quick else 80)
    scrapes = args.scrapes or (3 if args.quick else 5)
    memory_queues = args.memory_queues or (4 if args.quick else 20)
    common.ensure_services()
    kafka, redis_url = common.services_env()
    log_dir = common.OUT / "logs"

    events = sim_events(n_events, queues)
    at = end_instant(events)
    result: dict[str, Any] = {"events": len(events), "queues": queues, "at": at, "quick": args.quick}
    print(f"{len(events):,} simulated events, {queues} queues", file=sys.stderr)

    if "ceiling" not in args.skip:
        topic = common.unique("bench-ceiling")
        messages = common.produce_envelopes(kafka, topic, events)
        result["messages"] = messages
        try:
            result["ceiling"] = ceiling(kafka, topic, messages, len(events))
        finally:
            common.delete_topics(kafka, [topic])
        print(
            f"ceiling raw {result['ceiling']['raw']:,.0f}/s, json {result['ceiling']['json']:,.0f}/s", file=sys.stderr
        )
    if "one" not in args.skip:
        result["one_worker"] = workers_run(kafka, redis_url, events, at, 1, log_dir)
        print(
            f"one worker {result['one_worker']['steady']:,.0f}/s, Redis CPU "
            f"{result['one_worker']['redis']['cpu_us_per_event']:.1f} us/event, "
            f"peak RSS {result['one_worker']['worker_peak_mib']:,.0f} MiB",
            file=sys.stderr,
        )
    if "two" not in args.skip:
        result["two_workers"] = workers_run(kafka, redis_url, events, at, 2, log_dir)
        print(f"two workers {result['two_workers']['steady']:,.0f}/s", file=sys.stderr)
    if "scrape" not in args.skip:
        result["scrape"] = []
        for q in args.scrape_queues:
            row = scrape_run(redis_url, q, at, scrapes, log_dir)
            result["scrape"].append(row)
            print(f"scrape {q} queues: {row['seconds'] * 1000:,.0f} ms, {row['bytes']:,} bytes", file=sys.stderr)
        day_queues = args.day_queues if args.day_queues is not None else (20 if args.quick else 100)
        if day_queues:
            row = scrape_run(redis_url, day_queues, at, scrapes, log_dir, day=True)
            result["scrape"].append(row)
            print(
                f"scrape {day_queues} queues, a day to 16:00: {row['seconds'] * 1000:,.0f} ms, {row['bytes']:,} bytes",
                file=sys.stderr,
            )
    if "memory" not in args.skip:
        result["memory"] = memory_run(redis_url, memory_queues)
        for i, day in enumerate(result["memory"]["days"]):
            print(
                f"memory day {i + 1}: {day['per_queue_bytes'] / 1024:,.1f} KiB per queue, "
                f"{day['all_keys_bytes'] / 1024 / 1024:,.1f} MiB all keys",
                file=sys.stderr,
            )
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
