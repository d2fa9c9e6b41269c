"""Push latency: an event produced to Kafka -> visible on the exporter's board in a real
headless Chromium page (``/api/stream``, Server-Sent Events), at a fixed rate.

One ``ccmon worker`` and one ``ccmon exporter`` (default settings, wall clock) on a fresh
4-partition topic, fed ``--rate`` events/s (default 5,000) by bench_latency's paced producer
(simulated contact-center traffic over ``--queues`` queues, stamped with the wall clock,
JSON-array envelopes). ``--markers`` times a second the producer adds a marker: a
``call.offered`` to the queue ``zz-probe`` that is never answered, so marker *i* makes the
board's ``zz-probe`` *Waiting* tile read *i*.

The board is the exporter's own page (``/``) in Debian's Chromium driven by playwright
(``executable_path``; playwright's browser download is never used), 1920x1080. A
``MutationObserver`` in the page notes, after each render, the probe tile's value and the
time of the next animation frame (the frame that paints it): marker *i* is **visible** at
the first frame showing *i* or more; its delay is that instant minus the instant the
producer handed it to Kafka (one machine, one clock). No polling in the measure: the delay
is the pipeline's (Kafka -> worker -> Redis) plus the exporter's push (a poll of the workers'
event counters every 0.25 s, a snapshot, the SSE write) plus the page's parse and render.

The first ``--warmup`` seconds are not measured; the page must have stayed on the stream
(``data-transport="sse"``, no ``/api/kpis`` request), else the run says so.

    python bench/bench_push.py            # 60 s at 5,000 events/s
    python bench/bench_push.py --quick    # 15 s
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from bench_latency import (
    PROBE_QUEUE,
    Producer,
    RedisPoller,
    cpu_seconds,
    drain,
    live_pipeline,
    quantile,
    sim_days,
    visible,
)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Runs in the page: after each render (body's data-renders changes), the probe tile's value
#: and the wall-clock time of the frame that paints it.
OBSERVER = """
window.__seen = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    const tile = document.querySelector(".tile[data-queue='PROBE'][data-kpi='calls_waiting']");
    const value = tile ? Number(tile.dataset.value) : 0;
    requestAnimationFrame(() => window.__seen.push([performance.timeOrigin + performance.now(), value]));
  }).observe(document.body, {attributes: true, attributeFilter: ["data-renders"]});
});
""".replace("PROBE", PROBE_QUEUE)


def delays_of(markers: list[float], seen: list[tuple[float, float]], since: float) -> tuple[list[float], int]:
    """Per marker produced at or after ``since``: seconds until the first frame showing it;
    and how many were never shown."""
    delays: list[float] = []
    unseen = 0
    k = 0
    for i, produced in enumerate(markers, start=1):
        while k < len(seen) and seen[k][1] < i:
            k += 1
        if k >= len(seen):
            unseen += 1
            continue
        if produced >= since:
            delays.append(seen[k][0] / 1000.0 - produced)
    return delays, unseen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="15 s measured (default 60 s)")
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s (default 5,000)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds (default 60; quick 15)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds not measured first (default 10; quick 5)")
    parser.add_argument("--tick", type=float, default=0.05, help="producer pacing period, s (default 0.05)")
    parser.add_argument("--markers", type=float, default=5.0, help="markers per second (default 5)")
    parser.add_argument("--queues", type=int, default=20, help="simulated queues (default 20)")
    parser.add_argument("--json", default=None, help="write the results here (default: stdout)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 2
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 10.0)
    total = warmup + seconds
    events = sim_days(int(args.rate * total) + 1000, args.queues)
    polled: list[str] = []
    with live_pipeline("bench-push") as live:
        worker, exporter, port = live.worker, live.exporter, live.port
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1920, "height": 1080},
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.on("request", lambda request: polled.append(request.url) if "api/kpis" in request.url else None)
                page.add_init_script(OBSERVER)
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.body.dataset.transport === 'sse'", timeout=30000)
                producer = Producer(
                    live.kafka, live.topic, events, args.rate, args.tick, args.markers, total, live.prefix[-10:]
                )
                redis_poller = RedisPoller(live.redis_url, live.prefix, 0.01)
                redis_poller.start()
                cpu0 = {name: cpu_seconds(p.pid) for name, p in (("worker", worker), ("exporter", exporter))}
                wall0 = time.time()
                producer.start()
                while producer.is_alive():
                    page.wait_for_timeout(250)  # playwright's loop keeps running meanwhile
                if producer.error is not None:
                    raise producer.error
                # playwright's loop keeps running while it waits
                backlog_seconds = drain(live, producer, lambda seconds: page.wait_for_timeout(seconds * 1000))
                page.wait_for_timeout(1500)  # the last push
                redis_poller.halt.set()
                redis_poller.join()
                seen = [(float(t), float(v)) for t, v in page.evaluate("window.__seen")]
                transport = page.evaluate("document.body.dataset.transport")
                wall = time.time() - wall0
                cpu = {
                    name: (cpu_seconds(p.pid) - cpu0[name]) / wall
                    for name, p in (("worker", worker), ("exporter", exporter))
                }
            finally:
                context.close()

    since = producer.started + warmup
    delays, unseen = delays_of(producer.markers, seen, since)
    # The same markers' commit to Redis (bench_latency's 10 ms probe reads): the pipeline's
    # share, and what the push adds after it (commit -> painted in the page).
    committed, _lows, _widths, _unseen = visible(producer.markers, redis_poller.samples, since)
    pushed = [d - c for d, c in zip(delays, committed, strict=False)] if len(committed) == len(delays) else []
    renders = [t for t, _v in seen]
    gaps = [(b - a) / 1000.0 for a, b in itertools.pairwise(renders)]
    result: dict[str, Any] = {
        "rate_target": args.rate,
        "rate_achieved": producer.sent / max(producer.ended - producer.started, 1e-9),
        "seconds": seconds,
        "warmup": warmup,
        "events_sent": producer.sent,
        "markers": len(delays),
        "markers_produced": len(producer.markers),
        "markers_unseen": unseen,
        "late_ticks": producer.late_ticks,
        "kept_up": not math.isnan(backlog_seconds),
        "backlog_seconds": backlog_seconds,
        "page_renders": len(seen),
        "render_gap_ms_median": 1000 * quantile(gaps, 0.5) if gaps else math.nan,
        "transport": transport,
        "kpis_polls": len(polled),
        "cpu_worker": cpu["worker"],
        "cpu_exporter": cpu["exporter"],
        "queues": args.queues,
        "quick": args.quick,
    }
    if delays:
        result.update(
            {
                "p50_ms": 1000 * quantile(delays, 0.5),
                "p99_ms": 1000 * quantile(delays, 0.99),
                "max_ms": 1000 * max(delays),
                "min_ms": 1000 * min(delays),
            }
        )
    if committed:
        result.update(
            {"commit_p50_ms": 1000 * quantile(committed, 0.5), "commit_p99_ms": 1000 * quantile(committed, 0.99)}
        )
    if pushed:
        result.update(
            {
                "push_p50_ms": 1000 * quantile(pushed, 0.5),
                "push_p99_ms": 1000 * quantile(pushed, 0.99),
                "push_max_ms": 1000 * max(pushed),
            }
        )
    print(
        f"{result['markers']} markers at {result['rate_achieved']:,.0f} events/s, event -> Chromium: "
        f"p50 {result.get('p50_ms', math.nan):,.0f} ms, p99 {result.get('p99_ms', math.nan):,.0f} ms, "
        f"max {result.get('max_ms', math.nan):,.0f} ms; of which after the Redis commit: p50 "
        f"{result.get('push_p50_ms', math.nan):,.0f} ms, p99 {result.get('push_p99_ms', math.nan):,.0f} ms "
        f"(transport {transport}, {len(polled)} polls, "
        f"kept up: {result['kept_up']})",
        file=sys.stderr,
    )
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
