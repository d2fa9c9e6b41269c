"""Latency: the delay from an event's production to its effect on ``/metrics``, at a fixed rate.

One ``ccmon worker`` and one ``ccmon exporter`` (default settings, wall clock) on a fresh
4-partition topic. A producer sends ``--rate`` events/s (default 5,000), paced every
``--tick`` seconds (50 ms): the events due since the last tick, taken in order from
simulated contact-center days (``streams.sim``, ``--queues`` queues) and stamped
with the wall clock (``ts`` = the instant they are handed to the producer: the simulated
mix and lifecycles, time-compressed), as JSON-array envelopes per partition (<= 100 events,
keyed by entity, as ``ccmon simulate --kafka`` writes them), ``linger_ms=0``.

**Probes**: ``--markers`` times a second, the tick adds a marker, a ``call.offered`` of
its own call to the queue ``zz-probe``, stamped like the others, at the end of partition
0's envelope (all markers in one partition, so they are applied in production order).
Each marker raises ``ccmon_calls_offered_total{queue="zz-probe"}`` by one.

**Detection**, two ways in the same run. (a) A Redis poller reads the probe queue's
``offered`` total (the hash ``/metrics`` renders ``ccmon_calls_offered_total`` from) every
``--redis-poll`` seconds (10 ms, one HGET: no load): marker *i* was committed between the
start of the last read showing fewer than *i* and the end of the first showing *i* or more.
A scrape that starts then shows it a scrape's time later, so the **headline delay** is
(that end - the marker's production instant) + the median ``/metrics`` scrape time of the
run. (b) Cross-check: the full ``/metrics`` scraped every ``--poll`` seconds (0.5 s),
delays read the same way (end of the first scrape showing the marker), with a coarser
resolution. Scraping /metrics at 20 Hz instead costs the exporter a third of a core, which
on a 2-core machine slowed the worker it measures (p50 2.9 s vs 1.1 s at 2 Hz), hence (a).

The first ``--warmup`` seconds are not measured. After the run the worker must have applied
every event (else it did not keep up and the delays only grow; that is reported).

    python bench/bench_latency.py            # 60 s at 5,000 events/s
    python bench/bench_latency.py --quick    # 15 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from bench_pipeline import DAY, wait_group

PROBE_QUEUE = "zz-probe"
_PROBE = re.compile(r'^ccmon_calls_offered_total\{[^}]*queue="' + PROBE_QUEUE + r'"[^}]*\} (\S+)$', re.M)


def sim_days(n: int, queues: int) -> list[dict[str, Any]]:
    """At least ``n`` valid events: simulated days one after the other (unique ids)."""
    from streams.sim import SimParams, Simulator, default_queues

    out: list[dict[str, Any]] = []
    day = 0
    while len(out) < n:
        params = SimParams(start=DAY + day * 86400, hours=24, queues=default_queues(queues), seed=7)
        out += [r for _t, r in Simulator(params).stream() if isinstance(r, dict)]
        day += 1
    return out[:n]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Producer(threading.Thread):
    """Paced production; records each marker's production instant."""

    def __init__(
        self,
        kafka: str,
        topic: str,
        events: list[dict[str, Any]],
        rate: float,
        tick: float,
        markers_per_second: float,
        seconds: float,
        run: str,
    ) -> None:
        super().__init__(daemon=True)
        self.kafka, self.topic, self.events = kafka, topic, events
        self.rate, self.tick, self.every, self.seconds, self.run_id = rate, tick, 1.0 / markers_per_second, seconds, run
        self.markers: list[float] = []  # production instant (= ts) of marker i+1
        self.sent = 0
        self.started = 0.0
        self.ended = 0.0
        self.late_ticks = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        from streams.sim import format_ts

        prod = common.producer(self.kafka, linger_ms=0)
        self.started = start = time.time()
        next_marker = start
        next_tick = start
        i = 0
        while True:
            now = time.time()
            if now - start >= self.seconds:
                break
            due = min(int(self.rate * (now - start)) - self.sent, len(self.events) - i)
            batch = self.events[i : i + due]
            i += due
            stamp = format_ts(now)
            for event in batch:
                event["ts"] = stamp
            marker = None
            if now >= next_marker:
                next_marker += self.every
                n = len(self.markers) + 1
                marker = {
                    "event_id": f"probe-{self.run_id}-{n}",
                    "type": "call.offered",
                    "ts": stamp,
                    "tenant": "default",
                    "queue": PROBE_QUEUE,
                    "call_id": f"probe-{self.run_id}-{n}",
                }
            per_part: dict[int, list[dict[str, Any]]] = {}
            for event in batch:
                per_part.setdefault(common.partition_of(common.entity_key(event), 4), []).append(event)
            if marker is not None:
                per_part.setdefault(0, []).append(marker)
                self.markers.append(now)
            for part, items in per_part.items():
                for j in range(0, len(items), 100):
                    chunk = items[j : j + 100]
                    value = json.dumps(chunk, separators=(",", ":")).encode()
                    prod.send(self.topic, key=common.entity_key(chunk[0]).encode(), value=value, partition=part)
            self.sent += len(batch)
            next_tick += self.tick
            pause = next_tick - time.time()
            if pause > 0:
                time.sleep(pause)
            else:
                self.late_ticks += 1
        prod.flush(60)
        self.ended = time.time()
        prod.close()


