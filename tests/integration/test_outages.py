"""Outages on real servers of the test's own (the shared Kafka and Redis are never stopped).

* Redis: a private ``redis-server`` (AOF, ``appendfsync always``) is killed with SIGKILL for
  30 s while events keep arriving. The worker stays up and pauses: one ERROR line, its own
  ``ccmon_worker_redis_wait_seconds`` gauge counts the wait, the group's committed offsets
  stand still while the topic grows, the exporter answers 503. Redis comes back from its AOF
  and the worker catches up: the KPIs equal ``ccmon replay`` of the same events.
* Kafka: a private broker (a private copy of ``deploy/local/services.sh``) is stopped and
  started again mid-stream under two workers; they carry on with nothing lost or doubled.
* The AOF itself: a private Redis is SIGKILLed three times while a writer applies MULTI/EXEC
  batches back to back (the kill lands with an EXEC in flight, at a random instant, or when a
  background fsync is pending); after each restart every batch whose EXEC returned is there,
  whole. The same kills under ``appendfsync everysec`` catch acknowledged batches lost (a
  test of its own), so the check cannot pass vacuously.

Takes about 125 s: the 30 s outage, the private broker's two starts (~10 s each), the AOF
kills (~15 s).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import (
    Flow,
    assigned,
    create_topics,
    delete_topics,
    produce_timed,
)
from harness.pipeline import Pipeline
from harness.processes import free_port
from harness.processes import http_status as get
from harness.redis_servers import RedisServer
from harness.samples import (
    Samples,
    diff,
    events_total,
    kpi_samples,
    samples_of,
    simulated_day,
    wait_for_kpis,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "deploy" / "local" / "services.sh"
OUTAGE_SECONDS = 30.0


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes], float, Samples]:
    return simulated_day(tmp_path_factory.mktemp("outage"))


# -- AOF durability: SIGKILL while batches are being written --------------------------------------
def batch_value(number: int) -> bytes:
    """A batch's value: its number, then 8 KiB (enough that a background fsync takes a while)."""
    return f"{number}:".encode() + bytes([number % 251]) * 8192


