"""An evicting Redis is refused (streams/redis/policy.py), on real ``redis-server``s of the
test's own started with ``--maxmemory-policy`` (the shared Redis is never reconfigured):

* ``ccmon worker`` and ``ccmon rebuild`` exit with status 2 within seconds, with one line on
  stderr naming the policy and what to set, before they touch Kafka or write to Redis;
  under ``allkeys-lru`` and ``volatile-lru``; also when ``CONFIG`` is renamed away (read from
  ``INFO memory``), and on a Redis Cluster whose one primary evicts;
* with ``--allow-evicting-redis yes`` the worker runs (one WARNING); ``CONFIG SET
  maxmemory-policy`` at run time flips the exporter's ``ccmon_redis_eviction_safe`` to 1 and
  back to 0 (the exporter re-reads it every 30 s at most, so this test takes about a minute);
* the watch on a real Redis logs a change once; a user allowed neither ``CONFIG`` nor
  ``INFO`` gets one warning, and ccmon goes on.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from harness.kafka_topics import delete_topics
from harness.pipeline import cli_args
from harness.processes import free_port, stop
from harness.redis_servers import RedisServer
from harness.samples import samples_of

from streams.redis import policy as redis_policy

pytestmark = pytest.mark.integration

#: Seconds a refusal may take (an interpreter start and one Redis round trip; 2 shared cores).
REFUSAL_SECONDS = 20.0


def refusal(where: str, policy: str) -> str:
    return (
        f"Redis at {where} evicts keys (maxmemory-policy {policy}): ccmon would count redelivered events again "
        "after an eviction; set maxmemory-policy noeviction, or pass --allow-evicting-redis yes "
        "(CCMON_ALLOW_EVICTING_REDIS=yes) to run anyway"
    )


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type]:
    started: list[RedisServer] = []

    class Server(RedisServer):
        def __init__(self, *options: str) -> None:
            super().__init__(tmp_path / f"redis-{len(started)}", *options)
            started.append(self)
            self.start()

    yield Server
    for server in started:
        server.shutdown()


def run_cli(*args: str, timeout: float = REFUSAL_SECONDS) -> tuple[int | None, str, float]:
    """``python -m streams.cli ARGS``: (exit status, or None if still running after
    ``timeout`` (then killed), stderr, seconds)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _out, err = process.communicate(timeout=timeout)
        return process.returncode, err.decode(errors="replace"), time.monotonic() - started
    except subprocess.TimeoutExpired:
        stop(process)
        _out, err = process.communicate()
        return None, err.decode(errors="replace"), time.monotonic() - started


def topics(kafka: str) -> set[str]:
    import kafka as kafka_lib

    admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def assert_refused(command: str, result: tuple[int | None, str, float], line: str) -> None:
    status, err, seconds = result
    assert status is not None, f"ccmon {command} still running after {seconds:.0f} s (not refused):\n{err[-3000:]}"
    assert status == 2, err
    assert seconds < REFUSAL_SECONDS
    lines = err.strip().splitlines()
    assert lines[-1] == f"ccmon {command}: {line}", err
    assert sum("evicts keys" in text for text in lines) == 1, err  # one line, no traceback
    assert "Traceback" not in err


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_worker_refuses_an_evicting_redis(policy: str, server_factory: type, kafka_bootstrap: str) -> None:
    server = server_factory("--maxmemory-policy", policy)
    run = uuid.uuid4().hex[:10]
    topic = f"ccmon-evict-{run}"
    try:
        result = run_cli(
            "worker",
            "--kafka",
            kafka_bootstrap,
            "--redis",
            server.url,
            "--topic",
            topic,
            "--dlq-topic",
            f"{topic}-dlq",
            "--group",
            topic,
            "--redis-prefix",
            f"evict-{run}",
            "--web-port",
            "0",
        )
        assert_refused("worker", result, refusal(f"127.0.0.1:{server.port}", policy))
        # Refused before anything else: no topic created, nothing written to Redis.
        assert not {topic, f"{topic}-dlq"} & topics(kafka_bootstrap)
        assert redis.Redis(port=server.port).dbsize() == 0
    finally:  # a worker that was not refused made them
        delete_topics(kafka_bootstrap, topic, f"{topic}-dlq", f"{topic}-__assignor-__leader")


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_rebuild_refuses_an_evicting_redis(policy: str, server_factory: type, kafka_bootstrap: str) -> None:
    server = server_factory("--maxmemory-policy", policy)
    run = uuid.uuid4().hex[:10]
    result = run_cli(
        "rebuild",
        "--kafka",
        kafka_bootstrap,
        "--redis",
        server.url,
        "--topic",
        f"ccmon-evict-{run}",
        "--group",
        f"ccmon-evict-{run}",
        "--redis-prefix",
        f"evict-{run}",
    )
    assert_refused("rebuild", result, refusal(f"127.0.0.1:{server.port}", policy))
    assert redis.Redis(port=server.port).dbsize() == 0