class Poller(threading.Thread):
    """Scrapes /metrics every ``interval`` seconds: (start, end, probe counter)."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.samples: list[tuple[float, float, float]] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.time()
            try:
                text = common.scrape(self.port, timeout=30).decode()
            except OSError:
                self.failures += 1
                time.sleep(self.interval)
                continue
            ended = time.time()
            match = _PROBE.search(text)
            self.samples.append((started, ended, float(match.group(1)) if match else 0.0))
            pause = started + self.interval - time.time()
            if pause > 0:
                self.halt.wait(pause)


class RedisPoller(threading.Thread):
    """Reads the probe queue's ``offered`` total in Redis (the hash /metrics renders
    ``ccmon_calls_offered_total`` from) every ``interval`` seconds: one HGET, no load."""

    def __init__(self, redis_url: str, prefix: str, interval: float) -> None:
        import redis

        from kpi_core.config import Config
        from streams.redis.state import RedisState

        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.key = RedisState(self.client, Config(), prefix=prefix)._totals_key("default", PROBE_QUEUE)
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.time()
            value = self.client.hget(self.key, "offered")
            self.samples.append((started, time.time(), float(value or 0)))
            pause = started + self.interval - time.time()
            if pause > 0:
                self.halt.wait(pause)


def visible(
    markers: list[float], samples: list[tuple[float, float, float]], since: float
) -> tuple[list[float], list[float], list[float], int]:
    """Per marker produced at or after ``since``: (upper bound of the delay, lower bound,
    resolution) from polls ``(start, end, counter)``; and how many were never seen."""
    delays, lows, widths = [], [], []
    unseen = 0
    k = 0
    for i, produced in enumerate(markers, start=1):
        while k < len(samples) and samples[k][2] < i:
            k += 1
        if k >= len(samples):
            unseen += 1
            continue
        if produced < since:
            continue
        end = samples[k][1]
        before = samples[k - 1][0] if k > 0 else samples[k][0]
        delays.append(end - produced)
        lows.append(max(0.0, before - produced))
        widths.append(end - before)
    return delays, lows, widths, unseen


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Live:
    """A running pipeline on a fresh topic (:func:`live_pipeline`)."""

    kafka: str
    redis_url: str
    topic: str
    prefix: str
    port: int
    worker: Any
    exporter: Any
    count: Any  # events applied so far, counted in Redis (common.Counted)


@contextlib.contextmanager
def live_pipeline(name: str) -> Iterator[Live]:
    """A fresh 4-partition topic (and its DLQ), one ``ccmon worker`` in its group and one
    ``ccmon exporter`` serving, on the wall clock; stopped, and their topics and Redis keys
    removed, on leaving."""
    common.ensure_services()
    kafka, redis_url = common.services_env()
    log_dir = common.OUT / "logs"
    topic, prefix = common.unique(name), common.unique(name)
    common.create_topic(kafka, topic, 4)
    common.create_topic(kafka, f"{topic}-dlq", 1)
    worker = common.ccmon(common.worker_args(kafka, redis_url, topic, prefix, prefix), log_dir / f"{prefix}-worker.log")
    port = common.free_port()
    exporter = common.ccmon(common.exporter_args(redis_url, prefix, port), log_dir / f"{prefix}-exporter.log")
    try:
        wait_group(kafka, prefix, 1)
        common.wait_http(port)
        yield Live(kafka, redis_url, topic, prefix, port, worker, exporter, common.Counted(redis_url, prefix))
    finally:
        common.stop([worker, exporter])
        common.clear_prefix(redis_url, prefix)
        common.delete_topics(kafka, [topic, f"{topic}-dlq", f"{prefix}-__assignor-__leader"])


def drain(live: Live, producer: Producer, pause: Callable[[float], None] = time.sleep) -> float:
    """Seconds from the producer's end until every event it sent was applied (the worker's
    backlog), or NaN after 120 s (it fell behind, and the delays only grow)."""
    started = time.time()
    while time.time() - started < 120:
        if live.count() >= producer.sent + len(producer.markers):
            return time.time() - producer.ended
        pause(0.1)
    return math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="15 s measured (default 60 s)")
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s (default 5,000)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds (default 60; quick 15)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds not measured first (default 10; quick 5)")
    parser.add_argument("--tick", type=float, default=0.05, help="producer pacing period, s (default 0.05)")
    parser.add_argument("--markers", type=float, default=5.0, help="markers per second (default 5)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between /metrics scrapes (default 0.5)")
    parser.add_argument(
        "--redis-poll", type=float, default=0.01, help="seconds between probe reads in Redis (default 0.01)"
    )
    parser.add_argument("--queues", type=int, default=20, help="simulated queues (default 20)")
    parser.add_argument("--json", default=None, help="write the results here (default: stdout)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 10.0)
    total = warmup + seconds
    events = sim_days(int(args.rate * total) + 1000, args.queues)
    with live_pipeline("bench-latency") as live:
        worker, exporter = live.worker, live.exporter
        producer = Producer(
            live.kafka, live.topic, events, args.rate, args.tick, args.markers, total, live.prefix[-10:]
        )
        poller = Poller(live.port, args.poll)
        redis_poller = RedisPoller(live.redis_url, live.prefix, args.redis_poll)
        cpu0 = {name: cpu_seconds(p.pid) for name, p in (("worker", worker), ("exporter", exporter))}
        wall0 = time.time()
        poller.start()
        redis_poller.start()
        producer.start()
        producer.join()
        if producer.error is not None:
            raise producer.error
        # Every event applied? (else the worker fell behind and the delays only grow)
        drain_started = time.time()
        backlog_seconds = drain(live, producer)
        time.sleep(max(0.0, 1.0 - (time.time() - drain_started)))
        poller.halt.set()
        redis_poller.halt.set()
        poller.join()
        redis_poller.join()
        wall = time.time() - wall0
        cpu = {
            name: (cpu_seconds(p.pid) - cpu0[name]) / wall for name, p in (("worker", worker), ("exporter", exporter))
        }

    samples = poller.samples
    measured_from = producer.started + warmup
    scrape_times = [e - s for s, e, _v in samples]
    scrape_median = quantile(scrape_times, 0.5) if scrape_times else math.nan
    # Headline: committed to Redis (fine polling) + one median /metrics scrape.
    r_delays, r_lows, r_widths, r_unseen = visible(producer.markers, redis_poller.samples, measured_from)
    delays = [d + scrape_median for d in r_delays]
    # Cross-check: /metrics itself, polled every --poll seconds (coarse).
    m_delays, m_lows, m_widths, unseen = visible(producer.markers, samples, measured_from)
    result: dict[str, Any] = {
        "rate_target": args.rate,
        "rate_achieved": producer.sent / max(producer.ended - producer.started, 1e-9),
        "seconds": seconds,
        "warmup": warmup,
        "events_sent": producer.sent,
        "markers": len(delays),
        "markers_unseen": r_unseen,
        "metrics_markers_unseen": unseen,
        "late_ticks": producer.late_ticks,
        "kept_up": not math.isnan(backlog_seconds),
        "backlog_seconds": backlog_seconds,
        "poll_interval": args.poll,
        "scrapes": len(samples),
        "scrape_failures": poller.failures,
        "redis_poll_interval": args.redis_poll,
        "scrape_ms_median": 1000 * scrape_median,
        "resolution_ms_median": 1000 * quantile(r_widths, 0.5) if r_widths else math.nan,
        "resolution_ms_max": 1000 * max(r_widths) if r_widths else math.nan,
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
                "redis_p50_ms": 1000 * quantile(r_delays, 0.5),
                "redis_p99_ms": 1000 * quantile(r_delays, 0.99),
                "redis_max_ms": 1000 * max(r_delays),
                "redis_p99_low_ms": 1000 * quantile(r_lows, 0.99),
                # each marker's commit delay, in production order (where the tail comes from)
                "redis_delays_ms": [round(1000 * d, 1) for d in r_delays],
            }
        )
    if m_delays:
        result.update(
            {
                "metrics_p50_ms": 1000 * quantile(m_delays, 0.5),
                "metrics_p99_ms": 1000 * quantile(m_delays, 0.99),
                "metrics_max_ms": 1000 * max(m_delays),
                "metrics_p99_low_ms": 1000 * quantile(m_lows, 0.99),
                "metrics_resolution_ms_median": 1000 * quantile(m_widths, 0.5),
            }
        )
    print(
        f"{result['markers']} markers at {result['rate_achieved']:,.0f} events/s: p50 "
        f"{result.get('p50_ms', math.nan):,.0f} ms, "
        f"p99 {result.get('p99_ms', math.nan):,.0f} ms, max {result.get('max_ms', math.nan):,.0f} ms "
        f"(resolution {result['resolution_ms_median']:,.0f} ms, kept up: {result['kept_up']})",
        file=sys.stderr,
    )
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