class BatchWriter(threading.Thread):
    """Applies numbered batches back to back, each one MULTI/EXEC (the batch's key and the
    ``batches`` counter), until Redis goes away. ``acked`` holds the batches whose EXEC
    returned; ``error`` the error that stopped it (the kill: a ``ConnectionError``)."""

    def __init__(self, port: int, first: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.next = first
        self.acked: list[int] = []
        self.last_ack = 0.0  # time.monotonic() of the last acknowledgement
        self.error: Exception | None = None

    def run(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: a resent EXEC would apply a batch twice, and the test is about the first try.
        client = redis.Redis(port=self.port, socket_timeout=30, retry=Retry(NoBackoff(), 0))
        try:
            while True:
                pipe = client.pipeline(transaction=True)
                pipe.set(f"batch:{self.next}", batch_value(self.next))
                pipe.incr("batches")
                pipe.execute()
                self.acked.append(self.next)
                self.last_ack = time.monotonic()
                self.next += 1
        except redis.RedisError as exc:
            self.error = exc
        finally:
            client.close()


def kill_mid_write(server: RedisServer, writer: BatchWriter, rng: random.Random) -> tuple[bool, float]:
    """SIGKILL ``server`` while ``writer`` is applying batches, at the worst moment for the AOF:
    the first instant, after a random 0.5-1.5 s, that a background fsync is pending (under
    ``everysec`` Redis then acknowledges writes it has not yet written to the AOF), letting two
    more batches be acknowledged; or, if none is ever pending (``always`` fsyncs before it
    answers, never in the background), at a random instant 0.5-2 s later. Returns whether a
    background fsync was pending at the kill, and how long after the last acknowledgement it came."""
    import redis

    watcher = redis.Redis(port=server.port)
    earliest = time.monotonic() + rng.uniform(0.5, 1.5)
    latest = earliest + rng.uniform(0.5, 2.0)
    while True:
        pending = bool(watcher.info("persistence")["aof_pending_bio_fsync"])
        now = time.monotonic()
        if now >= latest or (pending and now >= earliest):
            break
    watcher.close()
    if pending:
        seen, until = len(writer.acked), now + 0.05
        while len(writer.acked) < seen + 2 and time.monotonic() < until:
            time.sleep(0)
    assert writer.is_alive(), f"the writer stopped before the kill: {writer.error!r}"
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    since_ack = time.monotonic() - writer.last_ack
    server.process.wait(10)
    return pending, since_ack


@dataclass
class KillRound:
    acked: int  # batches acknowledged in this round
    pending_fsync: bool  # a background fsync was pending at the kill
    since_ack: float  # seconds from the last acknowledgement to the kill
    lost: list[int]  # acknowledged batches (of all rounds so far) missing after the restart
    applied: int  # the "batches" counter after the restart


def sigkill_rounds(server: RedisServer, seed: int, rounds: int, stop_at_loss: bool = False) -> list[KillRound]:
    """Up to ``rounds`` times: a writer applies batches, Redis is killed mid-stream
    (``kill_mid_write``), started again from its AOF, and every batch acknowledged so far is
    looked up. Asserts that each kill interrupted an EXEC in flight and that batches stayed
    atomic (the counter equals the batch keys present)."""
    import redis

    rng = random.Random(seed)
    acked: list[int] = []
    result: list[KillRound] = []
    first = 0
    for _ in range(rounds):
        writer = BatchWriter(server.port, first)
        writer.start()
        pending, since_ack = kill_mid_write(server, writer, rng)
        writer.join(30)
        assert not writer.is_alive(), "the writer did not notice the kill"
        # Mid-stream, not between writes: the batch in flight when Redis died got no answer, and
        # the one before had been acknowledged just before (a writer that paused would fail this).
        assert isinstance(writer.error, redis.ConnectionError), repr(writer.error)
        assert since_ack < 0.5, f"the last acknowledgement came {since_ack:.2f} s before the kill"
        assert writer.acked, "no batch was acknowledged before the kill"
        acked += writer.acked
        first = writer.next + 1  # never reuse the number of the batch in flight: it may have been applied
        server.start()  # from its AOF
        client = redis.Redis(port=server.port)
        try:
            lost = []
            for start in range(0, len(acked), 500):
                chunk = acked[start : start + 500]
                values = client.mget([f"batch:{n}" for n in chunk])
                lost += [n for n, value in zip(chunk, values, strict=True) if value != batch_value(n)]
            applied = int(client.get("batches") or 0)
            keys = sum(1 for _ in client.scan_iter("batch:*", count=1000))
        finally:
            client.close()
        assert applied == keys, f"a batch was applied in part: counter {applied}, {keys} batch keys"
        result.append(KillRound(len(writer.acked), pending, round(since_ack, 4), lost, applied))
        print(f"appendfsync {server.fsync}: {result[-1]}")
        if lost and stop_at_loss:
            break
    return result


def test_aof_always_keeps_every_acknowledged_batch_through_sigkill_mid_write(tmp_path: Path) -> None:
    """Three SIGKILLs of a private Redis (``appendfsync always``, as deploy/local runs it) while a
    writer applies batches: after each restart from the AOF, every batch whose EXEC returned is
    there, whole. The next test shows that the same kills catch ``everysec`` losing batches."""
    server = RedisServer(tmp_path / "redis", fsync="always")
    server.start()
    try:
        rounds = sigkill_rounds(server, seed=20261206, rounds=3)
    finally:
        server.kill()
    total = sum(r.acked for r in rounds)
    assert [r.lost for r in rounds] == [[], [], []], rounds
    assert not any(r.pending_fsync for r in rounds)  # always: no fsync is ever left to the background
    # At most the one batch in flight at each kill was applied without being acknowledged.
    assert total <= rounds[-1].applied <= total + len(rounds), rounds


def test_the_same_kills_catch_everysec_losing_acknowledged_batches(tmp_path: Path) -> None:
    """The check above is not vacuous: with ``appendfsync everysec`` a kill while a background
    fsync is pending loses batches that Redis had acknowledged (it postpones the AOF write, up
    to 2 s, but answers). Seen in about 4 kills of 5 here; up to 6 kills, stopping at the first
    loss."""
    server = RedisServer(tmp_path / "redis", fsync="everysec")
    server.start()
    try:
        rounds = sigkill_rounds(server, seed=20261206, rounds=6, stop_at_loss=True)
    finally:
        server.kill()
    assert any(r.pending_fsync for r in rounds), rounds
    assert rounds[-1].lost, f"no acknowledged batch lost under everysec in {len(rounds)} kills: {rounds}"


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
    try:
        p.start("exporter", *p.exporter_args(at=at, host="127.0.0.1"))
        worker = p.start("worker", *p.worker_args(at=at, web_port=web_port, batch_size=5, batch_within="0.1"))
        third = len(lines) // 3
        produce_timed(kafka_bootstrap, p.topic, lines[:third])
        wait_for_kpis(
            lambda: kpi_samples(own_redis.url, p.prefix, at),
            {("ccmon_events_total", ()): third},
            90,
            p.processes,
            p.log_tail,
        )

        # Redis dies; events keep coming while it is away.
        own_redis.kill()
        down_at = time.monotonic()
        flow = threading.Thread(target=produce_timed, args=(kafka_bootstrap, p.topic, lines[third : 2 * third]))
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
            waits += [
                s.value for f in text_families(text) for s in f.samples if s.name == "ccmon_worker_redis_wait_seconds"
            ]
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
        produce_timed(kafka_bootstrap, p.topic, lines[2 * third :])
        got = wait_for_kpis(lambda: kpi_samples(own_redis.url, p.prefix, at), want, 120, p.processes, p.log_tail)
        problems = diff(got, want)
        assert not problems, problems
        assert worker.poll() is None  # the same process all along: no crash loop
        log = p.logs["worker"].read_text(errors="replace")
        back = re.search(r"Redis is back after (\d+) s", log)
        assert back and int(back.group(1)) >= OUTAGE_SECONDS - 5, log[-3000:]
        assert "Traceback" not in log
        status, text = get(f"http://127.0.0.1:{web_port}/metrics")
        assert [
            s.value for f in text_families(text) for s in f.samples if s.name == "ccmon_worker_redis_wait_seconds"
        ] == [0.0]
        status, text = get(f"http://127.0.0.1:{p.port}/metrics")
        assert status == 200
        assert samples_of(text)  # the exporter serves again
        assert get(f"http://127.0.0.1:{p.port}/healthz")[0] == 200
    finally:
        p.stop_processes()
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
    worker_args = p.worker_args(at=at, batch_size=5, batch_within="0.1", session_timeout=10, web_port=0)
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
        print(
            f"broker down {down_for:.0f} s; {counted_at_stop:.0f} of {events_total(want):.0f} events counted when it "
            f"stopped; {sent} messages sent in all"
        )
        assert counted_at_stop < events_total(want)
        problems = diff(got, want)
        assert not problems, problems
        assert all(w.poll() is None for w in workers)  # the same two processes throughout
    finally:
        p.stop_processes()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
