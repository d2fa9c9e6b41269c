"""The real pipeline: ``ccmon worker`` and ``ccmon exporter`` as subprocesses, on topics, a
consumer group and a Redis key prefix of their own (:class:`Pipeline`), their command lines
built by :func:`cli_args`; and the exporter's app over the golden data, in this process
(:func:`serve_golden`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.kafka_topics import delete_topics
from harness.processes import free_port, stop
from harness.samples import Samples, samples_of

#: The pipeline counters that account for an event: applied or rejected.
ACCOUNTED = ("ccmon_events_total", "ccmon_events_rejected_total")
SETTLE_TIMEOUT = 90.0


class Pipeline:
    """Names of a run's own (``<topic_prefix>-<run>`` for the topic and consumer group,
    ``<key_prefix>-<run>`` for the Redis keys), the exporter's free port, and the processes
    :meth:`start` ran, each logging to ``<tmp>/<name>.log``."""

    def __init__(
        self, kafka: str, redis_url: str, tmp: Path, topic_prefix: str = "ccmon-e2e", key_prefix: str = "e2e"
    ) -> None:
        run = uuid.uuid4().hex[:10]
        self.kafka = kafka
        self.redis_url = redis_url
        self.topic = f"{topic_prefix}-{run}"
        self.dlq = f"{topic_prefix}-{run}-dlq"
        self.group = f"{topic_prefix}-{run}"
        self.prefix = f"{key_prefix}-{run}"
        self.port = free_port()
        self.tmp = tmp
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def worker_args(
        self, *extra: str, redis_url: str | None = None, at: float | str | None = None, **flags: object
    ) -> list[str]:
        """``worker`` on this run's Kafka, topic, dead-letter topic, consumer group, Redis and key
        prefix (``redis_url`` instead of the run's), otherwise as :func:`cli_args`."""
        names = {"kafka": self.kafka, "topic": self.topic, "dlq_topic": self.dlq, "group": self.group}
        return cli_args("worker", *extra, at=at, **names, **self._redis(redis_url), **flags)

    def exporter_args(
        self, *extra: str, redis_url: str | None = None, at: float | str | None = None, **flags: object
    ) -> list[str]:
        """``exporter`` on this run's port, Redis and key prefix, otherwise as :meth:`worker_args`."""
        return cli_args("exporter", *extra, at=at, port=self.port, **self._redis(redis_url), **flags)

    def rebuild_args(
        self, *extra: str, redis_url: str | None = None, at: float | str | None = None, **flags: object
    ) -> list[str]:
        """``rebuild`` of this run's topic and consumer group into its Redis and key prefix,
        otherwise as :meth:`worker_args`."""
        names = {"kafka": self.kafka, "topic": self.topic, "group": self.group}
        return cli_args("rebuild", *extra, at=at, **names, **self._redis(redis_url), **flags)

    def _redis(self, redis_url: str | None) -> dict[str, object]:
        return {"redis": self.redis_url if redis_url is None else redis_url, "redis_prefix": self.prefix}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """``python -m streams.cli <args>``, unbuffered, its output to ``<tmp>/<name>.log``."""
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.processes.append(process)
        return process

    def log_tail(self) -> str:
        return "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}" for name, path in self.logs.items())

    def stop_processes(self) -> None:
        for process in self.processes:
            stop(process)

    def drop_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    def close(self) -> None:
        """Stop the processes, drop the run's Redis keys and its topics (best effort)."""
        self.stop_processes()
        self.drop_redis_keys()
        delete_topics(self.kafka, self.topic, self.dlq)

    def metrics(self) -> Samples:
        """The KPI samples of /metrics (without the exporter's own timing)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            samples = samples_of(response.read().decode())
        return {key: value for key, value in samples.items() if not key[0].startswith("ccmon_exporter_")}


def cli_args(command: str, *extra: str, at: float | str | None = None, **flags: object) -> list[str]:
    """``command``'s arguments: each keyword flag as ``--flag-name value`` (``batch_size=5``:
    ``--batch-size 5``), ``--clock fixed:<at>`` when ``at`` is given, then ``extra`` as it is."""
    args = [command]
    for name, value in flags.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    clock = [] if at is None else ["--clock", f"fixed:{at}"]
    return [*args, *clock, *extra]


def settled(
    p: Any, expected_events: int, counters: tuple[str, ...] = ACCOUNTED, timeout: float = SETTLE_TIMEOUT
) -> Samples:
    """/metrics once ``counters`` account for ``expected_events`` and two scrapes agree
    (``p``: anything with ``processes``, ``metrics()`` and ``log_tail()``)."""
    deadline = time.monotonic() + timeout
    previous: dict[Any, float] | None = None
    while time.monotonic() < deadline:
        for process in p.processes:
            assert process.poll() is None, f"a process exited ({process.args!r}):\n{p.log_tail()}"
        try:
            current = p.metrics()
        except OSError:
            time.sleep(0.5)
            continue
        counted = sum(v for (name, _), v in current.items() if name in counters)
        if counted >= expected_events and current == previous:
            return current
        previous = current
        time.sleep(1.0)
    pytest.fail(f"the counts did not settle within {timeout:.0f} s:\n{p.log_tail()}")


def serve_golden(redis_client: Any, prefix: str, lines: list[bytes], at: float) -> tuple[Any, Any]:
    """The golden events applied to a real Redis under ``prefix``, and the exporter's app over
    them served on a free port (``(Server, RedisState)``; the caller stops the server)."""
    from kpi_core.config import Config
    from kpi_core.engine import Engine
    from kpi_core.events import parse_line
    from streams.exporter import build_app
    from streams.redis.state import RedisState
    from streams.web import serve

    config = Config()
    state = RedisState(redis_client, config, prefix=prefix, clock=lambda: at)
    engine = Engine(config, state)
    with state.batch():
        for line in lines:
            engine.handle(parse_line(line), at)
    return serve(build_app(config, state, lambda: at, redis_client.ping)), state
