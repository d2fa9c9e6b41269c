"""Soak: a steady event rate through one ``ccmon worker`` and the exporter for a long time,
recording memory and lag over time (issue #9 item 8).

    python bench/soak.py                     # 30 minutes at ~1,000 events/s, appends to docs/BENCHMARKS.md
    python bench/soak.py --minutes 5 --rate 500 --interval 15
    python bench/soak.py --minutes 1 --no-write --json out.json

Traffic: ``streams.sim.Simulator`` in real time (speed 1, ``ts`` = the wall clock, so
the worker's own clock, lateness and windows behave as in production), one simulator per
tenant (20 queues each, flat profile, open around the clock, fixed headcounts sized for the
load), written through ``KafkaSink`` as JSON-array envelopes of up to 100 events to a topic of
its own (2 partitions). ``--rate`` picks the number of tenants and calls per hour; the rate
actually produced is measured and reported. The first minute has a burst: every agent logs in.

Every ``--interval`` seconds it records: the worker's and the exporter's resident memory
(``VmRSS`` of their processes), Redis ``used_memory`` (the whole server: other users' keys
too) and the memory and number of this run's own keys (``MEMORY USAGE`` of every key but the
records, and of a random sample of 2,000 records scaled to their number),
the backlog (events produced minus events the pipeline counted: accepted, duplicate or
rejected), the group's consumer lag in messages (``ccmon_consumer_lag``, measured by the
worker every 5 s), the time a ``/metrics`` scrape takes, and the applied rate.

Growth is judged by :func:`trend`: an ordinary least-squares slope per minute over the second
half of the run (the first half holds start-up: imports, caches and buffers filling, the
login burst, the windows filling up), and the ratio of the last quarter's mean to the third
quarter's. Redis memory is *expected* to grow during a day: the engine keeps the day's
facts (event ids, records, the ``today`` buckets) until the horizon (~25 h) and only then
expires them; the worker and the exporter keep no state of their own and should stay flat.

Nothing here is left behind: the run's topics and Redis keys are deleted, its processes
stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
QUEUES_PER_TENANT = 20
#: Events per call the simulator makes on average with these queues (offer, answer, end,
#: agent states, surveys, tickets...), measured: used to size the traffic for ``--rate``.
EVENTS_PER_CALL = 5.0
#: Tenants are added so that no tenant needs more agents than the cardinality guard allows.
RATE_PER_TENANT = 120.0


@dataclass
class Sample:
    t: float  # seconds since the traffic started
    produced: int
    counted: float
    lag_messages: float | None
    worker_rss_mib: float
    exporter_rss_mib: float
    redis_used_mib: float
    prefix_mib: float | None
    prefix_keys: int
    scrape_seconds: float | None

    @property
    def backlog(self) -> float:
        return self.produced - self.counted


@dataclass
class SoakResult:
    seconds: float
    rate_target: float
    tenants: int
    samples: list[Sample] = field(default_factory=list)
    #: The exporter's RSS after each scrape of the held state (``run_soak(hold_scrapes=N)``).
    held_exporter_rss_mib: list[float] = field(default_factory=list)
    command: str = ""
    started_utc: str = ""

    @property
    def produced_rate(self) -> float:
        """Events/s produced over the second half (after the agents' login burst)."""
        end = self.samples[-1].t
        half = [s for s in self.samples if s.t >= end / 2]
        if len(half) < 2 or half[-1].t <= half[0].t:
            return 0.0
        return (half[-1].produced - half[0].produced) / (half[-1].t - half[0].t)

    def series(self, name: str) -> tuple[list[float], list[float]]:
        points = [(s.t, getattr(s, name)) for s in self.samples if getattr(s, name) is not None]
        return [t for t, _v in points], [float(v) for _t, v in points]


# -- statistics -----------------------------------------------------------------------------------
def slope_per_minute(times: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` against ``times`` (seconds), per minute."""
    if len(times) < 2:
        return 0.0
    mt, mv = statistics.fmean(times), statistics.fmean(values)
    var = sum((t - mt) ** 2 for t in times)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / var


def trend(times: list[float], values: list[float]) -> dict[str, float]:
    """Growth of a series after warm-up: the slope per minute over the second half of the run,
    and the last quarter's mean over the third quarter's (1.0 = flat)."""
    if not times:
        return {"slope_per_min": 0.0, "q4_over_q3": 1.0, "first": math.nan, "last": math.nan, "max": math.nan}
    end = times[-1]
    half = [(t, v) for t, v in zip(times, values, strict=True) if t >= end / 2]
    q3 = [v for t, v in half if t < 3 * end / 4]
    q4 = [v for t, v in half if t >= 3 * end / 4]
    ratio = statistics.fmean(q4) / statistics.fmean(q3) if q3 and q4 and statistics.fmean(q3) else 1.0
    return {
        "slope_per_min": slope_per_minute([t for t, _ in half], [v for _, v in half]),
        "q4_over_q3": ratio,
        "first": values[0],
        "last": values[-1],
        "max": max(values),
    }


# -- measuring ------------------------------------------------------------------------------------
def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def prefix_memory(client: Any, prefix: str, per_key: bool, sample_size: int = 2000) -> tuple[float | None, int]:
    """(MiB the prefix's keys take, number of keys). ``MEMORY USAGE`` of every key but the
    records (buckets, totals, seen sets, live sets: fewer, and of very different sizes), and of a
    uniform random sample of ``sample_size`` records (``:rec:``, the many small strings) scaled
    to their number: one SCAN pass and a bounded number of reads on the shared Redis."""
    import random

    rng = random.Random(len(prefix))
    count = records = 0
    sample: list[bytes] = []
    others: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        count += 1
        if b":rec:" not in key:
            others.append(key)
            continue
        records += 1
        if len(sample) < sample_size:
            sample.append(key)
        else:
            slot = rng.randrange(records)
            if slot < sample_size:
                sample[slot] = key
    if not per_key:
        return None, count

    def usage(keys: list[bytes]) -> int:
        total = 0
        for i in range(0, len(keys), 1000):
            pipe = client.pipeline(transaction=False)
            for key in keys[i : i + 1000]:
                pipe.memory_usage(key)
            total += sum(x or 0 for x in pipe.execute())
        return total

    sampled = usage(sample) * records / len(sample) if sample else 0.0
    return (usage(others) + sampled) / 2**20, count


def _metrics(port: int) -> tuple[float | None, float | None, float | None]:
    """(events counted, consumer lag in messages, scrape seconds) from the exporter."""
    try:
        started = time.perf_counter()
        text = common.scrape(port, timeout=60).decode()
        took = time.perf_counter() - started
    except OSError:
        return None, None, None
    counted = sum(
        sum(common.sample_values(text, name).values())
        for name in ("ccmon_events_total", "ccmon_events_duplicate_total", "ccmon_events_rejected_total")
    )
    lag = common.sample_values(text, "ccmon_consumer_lag")
    return counted, (sum(lag.values()) if lag else None), took


# -- the run --------------------------------------------------------------------------------------
def traffic(rate: float, start: float) -> list[Any]:
    """Simulators, one per tenant, that together make about ``rate`` events/s from ``start``."""
    from streams.sim import QueueSpec, SimParams, Simulator

    tenants = max(1, math.ceil(rate / RATE_PER_TENANT))
    calls_per_hour = rate / tenants / QUEUES_PER_TENANT / EVENTS_PER_CALL * 3600
    load = calls_per_hour * 285 / 3600  # Erlangs at ~285 s handle time
    agents = max(2, math.ceil(load * 1.15) + 2)
    queues = tuple(
        QueueSpec(
            f"q{i:02d}",
            calls_per_hour=calls_per_hour,
            agents=agents,
            open_hours=None,
            profile="flat",
            talk_seconds=240,
            patience_seconds=240,
            tickets_per_hour=calls_per_hour / 10,
        )
        for i in range(QUEUES_PER_TENANT)
    )
    return [
        Simulator(
            SimParams(
                start=start,
                hours=None,
                queues=queues,
                seed=i + 1,
                shifts=False,
                tenant=f"soak-{i:02d}",
                kb_sessions_per_hour=calls_per_hour,
                customers=50_000,
            )
        )
        for i in range(tenants)
    ]


def run_soak(
    kafka: str,
    redis_url: str,
    seconds: float,
    rate: float,
    interval: float,
    workdir: Path,
    per_key_memory: bool = True,
    progress: bool = True,
    hold_scrapes: int = 0,
) -> SoakResult:
    """``seconds`` of traffic at ``rate``, sampled every ``interval``. ``hold_scrapes``: then,
    once the worker has counted every event (the state no longer changes), scrape the exporter
    that many times, noting its RSS after each (:attr:`SoakResult.held_exporter_rss_mib`):
    while traffic flows the exporter's memory follows the day's state it reads, which grows by
    design; over the same state, scrape after scrape, it must not."""
    import kafka as kafka_lib
    import redis

    from streams.kafka.produce import KafkaSink

    topic = common.unique("ccmon-soak")
    prefix = common.unique("soak")
    port = common.free_port()
    common.create_topic(kafka, topic, 2)
    common.create_topic(kafka, f"{topic}-dlq", 1)
    client = redis.Redis.from_url(redis_url)
    worker = exporter = None
    producer = kafka_lib.KafkaProducer(bootstrap_servers=kafka, linger_ms=20, acks=1)
    try:
        worker = common.ccmon(common.worker_args(kafka, redis_url, topic, prefix, topic), workdir / "worker.log")
        exporter = common.ccmon(common.exporter_args(redis_url, prefix, port), workdir / "exporter.log")
        common.wait_http(port)
        sink = KafkaSink(producer, topic, batch=100)
        start = time.time()
        sims = traffic(rate, start)
        result = SoakResult(
            seconds=seconds,
            rate_target=rate,
            tenants=len(sims),
            started_utc=datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
        next_sample = start + min(interval, 5.0)
        while True:
            now = time.time()
            for sim in sims:
                sink.write(record for _at, record in sim.advance(now))
            sink.flush()
            for name, process in (("worker", worker), ("exporter", exporter)):
                if process.poll() is not None:
                    raise RuntimeError(f"the {name} exited ({process.returncode}); see {workdir / (name + '.log')}")
            if now >= next_sample or now - start >= seconds:
                counted, lag, took = _metrics(port)
                info = client.info("memory")
                prefix_mib, keys = prefix_memory(client, prefix, per_key_memory)
                sample = Sample(
                    t=round(now - start, 1),
                    produced=sink.events,
                    counted=counted or 0.0,
                    lag_messages=lag,
                    worker_rss_mib=rss_mib(worker.pid),
                    exporter_rss_mib=rss_mib(exporter.pid),
                    redis_used_mib=info["used_memory"] / 2**20,
                    prefix_mib=prefix_mib,
                    prefix_keys=keys,
                    scrape_seconds=took,
                )
                result.samples.append(sample)
                if progress:
                    print(
                        f"{sample.t:7.0f} s  produced {sample.produced:>9,}  backlog {sample.backlog:>8,.0f}  "
                        f"lag {sample.lag_messages}  worker {sample.worker_rss_mib:6.1f} MiB  "
                        f"exporter {sample.exporter_rss_mib:6.1f} MiB  prefix {prefix_mib or 0:7.1f} MiB "
                        f"/ {keys:,} keys  scrape {took or 0:.2f} s",
                        flush=True,
                    )
                if now - start >= seconds:
                    break
                next_sample += interval
            time.sleep(max(0.0, 0.5 - (time.time() - now)))
        if hold_scrapes:
            deadline = time.time() + 60
            while (_metrics(port)[0] or 0.0) < sink.events and time.time() < deadline:
                time.sleep(0.5)
            for _ in range(hold_scrapes):
                _metrics(port)
                result.held_exporter_rss_mib.append(rss_mib(exporter.pid))
        return result
    finally:
        producer.close(timeout=10)
        common.stop([worker, exporter])
        with contextlib.suppress(Exception):
            common.clear_prefix(redis_url, prefix)
        client.close()
        common.delete_topics(kafka, [topic, f"{topic}-dlq"])


# -- the report -----------------------------------------------------------------------------------
def summary(result: SoakResult) -> dict[str, dict[str, float]]:
    return {
        name: trend(*result.series(name))
        for name in (
            "worker_rss_mib",
            "exporter_rss_mib",
            "prefix_mib",
            "redis_used_mib",
            "backlog",
            "lag_messages",
            "scrape_seconds",
        )
    }


def markdown(result: SoakResult, rows: int = 16) -> str:
    m = common.machine()
    s = summary(result)
    minutes = result.seconds / 60
    lines = [
        "",
        f"### Soak — {result.started_utc}",
        "",
        f"Machine: {m['host']}, {m['cores']} cores ({m['cpu']}), {m['ram']}, Python {m['python']}; Kafka and Redis "
        f"on loopback, sharing the cores with the worker, the exporter and the producer (the numbers are what this "
        f"machine gave, not a capacity). Command: `{result.command}`.",
        "",
        f"{minutes:.0f} minutes at {result.produced_rate:,.0f} events/s produced, steady (target "
        f"{result.rate_target:,.0f}; "
        f"{result.tenants} simulated tenants x {QUEUES_PER_TENANT} queues, real time), one `ccmon worker`, "
        "one `ccmon exporter` scraped at every sample. The first sample holds the burst of every agent logging in.",
        "",
        "| t (min) | produced | backlog (events) | lag (msgs) | worker RSS MiB | exporter RSS MiB | run's "
        "Redis keys | their MiB | Redis used MiB | scrape s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    step = max(1, math.ceil(len(result.samples) / rows))
    picked = result.samples[::step]
    if picked[-1] is not result.samples[-1]:
        picked.append(result.samples[-1])
    for x in picked:
        lines.append(
            f"| {x.t / 60:.1f} | {x.produced:,} | {x.backlog:,.0f} | "
            f"{'' if x.lag_messages is None else f'{x.lag_messages:,.0f}'} "
            f"| {x.worker_rss_mib:.1f} | {x.exporter_rss_mib:.1f} | {x.prefix_keys:,} | "
            f"{'' if x.prefix_mib is None else f'{x.prefix_mib:.1f}'} | {x.redis_used_mib:.1f} | "
            f"{'' if x.scrape_seconds is None else f'{x.scrape_seconds:.2f}'} |"
        )
    w, e, p, b = s["worker_rss_mib"], s["exporter_rss_mib"], s["prefix_mib"], s["backlog"]
    lines += [
        "",
        f"Summary (second half of the run: least-squares slope per minute; last quarter's mean / third quarter's): "
        f"worker RSS {w['first']:.0f} -> {w['last']:.0f} MiB, slope {w['slope_per_min']:+.2f} MiB/min, "
        f"ratio {w['q4_over_q3']:.3f}; exporter RSS {e['first']:.0f} -> {e['last']:.0f} MiB, slope "
        f"{e['slope_per_min']:+.2f} MiB/min; the run's Redis keys {p['first']:.1f} -> {p['last']:.1f} MiB "
        f"({p['slope_per_min']:+.2f} MiB/min: the day's state, expired after the ~25 h horizon, expected to grow "
        f"within a day); backlog max {b['max']:,.0f} events, slope {b['slope_per_min']:+.0f} events/min, last "
        f"{b['last']:,.0f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="target events/s (default 1000)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--no-key-memory", action="store_true", help="skip MEMORY USAGE over the run's keys")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/BENCHMARKS.md")
    parser.add_argument("--json", help="write the samples and summary here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))  # clean up on kill too
    kafka, redis_url = common.services_env()
    workdir = common.OUT / common.unique("soak")
    result = run_soak(
        kafka, redis_url, args.minutes * 60, args.rate, args.interval, workdir, per_key_memory=not args.no_key_memory
    )
    result.command = "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(result)
    print(text)
    if args.json:
        common.write_json(
            args.json,
            {
                "samples": [vars(x) for x in result.samples],
                "summary": summary(result),
                "rate_produced": result.produced_rate,
                "tenants": result.tenants,
            },
        )
    if not args.no_write:
        with BENCHMARKS.open("a", encoding="utf-8") as out:  # appended: other sections untouched
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
