"""Redis AUTH on a real redis-server with `requirepass`: the pipeline's state store and the
exporter work with the password in the URL, a wrong password fails with a clear, redacted
message, and no password ever reaches the logs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.pipeline import cli_args
from harness.processes import free_port, stop

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_line, parse_ts
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pa55-word"
WRONG = "not-the-Pa55"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
AT = parse_ts("2026-11-20T10:00:00Z")


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (deploy/local/services.sh installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis-auth")
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        stop(process, timeout=10)


def start_exporter(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                *cli_args("exporter", port=port, redis=url, redis_prefix="auth", at=AT),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_state_and_exporter_with_auth(auth_redis: int, tmp_path: Path) -> None:
    import redis

    from streams.redis.state import RedisState

    url = f"redis://:{PASSWORD}@127.0.0.1:{auth_redis}/0"
    with pytest.raises(redis.AuthenticationError):  # the server really requires the password
        redis.Redis.from_url(f"redis://127.0.0.1:{auth_redis}/0").ping()

    config = Config()
    events = [parse_line(line) for line in (GOLDEN / "basic.jsonl").read_bytes().splitlines() if line.strip()]
    state = RedisState(redis.Redis.from_url(url), config, prefix="auth", clock=lambda: AT)
    engine = Engine(config, state)
    with state.batch():
        for event in events:
            engine.process(event, AT)
    memory = MemoryState()
    reference = Engine(config, memory)
    for event in events:
        reference.process(event, AT)
    assert flatten(snapshot(config, state, AT)) == flatten(snapshot(config, memory, AT))

    port = free_port()
    log = tmp_path / "exporter.log"
    exporter = start_exporter(url, port, log)
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        from prometheus_client.parser import text_string_to_metric_families

        offered = {
            (sample.labels.get("queue"), sample.labels.get("window")): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == "ccmon_calls_offered" and sample.labels.get("tenant") == "default"
        }
        assert offered[("support", "1h")] == 10  # the golden value, read through AUTH
    finally:
        exporter.terminate()
        exporter.wait(timeout=15)
    assert PASSWORD not in log.read_text()


def test_wrong_password_is_a_clear_redacted_error(auth_redis: int, tmp_path: Path) -> None:
    url = f"redis://:{WRONG}@127.0.0.1:{auth_redis}/0"
    port = free_port()
    log = tmp_path / "exporter.log"
    exporter = start_exporter(url, port, log)
    try:
        status = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                status = 200
                break
            except urllib.error.HTTPError as exc:
                status = exc.code
                break
            except (urllib.error.URLError, ConnectionError):
                if exporter.poll() is not None:
                    break
                time.sleep(0.3)
    finally:
        if exporter.poll() is None:
            exporter.terminate()
            exporter.wait(timeout=15)
    text = log.read_text()
    assert status != 200, "a wrong password must not serve metrics"
    assert WRONG not in text and PASSWORD not in text
    assert "Traceback" not in text
    assert "redis://:***@127.0.0.1" in text  # names the server, password redacted
    assert "invalid username-password pair" in text
