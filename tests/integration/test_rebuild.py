"""``ccmon rebuild`` on the real services: Redis loses a deployment's state mid-day while a
worker runs and events keep coming; the rebuild recomputes it from the events topic, and the
KPIs equal ``ccmon replay`` of the same events exactly. Also: a second rebuild changes nothing
(idempotent), ``--clear`` is refused while the group's workers run, and with them stopped it
rebuilds from scratch to the same KPIs.

"Losing Redis" deletes only this test's own key prefix, never anything else of the shared
Redis. Takes about 35 s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import create_topics, produce_timed, simulate
from harness.pipeline import Pipeline
from harness.processes import stop
from harness.samples import Samples, diff, events_total, kpi_samples, replay_samples, wait_for_kpis

from kpi_core.events import parse_line, parse_ts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Events of the day before (Kafka timestamps of that day too): older than the horizon, so
#: the worker rejects them ``too_late`` and the rebuild does not even read them. (``ccmon
#: replay`` carries them, as it carries every call, callback, agent and ticket event however
#: old: docs/KPI_ENGINE.md, "Long backlogs in replay".)
YESTERDAY = [
    {"event_id": "y1", "type": "call.offered", "ts": "2026-11-19T12:00:00Z", "queue": "support", "call_id": "y1"},
    {
        "event_id": "y2",
        "type": "call.answered",
        "ts": "2026-11-19T12:00:20Z",
        "queue": "support",
        "call_id": "y1",
        "agent_id": "a1",
    },
    {
        "event_id": "y3",
        "type": "call.ended",
        "ts": "2026-11-19T12:03:00Z",
        "queue": "support",
        "call_id": "y1",
        "talk_seconds": 160,
    },
]
TOO_LATE = ("ccmon_events_rejected_total", (("reason", "too_late"),))


@pytest.fixture
def run(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    create_topics(kafka_bootstrap, p.topic, p.dlq)
    try:
        yield p
    finally:
        p.close()


def rebuild_args(p: Pipeline, at: float, *extra: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *p.rebuild_args("--json", *extra, at=at)]


def rebuild(p: Pipeline, at: float, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(rebuild_args(p, at, *extra), capture_output=True, text=True, timeout=180)


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_redis_lost_mid_day_is_rebuilt_from_kafka(run: Pipeline, tmp_path: Path) -> None:
    p = run
    day = simulate(tmp_path / "day.jsonl")
    old = [json.dumps(event).encode() for event in YESTERDAY]
    path = tmp_path / "all.jsonl"
    path.write_bytes(b"\n".join([*old, *day]) + b"\n")
    at = math.ceil(max(parse_line(line).ts for line in day) / 60) * 60 + 60
    # What the rebuild reads is the topic from the horizon on: today's events. Its KPIs are the
    # replay of those; a replay of the whole file carries yesterday's call as well (it changes
    # no KPI, having no open part, but counts in ccmon_events_total).
    today = tmp_path / "today.jsonl"
    today.write_bytes(b"\n".join(day) + b"\n")
    want = replay_samples(today, at)
    whole = replay_samples(path, at)
    assert TOO_LATE not in whole and events_total(whole) == events_total(want) + len(YESTERDAY)
    first, rest = day[: 2 * len(day) // 3], day[2 * len(day) // 3 :]

    def kpis() -> Samples:
        return kpi_samples(p.redis_url, p.prefix, at)

    # A worker folds yesterday's and the first two thirds of today's events into Redis.
    produce_timed(p.kafka, p.topic, old, per_message=1)
    produced = produce_timed(p.kafka, p.topic, first)
    worker = p.start("worker", *p.worker_args(at=at, batch_size=20, batch_within="0.1", web_port=0))
    wait_for_kpis(kpis, {("ccmon_events_total", ()): len(first)}, 90, [worker], p.log_tail)
    assert kpis()[TOO_LATE] == len(YESTERDAY)

    # Redis loses this deployment's state; the worker keeps running and events keep coming.
    p.drop_redis_keys()
    assert events_total(kpis()) == 0
    produced += produce_timed(p.kafka, p.topic, rest)

    # Rebuild at once, while the worker applies the rest onto the emptied state.
    result = report_of(rebuild(p, at))
    print(
        f"rebuild with the worker running: {result['messages']} messages, {result['events']} events applied, "
        f"{result['duplicates']} already applied by the worker, {result['seconds']} s"
    )
    assert result["horizon"] == parse_ts("2026-11-20T00:00:00Z")  # midnight UTC: `today` is the longest window
    assert result["workers_running"] == 1
    assert result["messages"] == produced  # today's messages; yesterday's lie before the horizon
    assert result["events"] + result["duplicates"] == len(day)  # each applied once, by it or by the worker
    assert result["events"] >= len(first)
    assert result["rejected"] == {}
    assert result["cleared_keys"] == 0
    got = wait_for_kpis(kpis, want, 90, [worker], p.log_tail)
    # Exactly replay's KPIs, but for the rejections of yesterday's events, which are before
    # the horizon: the rebuild does not read them again.
    assert TOO_LATE not in got
    problems = diff(got, {k: v for k, v in want.items() if k != TOO_LATE})
    assert not problems, problems

    # Idempotent: a second rebuild finds every event in Redis already.
    again = report_of(rebuild(p, at))
    assert (again["events"], again["duplicates"]) == (0, len(day))
    assert kpis() == got

    # --clear while the group's worker runs is refused, and touches nothing.
    refused = rebuild(p, at, "--clear")
    assert refused.returncode == 2
    assert "worker(s) of consumer group" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert kpis() == got

    # With the worker stopped, --clear rebuilds from nothing to the same KPIs.
    stop(worker)
    deadline = time.monotonic() + 30
    while (cleared := rebuild(p, at, "--clear")).returncode != 0:  # the group may take a moment to empty
        assert time.monotonic() < deadline, cleared.stderr
        time.sleep(1)
    fresh = report_of(cleared)
    assert fresh["cleared_keys"] > 0 and fresh["workers_running"] == 0
    assert (fresh["events"], fresh["duplicates"]) == (len(day), 0)
    problems = diff(kpis(), got)  # sums made in another order: equal to the last bits, not bit for bit
    assert not problems, problems

    # Two rebuilds at once over empty state (a message per transaction, so that they overlap)
    # apply every event exactly once between them.
    p.drop_redis_keys()
    # Both start at the same instant, once their imports are done (a process takes ~1 s to
    # start, longer than the rebuild itself).
    start = time.time() + 4
    args = rebuild_args(p, at, "--batch-size", "1")[3:]  # after "python -m streams.cli"
    code = (
        f"import sys, time; import kafka, redis, streams.cli.rebuild; from streams.cli import main; "
        f"time.sleep(max(0.0, {start!r} - time.time())); sys.exit(main({args!r}))"
    )
    both = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    reports = []
    for process in both:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    print("two rebuilds at once:", [(r["events"], r["duplicates"]) for r in reports])
    assert sum(r["events"] for r in reports) == len(day)
    assert sum(r["duplicates"] for r in reports) == len(day)
    problems = diff(kpis(), got)
    assert not problems, problems


def test_rebuild_errors_are_clear(run: Pipeline) -> None:
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "rebuild",
            "--kafka",
            run.kafka,
            "--topic",
            f"{run.topic}-missing",
            "--redis",
            run.redis_url,
            "--redis-prefix",
            run.prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert f"topic '{run.topic}-missing' does not exist" in missing.stderr
    force = rebuild(run, time.time(), "--force")
    assert force.returncode == 2 and "--force only makes sense with --clear" in force.stderr
    no_redis = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "rebuild",
            "--kafka",
            run.kafka,
            "--topic",
            run.topic,
            "--redis",
            "redis://:secret@127.0.0.1:1/0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_redis.returncode == 2
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in no_redis.stderr
    assert "secret" not in no_redis.stderr and "Traceback" not in no_redis.stderr


def test_horizon_is_the_oldest_instant_any_tenant_still_accepts() -> None:
    """The rebuild starts where the engine's lateness cutoff is for the tenant whose day began
    first: here Tokyo's midnight (UTC+9), before UTC's (tenants not configured) and New York's."""
    from dataclasses import replace

    from kpi_core.config import Window, config_from_dict
    from kpi_core.engine import Engine
    from kpi_core.state import MemoryState
    from streams.cli.rebuild import horizon_start

    config = config_from_dict(
        {"tenants": {"ny": {"timezone": "America/New_York"}, "tokyo": {"timezone": "Asia/Tokyo"}}}
    )
    now = parse_ts("2026-11-20T10:00:00Z")
    assert horizon_start(config, now) == parse_ts("2026-11-19T15:00:00Z")  # 2026-11-20 00:00 in Tokyo
    engine = Engine(config, MemoryState(config.bucket_seconds, config.coarse_bucket_seconds))
    assert horizon_start(config, now) == min(engine.lateness_cutoff(t, now) for t in ("ny", "tokyo", "other"))
    only_sliding = replace(config, windows=(Window("5m", 300), Window("1h", 3600)))  # no `today`: no midnight
    assert horizon_start(only_sliding, now) == now - 3600
