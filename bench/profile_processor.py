"""The worker's batch code alone through a simulated day: events/s as the day fills.

``streams.worker.BatchProcessor`` over ``RedisState`` on the real Redis (no Kafka, no Faust):
a simulator day of ``--queues`` queues in envelopes of 100, takes of 20 envelopes, the clock at
each take's newest event (as a live worker's would be). Prints the rate of every ``--every``
events, so a slowdown as the day's state grows shows; ``--profile`` adds a cProfile of the
middle of the day. The events are freed before the run: the collector then traverses what the
processor itself keeps, not the harness's data (keeping them inflated the mid-day slowdown in
session 3's measurement).

Python's garbage collector is tuned as ``ccmon worker`` tunes it (``streams.worker.tune_gc``;
``--default-gc`` keeps Python's thresholds, as this script ran before 2026-12-07 17:50 UTC:
5-10 % slower). ``--envelope`` and ``--take`` set the batch's size (a live worker at 5,000 events/s takes
~250 events a batch; small batches show a batch's fixed cost). The median take of the day's
second half, wall and CPU, is printed at the end.

Used for the "Profiles and fixes" rows of docs/BENCHMARKS.md; not part of ``make bench``::

    python bench/profile_processor.py --events 250000 --queues 60
    python bench/profile_processor.py --events 60000 --queues 20 --envelope 10 --take 2
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from bench_pipeline import sim_events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=250_000, help="simulator events asked for (default 250,000)")
    parser.add_argument("--queues", type=int, default=60, help="simulated queues (default 60)")
    parser.add_argument("--every", type=int, default=20_000, help="print the rate every N events (default 20,000)")
    parser.add_argument("--profile", action="store_true", help="cProfile the middle 30 %% of the day")
    parser.add_argument("--sort", default="tottime", help="the profile's order: tottime (default), cumulative...")
    parser.add_argument("--lines", type=int, default=25, help="the profile's rows shown (default 25)")
    parser.add_argument("--envelope", type=int, default=100, help="events per Kafka message (default 100)")
    parser.add_argument("--take", type=int, default=20, help="messages per batch (default 20)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="events per pipelined chunk (default: the worker's, PIPELINE_CHUNK_EVENTS; 0: no pipelining)",
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="keep Python's GC thresholds (default: tuned as the worker's)"
    )
    args = parser.parse_args()

    import redis

    from kpi_core.config import Config
    from kpi_core.events import parse_ts
    from streams.redis.state import RedisState
    from streams.worker import BatchProcessor, Message

    common.ensure_services()
    _kafka, redis_url = common.services_env()
    events = sim_events(args.events, args.queues)
    total = len(events)
    size, per = args.envelope, args.take
    messages = [
        Message("bench", 0, i, None, json.dumps(events[j : j + size]).encode())
        for i, j in enumerate(range(0, total, size))
    ]
    takes = [
        (messages[i : i + per], max(parse_ts(e["ts"]) for e in events[i * size : (i + per) * size]))
        for i in range(0, len(messages), per)
    ]
    del events
    gc.collect()
    if not args.default_gc:
        from streams.worker import tune_gc

        tune_gc()  # as `ccmon worker` runs

    client = redis.Redis.from_url(redis_url)
    prefix = common.unique("bench-processor")
    now = [0.0]
    config = Config()
    processor = BatchProcessor(config, RedisState(client, config, prefix=prefix, clock=lambda: now[0]), lambda: now[0])
    if args.chunk is not None:
        processor.chunk_events = args.chunk or None
    profile = cProfile.Profile() if args.profile else None
    lo, hi = int(len(takes) * 0.35), int(len(takes) * 0.65)
    print(f"{total:,} simulator events, {args.queues} queues, {len(takes)} takes of <= {size * per:,}", file=sys.stderr)
    walls: list[float] = []
    cpus: list[float] = []
    try:
        start = mark = time.perf_counter()
        cpu = time.process_time()
        done = marked = 0
        for k, (take, clock) in enumerate(takes):
            now[0] = clock
            if profile is not None and k in (lo, hi):
                (profile.enable if k == lo else profile.disable)()
            took, used = time.perf_counter(), time.process_time()
            processor.process(take)
            if k >= len(takes) // 2:
                walls.append(time.perf_counter() - took)
                cpus.append(time.process_time() - used)
            done = min(total, (k + 1) * size * per)
            if done - marked >= args.every:
                t = time.perf_counter()
                print(f"events {marked:>9,} - {done:>9,}: {(done - marked) / (t - mark):8,.0f}/s", flush=True)
                mark, marked = t, done
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        print(f"all {total:,} events: {total / elapsed:,.0f}/s ({elapsed:.1f} s; this process's CPU {cpu:.1f} s)")
        if walls:
            print(
                f"median take of the second half ({size * per:,} events): {statistics.median(walls) * 1e3:.2f} ms, "
                f"this process's CPU {statistics.median(cpus) * 1e3:.2f} ms"
            )
    finally:
        common.clear_prefix(redis_url, prefix)
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
