"""RedisState on a real Redis Cluster (three masters, started here with Debian's
redis-server and ``redis-cli --cluster create``): every key of a tenant shares its hash tag, a
batch commits one transaction per slot group, and the KPIs, the pipeline counters and the
exporter's prefetched reader equal MemoryState's exactly, with tenants spread over the nodes.
Then the worker and the exporter run against the cluster (``--redis-cluster yes``)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from harness.pipeline import cli_args
from harness.processes import free_port

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.redis.state import RedisState
from streams.worker import BatchProcessor, Message

pytestmark = pytest.mark.integration

AT = 1795003200.0
TENANTS = ["default", "acme", "globex", "initech", "umbrella", "hooli"]
CONFIG = config_from_dict(
    {"tenants": {"acme": {"timezone": "Asia/Kathmandu"}, "globex": {"timezone": "America/New_York"}}}
)


def day_of_calls(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    raw: list[dict[str, Any]] = []
    for i in range(n):
        tenant, queue = rng.choice(TENANTS), rng.choice(["support", "sales", "billing"])
        offered = AT - rng.uniform(60, 4 * 3600)  # after every tenant's local midnight
        call = {"tenant": tenant, "queue": queue, "call_id": f"c{i}", "customer_id": f"cust{rng.randrange(40)}"}
        raw.append({**call, "event_id": f"{i}o", "type": "call.offered", "ts": round(offered)})
        wait = rng.randrange(0, 120)
        if rng.random() < 0.8:
            raw.append(
                {**call, "event_id": f"{i}a", "type": "call.answered", "ts": round(offered) + wait, "agent_id": "a1"}
            )
            raw.append(
                {
                    **call,
                    "event_id": f"{i}e",
                    "type": "call.ended",
                    "ts": round(offered) + wait + 90,
                    "talk_seconds": 80,
                    "agent_id": "a1",
                }
            )
        else:
            raw.append({**call, "event_id": f"{i}b", "type": "call.abandoned", "ts": round(offered) + wait})
    rng.shuffle(raw)
    return [e for e in raw if e["ts"] < AT]


def test_batches_on_a_cluster_equal_memory_state(cluster: list[int]) -> None:
    raw = day_of_calls(1, 400)
    bad = [b"{not json", json.dumps({**raw[0], "event_id": "old", "ts": 1}).encode()]
    messages = [
        Message("events", 0, i // 50, None, json.dumps(raw[i : i + 50]).encode(), AT) for i in range(0, len(raw), 50)
    ]
    messages += [Message("events", 1, i, None, value, AT) for i, value in enumerate(bad)]
    state = RedisState.from_url(f"redis://127.0.0.1:{cluster[0]}", CONFIG, cluster=True, prefix="t1", clock=lambda: AT)
    processor = BatchProcessor(CONFIG, state, lambda: AT)
    for i in range(0, len(messages), 3):
        processor.process(messages[i : i + 3])
    processor.process(messages[:5])  # redelivered: counted once

    memory = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    engine = Engine(CONFIG, memory)
    for event in raw:
        engine.handle(parse_event(event), AT)
    engine.reject("invalid_json")
    engine.reject("too_late")
    for event in [e for m in messages[:5] for e in json.loads(m.value)]:
        engine.handle(parse_event(event), AT)  # the redelivery, as duplicates
    want = flatten(snapshot(CONFIG, memory, AT))
    assert flatten(snapshot(CONFIG, state, AT)) == want
    assert flatten(snapshot(CONFIG, state.snapshot_reader(CONFIG, AT), AT)) == want

    # The tenants' keys really are spread over the nodes, each tenant's on one node.
    import redis

    owners: dict[str, set[int]] = {}
    for port in cluster:
        node = redis.Redis(port=port)
        for key in node.scan_iter(match="t1:*", count=1000):
            text = key.decode()
            tag = text[text.index("{") : text.index("}") + 1]
            owners.setdefault(tag, set()).add(port)
    assert all(len(ports) == 1 for ports in owners.values()), owners
    assert len({port for ports in owners.values() for port in ports}) >= 2


def test_worker_and_exporter_on_a_cluster(cluster: list[int], kafka_bootstrap: str, tmp_path: Path) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"cluster-{random.randrange(10**9)}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    raw = day_of_calls(2, 200)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(0, len(raw), 40):
        producer.send(topic, json.dumps(raw[i : i + 40]).encode())
    producer.flush()
    producer.close()

    url = f"redis://127.0.0.1:{cluster[1]}"
    port = free_port()
    common = {"redis": url, "redis_cluster": "yes", "redis_prefix": "t2"}
    logs = [open(tmp_path / name, "w") for name in ("worker.log", "exporter.log")]  # noqa: SIM115
    worker_args = cli_args(
        "worker", kafka=kafka_bootstrap, topic=topic, dlq_topic=f"{topic}-dlq", group=topic, web_port=0, at=AT, **common
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *worker_args], stdout=logs[0], stderr=subprocess.STDOUT
    )
    exporter = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *cli_args("exporter", host="127.0.0.1", port=port, at=AT, **common)],
        stdout=logs[1],
        stderr=subprocess.STDOUT,
    )
    try:
        memory = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
        engine = Engine(config_from_dict({}), memory)
        for event in raw:
            engine.handle(parse_event(event), AT)
        want = flatten(snapshot(config_from_dict({}), memory, AT))
        offered = {k: v for k, v in want.items() if k[0] == "ccmon_calls_offered_total"}
        deadline = time.monotonic() + 120
        got: dict[Any, float] = {}
        while time.monotonic() < deadline:
            assert worker.poll() is None and exporter.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/samples", timeout=10).read()
            except OSError:
                time.sleep(0.5)
                continue
            got = {(s["name"], tuple(s["labels"].items())): s["value"] for s in json.loads(text)["samples"]}
            if all(got.get(k) == v for k, v in offered.items()):
                break
            time.sleep(0.5)
        samples = {
            k: v
            for k, v in want.items()
            if not k[0].startswith("ccmon_events_") and k[0] != "ccmon_last_event_timestamp_seconds"
        }
        assert {k: got.get(k) for k in samples} == samples
    finally:
        for proc in (worker, exporter):
            proc.terminate()
            proc.wait(timeout=30)
        for log in logs:
            log.close()
