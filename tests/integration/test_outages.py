"""Outages on real servers of the test's own (the shared Kafka and Redis are never stopped).

* Redis: a private ``redis-server`` (AOF, ``appendfsync always``) is killed with SIGKILL for
  30 s while events keep arriving. The worker stays up and pauses: one ERROR line, its own
  ``ccmon_worker_redis_wait_seconds`` gauge counts the wait, the group's committed offsets
  stand still while the topic grows, the exporter answers 503. Redis comes back from its AOF
  and the worker catches up: the KPIs equal ``ccmon replay`` of the same events.
* Kafka: a private broker (a private copy of ``deploy/local/services.sh``) is stopped and
  started again mid-stream under two workers; they carry on with nothing lost or doubled.

Takes about 100 s: the 30 s outage, and the private broker's two starts (~10 s each).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_crash_trials import (
    Flow,
    Samples,
    create_topics,
    diff,
    events_total,
    kpi_samples,
    produce_timed,
    replay_samples,
    wait_for_kpis,
)
from test_pipeline_e2e import Pipeline, delete_topics, free_port, samples_of, stop
from test_scale_out import assigned, simulate

from kpi_core.events import parse_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "deploy" / "local" / "services.sh"
OUTAGE_SECONDS = 30.0


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes], float, Samples]:
    path = tmp_path_factory.mktemp("outage") / "day.jsonl"
    lines = simulate(path)
    at = math.ceil(max(parse_line(line).ts for line in lines) / 60) * 60 + 60
    return path, lines, at, replay_samples(path, at)


# -- a private redis-server ---------------------------------------------------------------------
class RedisServer:
    """``redis-server`` on a free port, persisting every write to its AOF before answering
    (``appendfsync always``), so a SIGKILL loses nothing it acknowledged. ``options``: more
    command-line options (``--maxmemory-policy``, ``allkeys-lru``)."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.dir = directory
        self.options = options
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        with (self.dir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "", *self.options],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:  # not listening yet, or still loading its AOF
                pass
            assert self.process.poll() is None, (self.dir / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.1)
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(10)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def committed(kafka: str, group: str) -> dict[int, int]:
    import kafka as kafka_lib

    admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


