"""The real PBXware queue_log (tests/data/pbxware_queue_log_2018) through the production
path: ``ccmon source asterisk FILE.csv --kafka`` -> the real Kafka -> ``ccmon worker`` ->
Redis -> ``ccmon exporter`` -> /metrics. The worker's clock is fixed at 23:59 local time on
4 Dec 2018, the log's last day: that day's ``today`` figures of queue IT on /metrics equal
the figures derived here from the raw rows; everything older is rejected ``too_late`` (the
worker keeps a day), and the rows the log repeats verbatim count once. ~20 s (most of it the
consumer group joining)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from harness.kafka_topics import create_topics, delete_topics
from harness.pipeline import ACCOUNTED, Pipeline
from harness.pipeline import settled as pipeline_settled
from harness.processes import free_port
from harness.samples import Samples
from realdata import real_data

pytestmark = [pytest.mark.integration]

DATA = real_data("pbxware_queue_log_2018/queue_log.csv")
# the log's local time (tests/unit/streams/sources/test_source_asterisk.py checks it)
ZONE = timezone(timedelta(hours=-5))
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


@pytest.fixture
def pipeline(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path, topic_prefix="asterisk-e2e", key_prefix="asterisk-e2e")
    create_topics(kafka_bootstrap, p.topic, p.dlq, partitions=2, keep_forever=False)
    config = tmp_path / "ccmon.toml"
    config.write_text(CONFIG)
    at = f"{AT:.0f}"
    p.start("worker", *p.worker_args(at=at, web_port=free_port(), batch_within="0.1", config=config))
    p.start("exporter", *p.exporter_args(at=at, host="127.0.0.1", config=config))
    try:
        yield p
    finally:
        p.close()
        delete_topics(kafka_bootstrap, f"{p.group}-__assignor-__leader")  # (Faust's own)


def test_the_real_log_through_kafka_worker_and_exporter(pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"  # the same import to a file: what was sent, for the counts
    assert (
        subprocess.run(
            [sys.executable, "-m", "streams.cli", "source", "asterisk", str(DATA), "--out", str(out)],
            capture_output=True,
            timeout=60,
        ).returncode
        == 0
    )
    events = [json.loads(line) for line in out.read_text().splitlines()]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "source",
            "asterisk",
            str(DATA),
            "--kafka",
            pipeline.kafka,
            "--topic",
            pipeline.topic,
            "--progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"1,000 rows -> {len(events):,} events" in proc.stderr and "rows/s" in proc.stderr  # progress shown

    copies = Counter(e["event_id"] for e in events if e["ts"] >= MIDNIGHT)
    want_counts = {
        "accepted": len(copies),
        "duplicate": sum(copies.values()) - len(copies),
        "too_late": sum(1 for e in events if e["ts"] < MIDNIGHT),
    }
    got = settled(pipeline, len(events))
    counts = {
        "accepted": sum(v for (name, _), v in got.items() if name == "ccmon_events_total"),
        "duplicate": sum(v for (name, _), v in got.items() if name == "ccmon_events_duplicate_total"),
        "too_late": sum(
            v
            for (name, labels), v in got.items()
            if name == "ccmon_events_rejected_total" and dict(labels).get("reason") == "too_late"
        ),
    }
    assert counts == want_counts and want_counts["duplicate"] > 0 and want_counts["too_late"] > 0
    today = {
        name: v
        for (name, labels), v in got.items()
        if dict(labels).get("queue") == "IT" and dict(labels).get("window") == "today"
    }
    for name, value in raw_figures().items():
        assert today.get(name) == pytest.approx(value, rel=1e-12), name
    assert today["ccmon_calls_offered"] == 34 and today["ccmon_calls_answered"] == 27  # docs/sources/asterisk.md


def settled(p: Pipeline, sent: int) -> Samples:
    """/metrics once every event sent is counted (accepted, duplicate or rejected) and two
    scrapes agree."""
    return pipeline_settled(p, sent, (*ACCOUNTED, "ccmon_events_duplicate_total"), SETTLE_TIMEOUT)
