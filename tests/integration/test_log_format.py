"""``--log-format json`` end to end: the real ``ccmon worker`` (Faust, aiokafka and ccmon's own
lines) and ``ccmon exporter`` against the real Kafka and Redis write nothing but JSON objects,
one a line, with ts, level, logger and message, and never the customer key secret."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness.processes import free_port, stop

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def start(args: list[str], tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )
    return proc, out, err


def wait_for(what: str, check: Any, proc: subprocess.Popen[bytes], err: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {what}:\n{err.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout:.0f} s:\n{err.read_text()[-3000:]}")


def json_lines(*paths: Path) -> list[dict[str, Any]]:
    """Every line of the files, each a JSON object with the four fields (else the test fails)."""
    docs = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                doc = json.loads(line)
            except ValueError:
                pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
            assert isinstance(doc, dict), line
            assert TS.match(doc["ts"]), line
            assert doc["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
            assert isinstance(doc["logger"], str) and doc["logger"], line
            assert isinstance(doc["message"], str), line
            docs.append(doc)
    return docs


def test_worker_logs_json_lines_faust_included(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    name = f"test-logs-{uuid.uuid4().hex[:10]}"
    secret = os.environ["CCMON_CUSTOMER_KEY_SECRET"]
    proc, out, err = start(
        [
            "worker",
            "--log-format",
            "json",
            "--kafka",
            kafka_bootstrap,
            "--redis",
            redis_url,
            "--topic",
            f"{name}.events",
            "--dlq-topic",
            f"{name}.dlq",
            "--group",
            name,
            "--redis-prefix",
            redis_prefix,
            "--web-port",
            "0",
        ],
        tmp_path,
        {},
    )
    try:
        wait_for("'Worker: Ready' line", lambda: "[^Worker]: Ready" in err.read_text(), proc, err)
    finally:
        code = stop(proc, timeout=30)
    assert code == 0, err.read_text()[-3000:]
    docs = json_lines(out, err)
    loggers = {doc["logger"] for doc in docs}
    assert "ccmon.worker" in loggers and "faust.worker" in loggers  # Faust's own lines are JSON too
    assert any(logger.startswith("aiokafka") for logger in loggers)
    assert any(doc["message"].startswith("starting: {") for doc in docs if doc["logger"] == "ccmon.worker")
    assert any("Stopping" in doc["message"] for doc in docs)  # to the end, after SIGTERM
    assert secret not in out.read_text() + err.read_text()


def test_exporter_logs_json_lines(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    port = free_port()
    proc, out, err = start(
        ["exporter", "--port", str(port), "--redis", redis_url, "--redis-prefix", redis_prefix],
        tmp_path,
        {"CCMON_LOG_FORMAT": "json"},
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_for("/healthz", healthy, proc, err, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
    finally:
        code = stop(proc, timeout=30)
    assert code == 0, err.read_text()[-3000:]
    docs = json_lines(out, err)
    messages = [(doc["logger"], doc["message"]) for doc in docs]
    assert any(logger == "ccmon.exporter" and message.startswith("serving http://") for logger, message in messages)
    assert ("ccmon.exporter", "stopped") in messages


def test_bad_log_format_is_one_line_naming_the_field(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "exporter", "--log-format", "yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr == "ccmon exporter: config field '--log-format': must be one of text, json, got 'yaml'\n"


def test_demo_logs_json_lines(tmp_path: Path) -> None:
    port = free_port()
    proc, out, err = start(
        ["demo", "--log-format", "json", "--port", str(port), "--warmup", "10", "--pause-after", "1"], tmp_path, {}
    )
    try:
        wait_for("the wallboard line", lambda: "wallboard on" in err.read_text(), proc, err, timeout=60)
    finally:
        # One signal: a second could land after the demo restores its handlers, and kill it.
        code = stop(proc, signal.SIGINT, timeout=30)
    assert code == 0, err.read_text()[-3000:]
    assert out.read_text() == ""  # the banner is a log line now, on stderr
    messages = [doc["message"] for doc in json_lines(err) if doc["logger"] == "ccmon.demo"]
    assert (
        messages[0] == f"ccmon demo: wallboard on http://127.0.0.1:{port}/  (also http://127.0.0.1:{port}/metrics, "
        f"http://127.0.0.1:{port}/api/kpis)"
    )
    assert messages[-1] == "ccmon demo: stopped"


def test_source_asterisk_follow_logs_json_lines(tmp_path: Path) -> None:
    queue_log = tmp_path / "queue_log"
    queue_log.write_text("1795000000|c1|support|NONE|ENTERQUEUE||tel-0001|1\n")
    events = tmp_path / "events.jsonl"
    proc, out, err = start(
        ["source", "asterisk", str(queue_log), "--follow", "--poll", "0.1", "--out", str(events)],
        tmp_path,
        {"CCMON_LOG_FORMAT": "json"},
    )
    try:
        wait_for("the first event", lambda: events.exists() and events.read_text().count("\n") == 1, proc, err, 30)
        with queue_log.open("a") as handle:
            handle.write("not a queue_log line\n1795000005|c1|support|SIP/801|CONNECT|5|b1|2\n")
        wait_for("the CONNECT's events", lambda: events.read_text().count("\n") > 1, proc, err, 30)
    finally:
        code = stop(proc, timeout=30)
    assert code == 0, err.read_text()[-3000:]
    problem, summary = json_lines(out, err)
    assert problem["level"] == "WARNING" and problem["logger"] == "ccmon.source.asterisk"
    assert (problem["file"], problem["line"]) == (str(queue_log), 2)  # extra= fields
    assert str(problem["reason"]).startswith("too_few_fields")
    written = events.read_text().count("\n")
    assert summary["level"] == "INFO"
    assert (summary["rows"], summary["events"], summary["rows_not_mapped"]) == (3, written, 1)


def test_rebuild_logs_json_lines_its_error_included(
    kafka_bootstrap: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    name = f"test-logs-{uuid.uuid4().hex[:10]}"
    proc, out, err = start(
        [
            "rebuild",
            "--kafka",
            kafka_bootstrap,
            "--redis",
            redis_url,
            "--topic",
            f"{name}.events",
            "--group",
            name,
            "--redis-prefix",
            redis_prefix,
        ],
        tmp_path,
        {"CCMON_LOG_FORMAT": "json"},
    )
    assert proc.wait(120) == 2
    docs = json_lines(out, err)
    assert docs[-1]["level"] == "ERROR" and docs[-1]["logger"] == "ccmon"
    assert (
        docs[-1]["message"]
        == f"ccmon rebuild: topic '{name}.events' does not exist (or has no partitions) on this cluster"
    )
