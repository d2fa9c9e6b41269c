"""The worker's ``/livez`` and ``/readyz`` (streams/watchdog.py) on the real services.

Two workers (subprocesses, shared Kafka, a topic of one partition, a private ``redis-server``)
with their web servers: once in the group, the one holding the partition is ready with it, the
other is ready and idle (more workers than partitions). The private Redis is then killed:
``/readyz`` answers 503 naming Redis on both while ``/livez`` stays 200, and both are ready
again once Redis is back. (``/readyz`` turning 503 for a partition that lags without batches is
in test_watchdog.py.)

Takes about 30 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import create_topics, delete_topics, produce_timed, simulate
from harness.pipeline import Pipeline
from harness.processes import free_port
from harness.processes import http_status as get
from harness.redis_servers import RedisServer
from harness.samples import events_total, kpi_samples

from kpi_core.events import parse_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Answer = tuple[int, dict[str, Any]]


def page(port: int, path: str) -> Answer:
    try:
        status, text = get(f"http://127.0.0.1:{port}{path}")
    except OSError:  # not listening yet
        return 0, {}
    return status, json.loads(text) if text.startswith("{") else {"text": text}


def wait_for(p: Pipeline, what: str, read: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: last {value!r}\n{p.log_tail()}"
        assert all(process.poll() is None for process in p.processes), f"a worker exited:\n{p.log_tail()}"
        time.sleep(0.3)


def test_livez_and_readyz_follow_the_group_and_redis(
    kafka_bootstrap: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    p = Pipeline(kafka_bootstrap, own_redis.url, tmp_path)
    lines = simulate(tmp_path / "day.jsonl")[:200]
    at = max(parse_line(line).ts for line in lines) + 60
    create_topics(kafka_bootstrap, p.topic, p.dlq, partitions=1)
    ports = {"a": free_port(), "b": free_port()}
    args = p.worker_args(at=at, batch_size=5, batch_within="0.1", session_timeout=6)
    try:
        p.start("a", *args, "--web-port", str(ports["a"]))
        early: list[Answer] = []
        ready = wait_for(
            p, "worker a ready", lambda: early.append(page(ports["a"], "/readyz")) or early[-1], lambda r: r[0] == 200
        )
        assert {status for status, _ in early} <= {0, 503, 200}, early  # starting: not listening, or not ready
        print(f"/readyz while starting: {[body.get('reason', status) for status, body in early]}")
        assert ready[1]["ready"] is True and ready[1]["partitions"] == [0], ready
        assert "idle" not in ready[1]
        assert page(ports["a"], "/livez") == (200, {"live": True})
        metrics = get(f"http://127.0.0.1:{ports['a']}/metrics")[1]
        assert "\nccmon_worker_stuck_partitions 0.0\n" in metrics  # the watchdog's gauge, nothing stuck

        # A second member of a one-partition group: it is given nothing, and is ready (idle).
        p.start("b", *args, "--web-port", str(ports["b"]))

        def both() -> dict[str, Answer]:
            return {name: page(port, "/readyz") for name, port in ports.items()}

        answers = wait_for(
            p,
            "both ready, one idle",
            both,
            lambda r: (
                all(s == 200 for s, _ in r.values()) and sorted(b["partitions"] for _, b in r.values()) == [[], [0]]
            ),
        )
        idle = [name for name, (_s, body) in answers.items() if body.get("idle")]
        busy = [name for name, (_s, body) in answers.items() if body["partitions"] == [0]]
        assert len(idle) == 1 and len(busy) == 1 and idle != busy, answers

        # Events flow and are applied: still ready, and then nothing behind.
        produce_timed(kafka_bootstrap, p.topic, lines)
        wait_for(
            p,
            "the events applied",
            lambda: events_total(kpi_samples(own_redis.url, p.prefix, at)),
            lambda n: n == len(lines),
        )
        wait_for(p, "no lag", lambda: page(ports[busy[0]], "/readyz"), lambda r: r[0] == 200 and r[1].get("lag") == 0)

        # Redis dies: not ready (named), still live; ready again when it is back.
        own_redis.kill()
        down = wait_for(p, "readyz 503 with Redis down", both, lambda r: all(s == 503 for s, _ in r.values()), 30)
        for name, (_status, body) in down.items():
            assert body["ready"] is False and body["reason"].startswith("Redis: "), (name, body)
            assert page(ports[name], "/livez") == (200, {"live": True})
        own_redis.start()
        wait_for(p, "ready again", both, lambda r: all(s == 200 for s, _ in r.values()), 60)
    finally:
        p.stop_processes()
        delete_topics(kafka_bootstrap, p.topic, p.dlq)
