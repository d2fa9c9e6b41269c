"""The window cache (streams/redis/lua/windows.lua) on a simulated day, while the day goes on.

The state: a simulated contact-center day (``streams.sim``, ``--queues`` queues) written from
midnight to ``--at`` (default 16:00) through the worker's BatchProcessor on the event-time
clock, as bench_scrape.py ``--day`` writes it. Then ``--steps`` times: the next ``--step``
minutes of the same day written the same way, the clock moved on, and the window script's
calls of one snapshot (every scope, every window; ``SnapshotReader._prefetch_windows``) timed
three ways, in the same step:

* **first**: the first scrape after the writes, with the caches as the previous scrape and
  the writes left them (the scopes whose version moved on fold again);
* **warm**: the next scrapes, nothing written in between (median of ``--repeat``);
* **cold**: every cache deleted before each call (median of ``--repeat``): what a scrape
  costs without the cache (and its write on top).

The three reads must be equal (every window of every scope), and equal to the store's
every-bucket read for a sample of scopes. Prints a JSON document (``--json FILE`` too).

    python bench/bench_window_cache.py --queues 20
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
from bench_pipeline import DAY_SCRAPE_AT, apply_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=20, help="simulated queues (default 20; at most 200)")
    parser.add_argument("--at", type=float, default=DAY_SCRAPE_AT, help="written up to (default 16:00 of the day)")
    parser.add_argument("--steps", type=int, default=6, help="steps of writes then scrapes (default 6)")
    parser.add_argument("--step", type=float, default=5.0, help="minutes of the day written a step (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls of warm and cold (default 3)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import redis
    from bench_scrape import build_day_state, day_events

    from kpi_core import windows
    from kpi_core.config import Config
    from kpi_core.events import parse_ts
    from streams.redis.read import SnapshotReader, _FieldNames
    from streams.redis.state import RedisState

    _kafka, redis_url = common.services_env()
    client = redis.Redis.from_url(redis_url)
    config = Config()
    tenant = "default"
    prefix = build_day_state(redis_url, args.queues, args.at)
    later = [e for e in day_events(args.queues, args.at) if parse_ts(e["ts"]) > args.at]

    def windows_call(at: float, cold: bool = False) -> tuple[float, dict[Any, dict[str, float]]]:
        """One snapshot's window script calls at ``at`` (ms) and what they read; ``cold``:
        every cache deleted just before."""
        state = RedisState(client, config, prefix=prefix, clock=lambda: at)
        ranges = [windows.window_range(w, at, config.timezone(tenant)) for w in config.windows]
        scopes = sorted(state.scopes()[tenant])
        reader = SnapshotReader.__new__(SnapshotReader)  # the window part of a reader only
        reader.state, reader.fine_seconds, reader.coarse_seconds = state, state.fine_seconds, state.coarse_seconds
        reader._windows, reader._fields = {}, _FieldNames()
        if cold:
            keys = list(client.scan_iter(match=f"{prefix}:*:wc:*", count=1000))
            if keys:
                client.delete(*keys)
        started = time.perf_counter()
        reader._prefetch_windows(tenant, scopes, ranges)
        elapsed = (time.perf_counter() - started) * 1000
        for scope in scopes[:: max(1, len(scopes) // 5)]:  # a sample against the store's own read
            for start, end in ranges:
                if reader._windows[(tenant, scope, start, end)] != state.read_window(tenant, scope, start, end):
                    raise SystemExit(f"{scope} [{start}, {end}) at {at}: the script differs from the store's read")
        return elapsed, reader._windows

    result: dict[str, Any] = {"queues": args.queues, "at": args.at, "machine": common.machine(), "steps": []}
    at = args.at
    try:
        windows_call(at)  # the caches of the day so far
        for k in range(args.steps):
            chunk = [e for e in later if at < parse_ts(e["ts"]) <= at + args.step * 60]
            apply_events(redis_url, prefix, chunk, None)
            at += args.step * 60
            first, reads = windows_call(at)
            warm = [windows_call(at) for _ in range(args.repeat)]
            cold = [windows_call(at, cold=True) for _ in range(args.repeat)]
            if any(other != reads for _ms, other in (*warm, *cold)):
                raise SystemExit(f"step {k + 1}: the reads differ between scrapes")
            row = {
                "minutes": (k + 1) * args.step,
                "events": len(chunk),
                "first_ms": first,
                "warm_ms": statistics.median(ms for ms, _ in warm),
                "cold_ms": statistics.median(ms for ms, _ in cold),
            }
            result["steps"].append(row)
            print(
                f"+{row['minutes']:g} min ({len(chunk)} events): first {first:.1f} ms, warm {row['warm_ms']:.1f} ms, "
                f"cold {row['cold_ms']:.1f} ms",
                file=sys.stderr,
            )
    finally:
        common.clear_prefix(redis_url, prefix)
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
