"""The stuck-partition watchdog (streams/watchdog.py) on the real broker.

A worker (subprocess, shared Kafka, its own topic of four partitions, group and Redis prefix)
runs with ``--stuck-partition-seconds 8`` and the TEST-ONLY hook that pauses partition 0 inside
its consumer after its first batch: the partition stays assigned but is never fetched again, the
symptom of faust-streaming #629/#471. Events keep arriving on every partition. Asserted: its
``/readyz`` turns 503 ("behind") before the watchdog acts; the worker logs partition 0 (and no
other) as stuck and exits with code 75 within the bound; the
exporter's collector shows the partition in ``ccmon_stuck_partition_timestamp_seconds``; the
events of partition 0 were really missing; and a restarted worker (without the hook) applies
every event exactly once: the KPIs equal ``ccmon replay`` of the same events.

Takes about 40 s.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness.kafka_topics import assigned, create_topics, produce_timed, simulate
from harness.pipeline import Pipeline
from harness.processes import free_port
from harness.samples import (
    Samples,
    diff,
    events_total,
    kpi_samples,
    metrics_text,
    replay_samples,
    samples_of,
    wait_for_kpis,
)

from kpi_core.events import parse_line
from streams.watchdog import STUCK_EXIT_CODE, TEST_HOOKS_ENV, TEST_HOOKS_VALUE, TEST_PAUSE_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUCK_SECONDS = 8
#: From the last event produced to the worker's exit: the limit, the probe's 5 s interval, the
#: 1 s check, and the ordinary shutdown (leaving the group, closing the consumer).
EXIT_BOUND_SECONDS = STUCK_SECONDS + 45
STUCK_FAMILY = "ccmon_stuck_partition_timestamp_seconds"


def without_stuck(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0] != STUCK_FAMILY}


def test_a_partition_never_fetched_makes_the_worker_exit_and_the_restart_applies_everything_once(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "day.jsonl"
    lines = simulate(path)
    at = math.ceil(max(parse_line(line).ts for line in lines) / 60) * 60 + 60
    want = replay_samples(path, at)
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    create_topics(kafka_bootstrap, p.topic, p.dlq)
    worker_args = p.worker_args(at=at, batch_size=5, batch_within="0.1", session_timeout=6)
    web_port = free_port()
    try:
        monkeypatch.setenv(TEST_HOOKS_ENV, TEST_HOOKS_VALUE)
        monkeypatch.setenv(TEST_PAUSE_ENV, "0")
        worker = p.start(
            "stalled", *worker_args, "--stuck-partition-seconds", str(STUCK_SECONDS), "--web-port", str(web_port)
        )
        monkeypatch.delenv(TEST_HOOKS_ENV)
        monkeypatch.delenv(TEST_PAUSE_ENV)
        deadline = time.monotonic() + 90
        while assigned(p.logs["stalled"], p.topic) != "{0-3}":  # all four: it is alone in its group
            assert time.monotonic() < deadline, f"the worker was not given the partitions:\n{p.log_tail()}"
            assert worker.poll() is None, f"the worker exited:\n{p.log_tail()}"
            time.sleep(0.2)

        third = len(lines) // 3
        produce_timed(kafka_bootstrap, p.topic, lines[:third])
        deadline = time.monotonic() + 60
        while "TEST-ONLY hook: paused partition" not in p.logs["stalled"].read_text(errors="replace"):
            assert time.monotonic() < deadline, f"the hook did not pause the partition:\n{p.log_tail()}"
            assert worker.poll() is None, f"the worker exited:\n{p.log_tail()}"
            time.sleep(0.2)
        assert readyz(web_port)[0] == 200
        produce_timed(kafka_bootstrap, p.topic, lines[third:])
        produced = time.monotonic()

        answers = []  # /readyz until the worker exits
        while worker.poll() is None:
            assert time.monotonic() - produced < EXIT_BOUND_SECONDS, (
                f"the worker did not exit within {EXIT_BOUND_SECONDS} s of the last event:\n{p.log_tail()}"
            )
            answers.append((time.monotonic() - produced, *readyz(web_port)))
            time.sleep(0.25)
        code = worker.returncode
        exited_after = time.monotonic() - produced
        behind = [(t, body) for t, status, body in answers if status == 503 and "behind" in str(body.get("reason"))]
        assert behind and behind[0][1]["partitions"] == [0, 1, 2, 3], answers
        log = p.logs["stalled"].read_text(errors="replace")
        assert code == STUCK_EXIT_CODE, f"exit code {code}:\n{log[-4000:]}"
        stuck_lines = [line for line in log.splitlines() if "stuck partition(s) of" in line]
        assert len(stuck_lines) == 1, log[-4000:]
        assert "[ERROR]" in stuck_lines[0]
        assert re.findall(re.escape(p.topic) + r"\[(\d+)\]", stuck_lines[0]) == ["0"], stuck_lines[0]
        assert "Traceback" not in log, log[-4000:]

        # Recorded for the exporter (Prometheus alerts on it after the worker is gone).
        recorded = {
            labels: v
            for (name, labels), v in samples_of(metrics_text(redis_url, p.prefix, at)).items()
            if name == STUCK_FAMILY
        }
        assert list(recorded) == [(("partition", "0"), ("topic", p.topic))], recorded
        assert abs(next(iter(recorded.values())) - time.time()) < 120
        # The stall was real: partition 0's later events never reached Redis.
        counted = events_total(kpi_samples(redis_url, p.prefix, at))
        assert counted < events_total(want), (counted, events_total(want))

        # The supervisor's restart (without the hook): every event applied exactly once.
        restarted = p.start("restarted", *worker_args)
        got = wait_for_kpis(
            lambda: without_stuck(kpi_samples(redis_url, p.prefix, at)), want, 120, [restarted], p.log_tail
        )
        print(
            f"/readyz 503 ({behind[0][1]['reason']}) {behind[0][0]:.1f} s after the last event; "
            f"worker exited {exited_after:.1f} s after it (limit {STUCK_SECONDS} s); "
            f"{counted:.0f} of {events_total(want):.0f} events counted before the restart"
        )
        problems = diff(got, want)
        assert not problems, problems
    finally:
        p.close()


def readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:  # the worker is stopping
        return 0, {}
