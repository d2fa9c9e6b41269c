"""Redis over TLS, with AUTH, on real redis-servers of the test's own that listen on TLS
only (``--port 0 --tls-port N``), with certificates generated here:

* the state store over ``rediss://`` with ``CCMON_REDIS_CA_FILE`` and the password from
  ``CCMON_REDIS_PASSWORD_FILE`` equals the in-memory store on the golden events;
* ``ccmon worker`` (shared Kafka) and ``ccmon exporter`` over ``rediss://``: the golden KPIs
  on /metrics, with the password from the environment and from a file, never in the logs;
* an untrusted server certificate fails clearly: the client raises "certificate verify
  failed", the exporter logs it with the setting to check and answers 503;
* mutual TLS (``--tls-auth-clients yes``): refused without a client certificate, served with
  ``CCMON_REDIS_CERT_FILE`` / ``CCMON_REDIS_KEY_FILE``.

Takes about 20 s (most of it the worker joining its consumer group on the shared Kafka).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.pipeline import cli_args
from harness.processes import free_port, stop
from harness.samples import samples_of
from harness.tls import Tls, clean_environ, make_tls

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_line
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "Redis-tls-" + uuid.uuid4().hex[:12]
AT_EPOCH = 1795168800  # 2026-11-20T10:00:00Z


def start_redis(tls: Tls, directory: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (deploy/local/services.sh installs it)")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(tls.server_cert),
            "--tls-key-file",
            str(tls.server_key),
            "--tls-ca-cert-file",
            str(tls.ca),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(log),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited: {log.read_text() if log.exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.terminate()
    pytest.fail("redis-server did not listen within 10 s")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "redis.password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def tls_redis(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """TLS only (no plaintext port), clients need no certificate, AUTH required."""
    process, port = start_redis(
        tls, tmp_path_factory.mktemp("redis-tls"), "--tls-auth-clients", "no", "--requirepass", PASSWORD
    )
    try:
        yield port
    finally:
        stop(process, timeout=10)


@pytest.fixture(scope="module")
def mtls_redis(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """TLS only, and clients must present a certificate signed by the test CA."""
    process, port = start_redis(tls, tmp_path_factory.mktemp("redis-mtls"), "--tls-auth-clients", "yes")
    try:
        yield port
    finally:
        stop(process, timeout=10)


def settings_for(env: dict[str, str]) -> Any:
    from streams.settings import from_args

    return from_args(None, env)


def golden_events() -> list[Any]:
    golden = Path(__file__).resolve().parents[1] / "golden" / "basic.jsonl"
    return [parse_line(line) for line in golden.read_bytes().splitlines() if line.strip()]


def test_state_store_over_tls_with_the_password_from_a_file(tls: Tls, tls_redis: int, password_file: Path) -> None:
    import redis

    from streams.redis.state import RedisState
    from streams.security import redis_connection_kwargs

    url = f"rediss://127.0.0.1:{tls_redis}/0"
    settings = settings_for(
        {"CCMON_REDIS_URL": url, "CCMON_REDIS_CA_FILE": str(tls.ca), "CCMON_REDIS_PASSWORD_FILE": str(password_file)}
    )
    assert settings.redis_password == PASSWORD and settings.redacted()["redis_password"] == "***"
    # The server really wants TLS and the password.
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(f"redis://127.0.0.1:{tls_redis}/0", password=PASSWORD, socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url, ssl_ca_certs=str(tls.ca)).ping()

    config = Config()
    state = RedisState.from_url(
        settings.redis_url, config, prefix="tls", clock=lambda: AT_EPOCH, connection=redis_connection_kwargs(settings)
    )
    assert getattr(state.client, "connection_pool").connection_class.__name__ == "SSLConnection"  # noqa: B009
    engine = Engine(config, state)
    memory = MemoryState()
    reference = Engine(config, memory)
    events = golden_events()
    with state.batch():
        for event in events:
            engine.process(event, AT_EPOCH)
    for event in events:
        reference.process(event, AT_EPOCH)
    assert flatten(snapshot(config, state, AT_EPOCH)) == flatten(snapshot(config, memory, AT_EPOCH))
    state.client.close()


def test_worker_and_exporter_over_tls(
    tls: Tls,
    tls_redis: int,
    password_file: Path,
    kafka_bootstrap: str,
    golden_lines: list[bytes],
    golden_expected: dict[Any, float],
    tmp_path: Path,
) -> None:
    import kafka

    run = uuid.uuid4().hex[:8]
    topic, dlq, group, prefix = f"sec-tls-{run}", f"sec-tls-{run}-dlq", f"sec-tls-{run}", f"tls-{run}"
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for line in golden_lines:
        producer.send(topic, value=line)
    producer.flush(30)
    producer.close()

    url = f"rediss://127.0.0.1:{tls_redis}/0"
    redis_flags = {"redis": url, "redis_prefix": prefix}
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "exporter")}
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def tail() -> str:
        return "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}" for name, path in logs.items())

    kafka_flags = {"kafka": kafka_bootstrap, "topic": topic, "dlq_topic": dlq, "group": group}
    worker_args = cli_args(
        "worker", **kafka_flags, web_port=0, batch_within="0.1", redis_ca_file=tls.ca, at=AT_EPOCH, **redis_flags
    )
    exporter_args = cli_args(
        "exporter", host="127.0.0.1", port=port, redis_password_file=password_file, at=AT_EPOCH, **redis_flags
    )
    try:
        with logs["worker"].open("wb") as out:  # CA by flag, password from the environment
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", *worker_args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                    env=clean_environ() | {"CCMON_REDIS_PASSWORD": PASSWORD},
                )
            )
        with logs["exporter"].open("wb") as out:  # CA from the environment, password file by flag
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", *exporter_args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                    env=clean_environ() | {"CCMON_REDIS_CA_FILE": str(tls.ca)},
                )
            )
        got: dict[Any, float] = {}
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), f"a process exited:\n{tail()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    got = samples_of(response.read().decode())
            except OSError:
                time.sleep(0.5)
                continue
            if sum(v for (name, _), v in got.items() if name == "ccmon_events_total") >= len(golden_lines):
                break
            time.sleep(1.0)
        else:
            pytest.fail(f"the events did not arrive within 45 s:\n{tail()}")
        for (name, labels), value in golden_expected.items():
            key = (name, tuple(sorted(labels)))
            assert got.get(key) == pytest.approx(value, rel=1e-12), key
    finally:
        for process in processes:
            stop(process)
        try:
            admin = kafka.KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            admin.delete_topics([topic, dlq])
            admin.close()
        except Exception:  # best effort: the topics are unique to this run
            pass
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        assert PASSWORD not in text, f"the Redis password leaked into the {name} log"
        assert "Traceback" not in text, text


def test_an_untrusted_server_certificate_fails_clearly(tls: Tls, tls_redis: int, tmp_path: Path) -> None:
    import redis

    from streams.redis.state import RedisState
    from streams.security import redis_connection_kwargs

    url = f"rediss://127.0.0.1:{tls_redis}/0"
    settings = settings_for(
        {"CCMON_REDIS_URL": url, "CCMON_REDIS_CA_FILE": str(tls.other_ca), "CCMON_REDIS_PASSWORD": PASSWORD}
    )
    state = RedisState.from_url(url, Config(), connection=redis_connection_kwargs(settings))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        state.client.ping()

    port = free_port()
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        exporter = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "exporter",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--redis",
                url,
                "--redis-ca-file",
                str(tls.other_ca),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=clean_environ() | {"CCMON_REDIS_PASSWORD": PASSWORD},
        )
    status = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and status is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
                status = 200
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                assert exporter.poll() is None, log.read_text()
                time.sleep(0.3)
    finally:
        stop(exporter)
    text = log.read_text()
    assert status == 503, text
    assert "certificate verify failed" in text
    assert "check --redis-ca-file or CCMON_REDIS_CA_FILE" in text
    assert "Traceback" not in text and PASSWORD not in text


def test_mutual_tls(tls: Tls, mtls_redis: int) -> None:
    import redis

    from streams.redis.state import RedisState
    from streams.security import redis_connection_kwargs

    url = f"rediss://127.0.0.1:{mtls_redis}/0"
    without = settings_for({"CCMON_REDIS_URL": url, "CCMON_REDIS_CA_FILE": str(tls.ca)})
    with pytest.raises(redis.ConnectionError):  # the server asks for a certificate we do not have
        RedisState.from_url(url, Config(), connection=redis_connection_kwargs(without)).client.ping()

    settings = settings_for(
        {
            "CCMON_REDIS_URL": url,
            "CCMON_REDIS_CA_FILE": str(tls.ca),
            "CCMON_REDIS_CERT_FILE": str(tls.client_cert),
            "CCMON_REDIS_KEY_FILE": str(tls.client_key),
        }
    )
    state = RedisState.from_url(
        url, Config(), prefix="mtls", clock=lambda: AT_EPOCH, connection=redis_connection_kwargs(settings)
    )
    assert state.client.ping()
    engine = Engine(Config(), state)
    with state.batch():
        for event in golden_events():
            engine.process(event, AT_EPOCH)
    offered = {
        dict(labels).get("window"): value
        for (name, labels), value in flatten(snapshot(Config(), state, AT_EPOCH)).items()
        if name == "ccmon_calls_offered" and dict(labels).get("queue") == "support"
    }
    assert offered["1h"] == 10  # the golden value, written and read over mutual TLS
    state.client.close()
