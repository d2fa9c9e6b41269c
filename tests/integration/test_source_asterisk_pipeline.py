"""The real PBXware queue_log (tests/data/pbxware_queue_log_2018) through the production
path: ``ccmon source asterisk FILE.csv --kafka`` -> the real Kafka -> ``ccmon worker`` ->
Redis -> ``ccmon exporter`` -> /metrics. The worker's clock is fixed at 23:59 local time on
4 Dec 2018, the log's last day: that day's ``today`` figures of queue IT on /metrics equal
the figures derived here from the raw rows; everything older is rejected ``too_late`` (the
worker keeps a day), and the rows the log repeats verbatim count once. ~20 s (most of it the
consumer group joining)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from realdata import real_data
from test_pipeline_e2e import ACCOUNTED
from test_pipeline_e2e import settled as pipeline_settled

pytestmark = [pytest.mark.integration]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

DATA = real_data("pbxware_queue_log_2018/queue_log.csv")
ZONE = timezone(timedelta(hours=-5))  # the log's local time (tests/unit/test_source_asterisk.py checks it)
DAY = "2018-12-04"
MIDNIGHT = datetime(2018, 12, 4, tzinfo=ZONE).timestamp()
AT = MIDNIGHT + 86400 - 60  # 23:59 local: a whole minute, after the day's last row
CONFIG = """
[tenants.default]
timezone = "Etc/GMT+5"
[tenants.default.queues.IT]
sl_threshold_seconds = 20
"""
SETTLE_TIMEOUT = 90.0


def raw_figures() -> dict[str, float]:
    """4 Dec, queue IT, straight from the rows (the PBX's hold times are the waits)."""
    n: Counter[str] = Counter()
    waits = 0.0
    with DATA.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["queue_name"] != "IT" or not MIDNIGHT <= int(row["date_time"]) < AT:
                continue
            hold, event = float(row["htime"]), row["event"]
            n[event] += 1
            if event == "CONNECT":
                waits += hold
                n["within"] += hold <= 20
            n["short"] += event == "ABANDON" and hold < 5
    denominator = n["CONNECT"] + n["ABANDON"] - n["short"]
    return {
        "ccmon_calls_offered": n["ENTERQUEUE"],
        "ccmon_calls_answered": n["CONNECT"],
        "ccmon_calls_abandoned": n["ABANDON"],
        "ccmon_calls_timed_out": n["EXITWITHTIMEOUT"] + n["EXITEMPTY"] + n["EXITWITHKEY"],
        "ccmon_agent_missed_rings": n["RINGNOANSWER"],
        "ccmon_calls_handled": n["COMPLETEAGENT"] + n["COMPLETECALLER"] + n["BLINDTRANSFER"] + n["ATTENDEDTRANSFER"],
        "ccmon_average_speed_of_answer_seconds": waits / n["CONNECT"],
        "ccmon_service_level_ratio": n["within"] / denominator,
        "ccmon_abandon_rate_ratio": (n["ABANDON"] - n["short"]) / denominator,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Pipeline:
    """A worker and an exporter on topics, a consumer group and a Redis prefix of their own
    (as tests/integration/test_pipeline_e2e.py runs them)."""

    def __init__(self, kafka: str, redis_url: str, tmp: Path) -> None:
        run = uuid.uuid4().hex[:10]
        self.kafka, self.redis_url, self.tmp = kafka, redis_url, tmp
        self.topic, self.dlq, self.group = f"asterisk-e2e-{run}", f"asterisk-e2e-{run}-dlq", f"asterisk-e2e-{run}"
        self.prefix = f"asterisk-e2e-{run}"
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> None:
        with (self.tmp / f"{name}.log").open("wb") as out:
            self.processes.append(subprocess.Popen([sys.executable, "-m", "streams.cli", *args], stdout=out,
                                                   stderr=subprocess.STDOUT,
                                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}))  # fmt: skip

    def log_tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in self.tmp.glob("*.log"))

    def metrics(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value  # without the exporter's own timing
                for family in text_string_to_metric_families(text) for s in family.samples
                if not s.name.startswith("ccmon_exporter_")}  # fmt: skip

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def pipeline(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    import kafka

    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    admin = kafka.KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics({p.topic: {"num_partitions": 2, "replication_factor": 1},
                         p.dlq: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)  # fmt: skip
    config = tmp_path / "ccmon.toml"
    config.write_text(CONFIG)
    common = ["--redis", redis_url, "--redis-prefix", p.prefix, "--clock", f"fixed:{AT:.0f}", "--config", str(config)]
    p.start("worker", "worker", "--kafka", kafka_bootstrap, "--topic", p.topic, "--dlq-topic", p.dlq,
            "--group", p.group, "--web-port", str(free_port()), "--batch-within", "0.1", *common)  # fmt: skip
    p.start("exporter", "exporter", "--host", "127.0.0.1", "--port", str(p.port), *common)
    try:
        yield p
    finally:
        p.stop()
        with contextlib.suppress(Exception):  # best effort: the topics are unique to this run
            admin.delete_topics([p.topic, p.dlq, f"{p.group}-__assignor-__leader"])  # (Faust's own)
        admin.close()


def test_the_real_log_through_kafka_worker_and_exporter(pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"  # the same import to a file: what was sent, for the counts
    assert subprocess.run([sys.executable, "-m", "streams.cli", "source", "asterisk", str(DATA), "--out", str(out)],
                          capture_output=True, timeout=60).returncode == 0  # fmt: skip
    events = [json.loads(line) for line in out.read_text().splitlines()]
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "source", "asterisk", str(DATA),
                           "--kafka", pipeline.kafka, "--topic", pipeline.topic, "--progress"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"1,000 rows -> {len(events):,} events" in proc.stderr and "rows/s" in proc.stderr  # progress shown

    copies = Counter(e["event_id"] for e in events if e["ts"] >= MIDNIGHT)
    want_counts = {"accepted": len(copies), "duplicate": sum(copies.values()) - len(copies),
                   "too_late": sum(1 for e in events if e["ts"] < MIDNIGHT)}  # fmt: skip
    got = settled(pipeline, len(events))
    counts = {
        "accepted": sum(v for (name, _), v in got.items() if name == "ccmon_events_total"),
        "duplicate": sum(v for (name, _), v in got.items() if name == "ccmon_events_duplicate_total"),
        "too_late": sum(v for (name, labels), v in got.items()
                        if name == "ccmon_events_rejected_total" and dict(labels).get("reason") == "too_late"),
    }  # fmt: skip
    assert counts == want_counts and want_counts["duplicate"] > 0 and want_counts["too_late"] > 0
    today = {name: v for (name, labels), v in got.items()
             if dict(labels).get("queue") == "IT" and dict(labels).get("window") == "today"}  # fmt: skip
    for name, value in raw_figures().items():
        assert today.get(name) == pytest.approx(value, rel=1e-12), name
    assert today["ccmon_calls_offered"] == 34 and today["ccmon_calls_answered"] == 27  # docs/sources/asterisk.md


def settled(p: Pipeline, sent: int) -> Samples:
    """/metrics once every event sent is counted (accepted, duplicate or rejected) and two
    scrapes agree."""
    return pipeline_settled(p, sent, (*ACCOUNTED, "ccmon_events_duplicate_total"), SETTLE_TIMEOUT)