def test_the_policy_is_read_from_info_when_config_is_renamed(server_factory: type, kafka_bootstrap: str) -> None:
    server = server_factory("--maxmemory-policy", "allkeys-lfu", "--rename-command", "CONFIG", "")
    with pytest.raises(redis.ResponseError):
        redis.Redis(port=server.port).config_get("maxmemory-policy")  # as on many managed Redis
    result = run_cli("rebuild", "--kafka", kafka_bootstrap, "--redis", server.url, "--topic", "ccmon-evict-none")
    assert_refused("rebuild", result, refusal(f"127.0.0.1:{server.port}", "allkeys-lfu"))


def test_a_cluster_is_refused_when_one_primary_evicts(cluster: list[int], kafka_bootstrap: str) -> None:
    node = redis.Redis(port=cluster[1])
    node.config_set("maxmemory-policy", "volatile-ttl")
    try:
        result = run_cli(
            "rebuild",
            "--kafka",
            kafka_bootstrap,
            "--redis",
            f"redis://127.0.0.1:{cluster[0]}/0",
            "--redis-cluster",
            "yes",
            "--topic",
            "ccmon-evict-none",
        )
    finally:
        node.config_set("maxmemory-policy", "noeviction")
    assert_refused("rebuild", result, refusal(f"127.0.0.1:{cluster[1]}", "volatile-ttl"))


