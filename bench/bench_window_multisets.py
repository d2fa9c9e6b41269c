"""How much of a scrape's read the maxima's multiset fields cost, on a busy queue's buckets.

Each maximum (``ccmon_max_wait_seconds``...) keeps a multiset per bucket, one field
``mx:<name>:<ms>`` per distinct value, so that a late event can lower it again. At 5,000 events/s
on 20 queues (``bench_latency.py``'s load) a bucket holds hundreds of them, and the window
script (``streams/redis/lua/windows.lua``) reads every one only to find each multiset's
largest. This measures what keeping them apart would save, before building it:

1. ``--events`` simulator events (``streams.sim``, ``--queues`` queues) stamped at ``--rate``
   events/s of event time ending now, written through the worker's BatchProcessor with the
   clock at each take's newest event (``bench_pipeline.apply_events``);
2. the SnapshotReader's read of one scrape (its round trips and window-script calls), median
   of ``--repeat``, with the window caches deleted first (**cold**) and kept (**warm**);
3. every bucket's multiset fields but each name's largest deleted (what the script would read
   if the writer kept them apart), and the same reads again.

Since session 17 the writer keeps them apart (a bucket's multiset hash, ``:bx:``, and one top
per maximum in the bucket): step 3 then finds nothing to delete, and step 2 is the read as it
now is. Run it from an older checkout to see the layout before. Also reported: the write's
wall time (``write_s``, what the batch script's op ``M`` costs the worker) and how much
Redis's ``used_memory`` grew with the state (``redis_memory_added``).

The state lives under a prefix of its own, deleted at the end. Needs ``REDIS_URL``; not part
of ``make bench`` (docs/BENCHMARKS.md, "Engine v2, session 16")::

    python bench/bench_window_multisets.py --events 200000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from bench_latency import sim_days
from bench_pipeline import apply_events


def write_state(redis_url: str, prefix: str, events: int, queues: int, rate: float) -> tuple[Any, float]:
    """The state, written through the worker's BatchProcessor (bench_pipeline.apply_events: the
    clock at each take's newest event) with the events stamped ``rate`` a second up to now;
    ``(a RedisState at the end's clock, that clock)``."""
    import redis

    from kpi_core.config import Config
    from streams.redis.state import RedisState
    from streams.sim import format_ts

    t0 = time.time() - events / rate
    stamped = [{**e, "ts": format_ts(t0 + i / rate)} for i, e in enumerate(sim_days(events, queues))]
    apply_events(redis_url, prefix, stamped, None)
    at = t0 + events / rate
    return RedisState(redis.Redis.from_url(redis_url), Config(), prefix=prefix, clock=lambda: at), at


def reads(state: Any, at: float, repeat: int, cold: bool) -> float:
    """Median wall time of the SnapshotReader's read (``cold``: window caches deleted first)."""
    from kpi_core.config import Config

    client, prefix = state.client, state.prefix
    times = []
    for _ in range(repeat):
        if cold:
            for pattern in (f"{prefix}:*:wc:*", f"{prefix}:*:mc:*"):
                for key in list(client.scan_iter(match=pattern, count=10000)):
                    client.delete(key)
        started = time.perf_counter()
        state.snapshot_reader(Config(), at)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def keep_largest_only(client: Any, buckets: list[bytes]) -> None:
    """Delete every multiset field of ``buckets`` but each name's largest."""
    for key in buckets:
        largest: dict[bytes, tuple[int, bytes]] = {}
        fields = [f for f in client.hkeys(key) if f.startswith(b"mx:")]
        for f in fields:
            name, _sep, ms = f.rpartition(b":")
            if name not in largest or int(ms) > largest[name][0]:
                largest[name] = (int(ms), f)
        keep = {f for _ms, f in largest.values()}
        gone = [f for f in fields if f not in keep]
        if gone:
            client.hdel(key, *gone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="simulator events (default 200,000)")
    parser.add_argument("--queues", type=int, default=20, help="simulated queues (default 20)")
    parser.add_argument("--rate", type=float, default=5000.0, help="events a second of event time (default 5,000)")
    parser.add_argument("--repeat", type=int, default=7, help="reads per measurement (default 7)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    _kafka, redis_url = common.services_env()
    prefix = common.unique("bench-multisets")
    try:
        import redis

        memory_before = redis.Redis.from_url(redis_url).info("memory")["used_memory"]
        started = time.perf_counter()
        state, at = write_state(redis_url, prefix, args.events, args.queues, args.rate)
        write_s = time.perf_counter() - started
        print(f"wrote {args.events:,} events in {write_s:.1f} s", file=sys.stderr)
        client = state.client
        buckets = list(client.scan_iter(match=f"{prefix}:*:b:*", count=10000))
        fields = sum(client.hlen(k) for k in buckets)
        multiset = sum(1 for k in buckets for f in client.hkeys(k) if f.startswith(b"mx:"))
        beside = list(client.scan_iter(match=f"{prefix}:*:bx:*", count=10000))
        result: dict[str, Any] = {
            "events": args.events,
            "queues": args.queues,
            "rate": args.rate,
            "write_s": write_s,
            "buckets": len(buckets),
            "fields": fields,
            "multiset_fields": multiset,
            "multiset_hashes": len(beside),
            "multiset_hash_fields": sum(client.hlen(k) for k in beside),
            "redis_memory_added": client.info("memory")["used_memory"] - memory_before,
            "machine": common.machine(),
        }
        result["with_multisets_ms"] = {
            "cold": 1000 * reads(state, at, args.repeat, True),
            "warm": 1000 * reads(state, at, args.repeat, False),
        }
        keep_largest_only(client, buckets)
        result["largest_only_ms"] = {
            "cold": 1000 * reads(state, at, args.repeat, True),
            "warm": 1000 * reads(state, at, args.repeat, False),
        }
        print(
            f"{len(buckets)} buckets, {fields:,} fields of which {multiset:,} multiset fields; "
            f"{len(beside)} multiset hashes beside them, {result['multiset_hash_fields']:,} fields; "
            f"a scrape's read: {result['with_multisets_ms']} -> {result['largest_only_ms']} ms",
            file=sys.stderr,
        )
    finally:
        common.clear_prefix(redis_url, prefix)
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