def end_offsets(kafka: str, topic: str) -> int:
    import kafka as kafka_lib

    consumer = kafka_lib.KafkaConsumer(bootstrap_servers=kafka)
    try:
        tps = [kafka_lib.TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def test_redis_down_30s_pauses_the_worker_which_catches_up(
    kafka_bootstrap: str, own_redis: RedisServer, day: tuple[Path, list[bytes], float, Samples], tmp_path: Path
) -> None:
    _path, lines, at, want = day
    p = Pipeline(kafka_bootstrap, own_redis.url, tmp_path)
    create_topics(kafka_bootstrap, p.topic, p.dlq)
    web_port = free_port()
    common = ["--redis", own_redis.url, "--redis-prefix", p.prefix, "--clock", f"fixed:{at}"]
    try:
        p.start("exporter", "exporter", "--host", "127.0.0.1", "--port", str(p.port), *common)
        worker = p.start("worker", "worker", "--kafka", kafka_bootstrap, "--topic", p.topic, "--dlq-topic", p.dlq,
                         "--group", p.group, "--web-port", str(web_port), "--batch-size", "5", "--batch-within",
                         "0.1", *common)  # fmt: skip
        third = len(lines) // 3
        produce_timed(kafka_bootstrap, p.topic, lines[:third])
        wait_for_kpis(lambda: kpi_samples(own_redis.url, p.prefix, at), {("ccmon_events_total", ()): third}, 90,
                      p.processes, p.log_tail)  # fmt: skip

        # Redis dies; events keep coming while it is away.
        own_redis.kill()
        down_at = time.monotonic()
        flow = threading.Thread(target=produce_timed, args=(kafka_bootstrap, p.topic, lines[third:2 * third]))
        flow.start()
        waits: list[float] = []
        statuses: set[int] = set()
        committed_early: dict[int, int] | None = None
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            assert worker.poll() is None, f"the worker exited with Redis down:\n{p.log_tail()}"
            statuses.add(get(f"http://127.0.0.1:{p.port}/metrics")[0])
            statuses.add(get(f"http://127.0.0.1:{p.port}/healthz")[0])
            status, text = get(f"http://127.0.0.1:{web_port}/metrics")
            assert status == 200, text
            waits += [s.value for f in text_families(text) for s in f.samples
                      if s.name == "ccmon_worker_redis_wait_seconds"]  # fmt: skip
            if committed_early is None and time.monotonic() - down_at > 8:
                committed_early = committed(kafka_bootstrap, p.group)  # after the last commit of applied batches
            time.sleep(1.0)
        flow.join(30)
        committed_late = committed(kafka_bootstrap, p.group)
        produced = end_offsets(kafka_bootstrap, p.topic)

        assert statuses == {503}, statuses  # the exporter's /metrics and /healthz: Prometheus sees it down
        assert waits and max(waits) >= OUTAGE_SECONDS - 10, waits  # the worker says it waits, and how long
        # Paused: nothing committed during the outage, though the topic grew meanwhile.
        assert committed_early == committed_late
        assert sum(committed_late.values()) < produced
        log = p.logs["worker"].read_text(errors="replace")
        assert len(re.findall(r"ERROR\]? .*Redis error: ", log)) == 1, log[-3000:]  # one line, no storm

        own_redis.start()  # back from its AOF
        produce_timed(kafka_bootstrap, p.topic, lines[2 * third:])
        got = wait_for_kpis(lambda: kpi_samples(own_redis.url, p.prefix, at), want, 120, p.processes, p.log_tail)
        problems = diff(got, want)
        assert not problems, problems
        assert worker.poll() is None  # the same process all along: no crash loop
        log = p.logs["worker"].read_text(errors="replace")
        back = re.search(r"Redis is back after (\d+) s", log)
        assert back and int(back.group(1)) >= OUTAGE_SECONDS - 5, log[-3000:]
        assert "Traceback" not in log
        status, text = get(f"http://127.0.0.1:{web_port}/metrics")
        assert [s.value for f in text_families(text) for s in f.samples
                if s.name == "ccmon_worker_redis_wait_seconds"] == [0.0]  # fmt: skip
        status, text = get(f"http://127.0.0.1:{p.port}/metrics")
        assert status == 200
        assert samples_of(text)  # the exporter serves again
        assert get(f"http://127.0.0.1:{p.port}/healthz")[0] == 200
    finally:
        for process in p.processes:
            stop(process)
        delete_topics(kafka_bootstrap, p.topic, p.dlq)


def text_families(text: str) -> Any:
    from prometheus_client.parser import text_string_to_metric_families

    return text_string_to_metric_families(text)


# -- a private Kafka broker ---------------------------------------------------------------------
@pytest.fixture
def own_services(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "CCMON_SERVICES_DIR": str(tmp_path / "services"),
        "CCMON_KAFKA_PORT": str(free_port()),
        "CCMON_KAFKA_CONTROLLER_PORT": str(free_port()),
        "CCMON_REDIS_PORT": str(free_port()),
    }
    up = subprocess.run(["bash", str(SERVICES), "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        yield env
    finally:
        subprocess.run(["bash", str(SERVICES), "down"], env=env, capture_output=True, text=True, timeout=120)


def test_kafka_broker_restart_mid_stream_loses_nothing(
    own_services: dict[str, str], day: tuple[Path, list[bytes], float, Samples], tmp_path: Path
) -> None:
    _path, lines, at, want = day
    env = own_services
    kafka = f"127.0.0.1:{env['CCMON_KAFKA_PORT']}"
    redis_url = f"redis://127.0.0.1:{env['CCMON_REDIS_PORT']}/0"
    p = Pipeline(kafka, redis_url, tmp_path)
    create_topics(kafka, p.topic, p.dlq)
    worker_args = ["worker", "--kafka", kafka, "--topic", p.topic, "--dlq-topic", p.dlq, "--group", p.group,
                   "--redis", redis_url, "--redis-prefix", p.prefix, "--clock", f"fixed:{at}", "--batch-size", "5",
                   "--batch-within", "0.1", "--session-timeout", "10", "--web-port", "0"]  # fmt: skip
    workers = [p.start(name, *worker_args) for name in ("w0", "w1")]
    try:
        deadline = time.monotonic() + 90
        while not all(assigned(p.logs[name], p.topic) for name in ("w0", "w1")):
            assert time.monotonic() < deadline, f"the group did not split the partitions:\n{p.log_tail()}"
            assert all(w.poll() is None for w in workers), f"a worker exited:\n{p.log_tail()}"
            time.sleep(0.2)

        # Events flow for ~15 s; the broker is stopped (SIGTERM: a clean shutdown, as in a rolling
        # restart) once about a third of them are counted, kept down 5 s, and started again. The
        # producer's sends meanwhile wait and are retried, as a real producer's would be.
        flow = Flow(kafka, p.topic, lines, 15.0)
        flow.start()
        deadline = time.monotonic() + 60
        while events_total(kpi_samples(redis_url, p.prefix, at)) < events_total(want) / 3:
            assert time.monotonic() < deadline, f"no progress:\n{p.log_tail()}"
            time.sleep(0.1)
        pid_file = Path(env["CCMON_SERVICES_DIR"]) / "kafka" / "kafka.pid"
        broker = int(pid_file.read_text())
        counted_at_stop = events_total(kpi_samples(redis_url, p.prefix, at))
        os.kill(broker, signal.SIGTERM)
        stopped = time.monotonic()
        deadline = stopped + 60
        while _alive(broker):
            assert time.monotonic() < deadline, "the broker did not stop"
            time.sleep(0.2)
        time.sleep(5)
        assert all(w.poll() is None for w in workers), f"a worker exited with the broker down:\n{p.log_tail()}"
        up = subprocess.run(["bash", str(SERVICES), "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        down_for = time.monotonic() - stopped
        sent = flow.finish()

        got = wait_for_kpis(lambda: kpi_samples(redis_url, p.prefix, at), want, 180, workers, p.log_tail)
        print(f"broker down {down_for:.0f} s; {counted_at_stop:.0f} of {events_total(want):.0f} events counted when it "
              f"stopped; {sent} messages sent in all")
        assert counted_at_stop < events_total(want)
        problems = diff(got, want)
        assert not problems, problems
        assert all(w.poll() is None for w in workers)  # the same two processes throughout
    finally:
        for process in p.processes:
            stop(process)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

