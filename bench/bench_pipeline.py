"""The pipeline on the real services: ceiling, one worker end to end, and scrape time.

In the same run, on the same events (bench/gen_events.py, JSON-array envelopes of 100
events keyed by entity, a fresh 4-partition topic):

1. ceiling: raw aiokafka consumption of the topic (`getmany` + `json.loads` per message);
2. one `ccmon worker` end to end: events already in the topic, time from the first event
   counted on the exporter's `/metrics` to the last (steady rate), and from start-up;
3. `/metrics` scrape time and size with 10, 100 and 1,000 queues (state written through
   the engine into Redis, all windows), median of 5 scrapes.

Needs `deploy/local/services.sh up`. Appends a dated section to docs/BENCHMARKS.md.

    python bench/bench_pipeline.py --events 200000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from gen_events import generate  # noqa: E402


def entity_key(event: dict[str, Any]) -> bytes:
    for field in ("call_id", "ticket_id", "callback_id", "agent_id", "session_id"):
        if event.get(field):
            return str(event[field]).encode()
    return str(event["event_id"]).encode()


def produce(kafka: str, topic: str, events: list[dict[str, Any]], per_message: int = 100) -> int:
    import kafka as kafka_lib

    admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
    admin.create_topics({topic: {"num_partitions": 4, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    producer = kafka_lib.KafkaProducer(bootstrap_servers=kafka, acks=1, linger_ms=20, batch_size=1 << 20)
    # Envelopes per partition: group by key hash so one entity's events stay in one message
    # stream in order (as ccmon's simulator does).
    per_partition: dict[int, list[tuple[bytes, dict[str, Any]]]] = {}
    for event in events:
        key = entity_key(event)
        per_partition.setdefault(hash(key) % 4, []).append((key, event))
    messages = 0
    for part, items in per_partition.items():
        for i in range(0, len(items), per_message):
            chunk = items[i:i + per_message]
            producer.send(topic, key=chunk[0][0], value=json.dumps([e for _k, e in chunk]).encode(), partition=part)
            messages += 1
    producer.flush(120)
    producer.close()
    return messages


async def ceiling(kafka: str, topic: str, n_events: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest",
                                group_id=f"ceiling-{uuid.uuid4().hex[:6]}", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    seen = 0
    started: float | None = None
    try:
        while seen < n_events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                if started is None:
                    started = time.perf_counter()
                for record in records:
                    seen += len(json.loads(record.value))
    finally:
        await consumer.stop()
    return n_events / (time.perf_counter() - (started or time.perf_counter()))


def events_total(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ccmon_events_total{"))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_to_end(kafka: str, redis_url: str, topic: str, n_events: int, at: float) -> tuple[float, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    common = ["--redis", redis_url, "--redis-prefix", prefix, "--clock", f"fixed:{at}"]
    exporter = subprocess.Popen([sys.executable, "-m", "streams.cli", "exporter", "--host", "127.0.0.1",
                                 "--port", str(port), *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    started = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--kafka", kafka, "--topic", topic,
                               "--dlq-topic", f"{topic}-dlq", "--group", prefix, "--web-port", "0", *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    first: float | None = None
    try:
        while True:
            try:
                done = events_total(port)
            except OSError:
                done = 0.0
            now = time.perf_counter()
            if done > 0 and first is None:
                first, first_count = now, done
            if done >= n_events * 0.999:
                break
            if now - started > 1800:
                raise RuntimeError(f"worker stuck at {done} of {n_events}")
            time.sleep(0.5)
    finally:
        for process in (worker, exporter):
            process.terminate()
            process.wait(30)
    assert first is not None
    steady = (n_events - first_count) / max(now - first, 1e-9)
    return steady, n_events / (now - started)


def scrape(redis_url: str, queues: int, at: float) -> tuple[float, int]:
    import redis

    from kpi_core.config import Config
    from kpi_core.engine import Engine
    from kpi_core.events import parse_event
    from streams.redis_state import RedisState

    prefix = f"scrape-{queues}-{uuid.uuid4().hex[:6]}"
    config = Config()
    state = RedisState(redis.Redis.from_url(redis_url), config, prefix=prefix, clock=lambda: at)
    engine = Engine(config, state)
    events = [parse_event(e) for e in generate(queues * 60, queues, seed=3, start=int(at) - 6 * 3600)]
    for i in range(0, len(events), 2000):
        with state.batch():
            for event in events[i:i + 2000]:
                engine.handle(event, at)
    port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "streams.cli", "exporter", "--host", "127.0.0.1", "--port",
                                 str(port), "--redis", redis_url, "--redis-prefix", prefix, "--clock", f"fixed:{at}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        times, size = [], 0
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        for _ in range(5):
            t = time.perf_counter()
            size = len(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120).read())
            times.append(time.perf_counter() - t)
        return statistics.median(times), size
    finally:
        exporter.terminate()
        exporter.wait(30)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 5000):
            client.delete(*keys[i:i + 5000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--queues", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    env = dict(line.split("=", 1) for line in subprocess.run(
        ["bash", str(REPO / "deploy/local/services.sh"), "env"], capture_output=True, text=True, check=True
    ).stdout.split())  # fmt: skip
    kafka, redis_url = env["KAFKA_BOOTSTRAP"], env["REDIS_URL"]

    events = list(generate(args.events, 20, seed=5))
    at = max(e["ts"] for e in events) + 60
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    messages = produce(kafka, topic, events)
    print(f"produced {len(events):,} events in {messages:,} messages", file=sys.stderr)
    ceiling_rate = asyncio.run(ceiling(kafka, topic, len(events)))
    print(f"ceiling {ceiling_rate:,.0f} events/s", file=sys.stderr)
    steady, overall = end_to_end(kafka, redis_url, topic, len(events), at)
    print(f"worker steady {steady:,.0f} events/s, overall {overall:,.0f}", file=sys.stderr)
    scrapes = []
    for q in args.queues:
        seconds, size = scrape(redis_url, q, at)
        scrapes.append((q, seconds, size))
        print(f"scrape {q} queues: {seconds * 1000:,.0f} ms, {size:,} bytes", file=sys.stderr)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        f"### Pipeline on the real services — {stamp}",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, Apache Kafka 3.9.1 "
        f"(KRaft, local), Redis 7.0 (local). Command: `python bench/bench_pipeline.py --events {args.events}`. "
        "One run each (single measurements: the machine is noisy; compare the ratio, taken in the same run).",
        "",
        "| what | value |",
        "| --- | --- |",
        f"| events (bench/gen_events.py, 20 queues) | {len(events):,} in {messages:,} envelopes of <= 100 |",
        f"| ceiling: raw aiokafka `getmany` + `json.loads` | {ceiling_rate:,.0f} events/s |",
        f"| one `ccmon worker`, steady (first to last event counted on /metrics) | {steady:,.0f} events/s |",
        f"| one `ccmon worker`, including start-up and group join | {overall:,.0f} events/s |",
        f"| worker / ceiling | {steady / ceiling_rate:.3f} |",
    ]
    for q, seconds, size in scrapes:
        rows.append(f"| `/metrics` scrape, {q:,} queues (all windows) | {seconds * 1000:,.0f} ms, {size / 1024:,.0f} KiB |")
    section = "\n".join(rows) + "\n"
    print(section)
    if not args.no_write:
        path = REPO / "docs" / "BENCHMARKS.md"
        path.write_text(path.read_text() + "\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
