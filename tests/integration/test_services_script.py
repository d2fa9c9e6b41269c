"""deploy/local/services.sh against the real Apache Kafka and Redis, on ports of its own so
it never disturbs the stack the other integration tests use."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from harness.kafka_topics import read_topic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local" / "services.sh"


@pytest.fixture
def script_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CCMON_SERVICES_DIR": str(tmp_path / "services"),
        "CCMON_KAFKA_PORT": "29192",
        "CCMON_KAFKA_CONTROLLER_PORT": "29193",
        "CCMON_REDIS_PORT": "26479",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180)


def test_up_status_env_roundtrip_down(script_env: dict[str, str]) -> None:
    import redis
    from kafka import KafkaProducer

    up = run(script_env, "up")
    try:
        assert up.returncode == 0, up.stderr
        assert "ready: KAFKA_BOOTSTRAP=127.0.0.1:29192" in up.stderr
        assert "kafka.log" in up.stderr  # says where the logs are
        assert run(script_env, "status").returncode == 0
        env_lines = run(script_env, "env").stdout.splitlines()
        assert env_lines == ["KAFKA_BOOTSTRAP=127.0.0.1:29192", "REDIS_URL=redis://127.0.0.1:26479/0"]

        topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
        producer = KafkaProducer(bootstrap_servers="127.0.0.1:29192")
        producer.send(topic, b"hello").get(timeout=30)
        producer.close()
        assert [m.value for m in read_topic("127.0.0.1:29192", topic, at_least=1, timeout=20)] == [b"hello"]
        assert redis.Redis.from_url("redis://127.0.0.1:26479/0").ping()

        again = run(script_env, "up")
        assert again.returncode == 0
        assert "already running" in again.stderr
    finally:
        down = run(script_env, "down")
    assert down.returncode == 0, down.stderr
    assert run(script_env, "status").returncode == 3


def test_second_fetch_downloads_nothing(script_env: dict[str, str]) -> None:
    assert run(script_env, "fetch").returncode == 0  # cached by the session's first `up`
    started = time.monotonic()
    second = run(script_env, "fetch")
    assert second.returncode == 0
    assert "cached" in second.stderr
    assert time.monotonic() - started < 2.0  # no maven run


def test_busy_port_is_a_clear_error(script_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {**script_env, "CCMON_REDIS_PORT": str(port), "CCMON_KAFKA_PORT": str(port)}
        result = run(env, "up")
    assert result.returncode != 0
    assert f"port {port} is in use" in result.stderr
    assert "CCMON_KAFKA_PORT" in result.stderr