def gauge(url: str) -> dict[str, float]:
    """``policy -> value`` of ccmon_redis_eviction_safe at ``url`` ({} when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    return {
        dict(labels)["policy"]: value
        for (name, labels), value in samples_of(text).items()
        if name == "ccmon_redis_eviction_safe"
    }


def wait_for(
    read: Callable[[], dict[str, float]],
    want: dict[str, float],
    seconds: float,
    what: str,
    alive: list[subprocess.Popen[bytes]],
    logs: list[Path],
) -> None:
    deadline = time.monotonic() + seconds
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        for process in alive:
            assert process.poll() is None, "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)
        got = read()
        if got == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: {got}, want {want} after {seconds:.0f} s")


def test_the_override_runs_and_worker_and_exporter_follow_the_policy(
    server_factory: type, kafka_bootstrap: str, tmp_path: Path
) -> None:
    server = server_factory("--maxmemory-policy", "allkeys-lru")
    run = uuid.uuid4().hex[:10]
    topic, web_port, port = f"ccmon-evict-{run}", free_port(), free_port()
    recheck = 2.0  # --redis-policy-recheck-seconds (default 30): the worker's timer, the exporter's scrapes
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CCMON_ALLOW_EVICTING_REDIS": "yes",
        "CCMON_REDIS_POLICY_RECHECK_SECONDS": str(recheck),
    }
    logs = [tmp_path / "worker.log", tmp_path / "exporter.log"]
    processes: list[subprocess.Popen[bytes]] = []
    names = {"redis": server.url, "redis_prefix": f"evict-{run}"}
    commands = [
        cli_args(
            "worker",
            kafka=kafka_bootstrap,
            topic=topic,
            dlq_topic=f"{topic}-dlq",
            group=topic,
            web_port=web_port,
            **names,
        ),
        cli_args("exporter", host="127.0.0.1", port=port, **names),
    ]
    try:
        for log, command in zip(logs, commands, strict=True):
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "streams.cli", *command],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
        worker_gauge = lambda: gauge(f"http://127.0.0.1:{web_port}/metrics")  # noqa: E731
        exporter_gauge = lambda: gauge(f"http://127.0.0.1:{port}/metrics")  # noqa: E731
        wait_for(worker_gauge, {"allkeys-lru": 0.0}, 90, "the worker's own /metrics", processes, logs)
        wait_for(exporter_gauge, {"allkeys-lru": 0.0}, 30, "the exporter's /metrics", processes, logs)
        worker_log = logs[0].read_text(errors="replace")
        warnings = [line for line in worker_log.splitlines() if "evicts keys" in line]
        assert len(warnings) == 1 and "WARNING" in warnings[0] and "running anyway" in warnings[0], worker_log[-3000:]

        client = redis.Redis(port=server.port)
        client.config_set("maxmemory-policy", "noeviction")
        started = time.monotonic()
        for name, read in (("the worker", worker_gauge), ("the exporter", exporter_gauge)):
            wait_for(read, {"noeviction": 1.0}, recheck + 15, f"{name} after CONFIG SET noeviction", processes, logs)
        flipped = time.monotonic() - started
        client.config_set("maxmemory-policy", "allkeys-lru")
        for name, read in (("the worker", worker_gauge), ("the exporter", exporter_gauge)):
            wait_for(read, {"allkeys-lru": 0.0}, recheck + 15, f"{name} after CONFIG SET allkeys-lru", processes, logs)
        assert flipped <= recheck + 15
        assert all(process.poll() is None for process in processes)  # neither exits on a change
        worker_log = logs[0].read_text(errors="replace")
        assert len([line for line in worker_log.splitlines() if "maxmemory-policy is noeviction again" in line]) == 1
        assert len([line for line in worker_log.splitlines() if "evicts keys" in line]) == 2, worker_log[-3000:]
    finally:
        for process in processes:
            stop(process)
        delete_topics(kafka_bootstrap, topic, f"{topic}-dlq", f"{topic}-__assignor-__leader")  # Faust's too


def test_the_watch_on_a_real_redis_logs_a_change_once(server_factory: type, caplog: pytest.LogCaptureFixture) -> None:
    server = server_factory()  # redis-server's default: noeviction
    client = redis.Redis.from_url(server.url)
    with caplog.at_level(logging.INFO, logger="ccmon.redis_policy"):
        watch = redis_policy.EvictionWatch(client, status=redis_policy.check_at_start(client, False, allow=False))
        client.config_set("maxmemory-policy", "volatile-lru")
        watch.refresh()
        watch.refresh()
        assert watch.family().samples == [("", (("policy", "volatile-lru"),), 0.0)]
        client.config_set("maxmemory-policy", "noeviction")
        watch.refresh()
    assert [r.levelname for r in caplog.records] == ["INFO", "ERROR", "WARNING"]
    assert caplog.records[0].getMessage() == "Redis maxmemory-policy is noeviction"
    assert (
        caplog.records[1]
        .getMessage()
        .startswith(f"Redis at 127.0.0.1:{server.port} evicts keys (maxmemory-policy volatile-lru): ")
    )
    assert caplog.records[2].getMessage() == "Redis maxmemory-policy is noeviction again"


def test_a_user_allowed_neither_config_nor_info_gets_a_warning(
    server_factory: type, caplog: pytest.LogCaptureFixture
) -> None:
    server = server_factory("--maxmemory-policy", "allkeys-lru")
    admin = redis.Redis(port=server.port)
    admin.acl_setuser(
        "ccmon",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
        commands=["-config", "-info"],
    )
    client = redis.Redis.from_url(server.url, username="ccmon", password="pw")
    with caplog.at_level(logging.WARNING, logger="ccmon.redis_policy"):
        status = redis_policy.check_at_start(client, False, allow=False)  # not refused: cannot tell
    assert status.safe is None
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"cannot read the maxmemory-policy of Redis at 127.0.0.1:{server.port} (127.0.0.1:"
    )
    assert "NOPERM" in record.getMessage() or "no permissions" in record.getMessage()
    assert redis_policy.metric_family(status).samples == []
