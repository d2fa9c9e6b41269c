"""streams.logs: ``--log-format json`` gives one JSON object per line with ts, level, logger,
message, the exception text and the ``extra=`` fields; a bad value names its flag or variable."""

from __future__ import annotations

import argparse
import io
import json
import logging
import logging.config
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from harness.paths import REPO

from kpi_core.errors import ConfigError
from streams import logs
from streams import settings as s

ROOT = REPO
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("ccmon.test_logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, stream
    log.removeHandler(handler)
    log.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_is_one_json_line_with_the_fields(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.warning("queue %s: %d waiting", "support", 3)
    (doc,) = lines(stream)
    assert list(doc)[:4] == ["ts", "level", "logger", "message"]
    assert doc["level"] == "WARNING" and doc["logger"] == "ccmon.test_logs"
    assert doc["message"] == "queue support: 3 waiting"
    assert isinstance(doc["ts"], str) and TS.match(doc["ts"])
    assert "exc" not in doc


def test_ts_is_rfc3339_utc_with_milliseconds() -> None:
    assert logs.rfc3339(1795168800.0) == "2026-11-20T10:00:00.000Z"
    assert logs.rfc3339(1795168800.1239) == "2026-11-20T10:00:00.123Z"
    assert logs.rfc3339(1795168800.9999) == "2026-11-20T10:00:00.999Z"  # truncated, never the next second
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created = 1795168800.25
    assert json.loads(logs.JsonFormatter().format(record))["ts"] == "2026-11-20T10:00:00.250Z"


def test_exception_text_and_multi_line_messages_stay_on_one_line(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("batch failed\nsecond line")
    log.info("stack", stack_info=True)
    assert stream.getvalue().count("\n") == 2
    failed, stack = lines(stream)
    assert failed["level"] == "ERROR" and failed["message"] == "batch failed\nsecond line"
    assert isinstance(failed["exc"], str)
    assert failed["exc"].startswith("Traceback (most recent call last):")
    assert failed["exc"].endswith("ValueError: bad\nthing")
    assert isinstance(stack["stack"], str) and "test_exception_text" in stack["stack"]


def test_extra_fields_are_included_and_secret_named_ones_hidden(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.info(
        "applied",
        extra={
            "events": 12,
            "tenant": "acme",
            "partitions": [0, 3],
            "where": object,
            "redis_password": "hunter2",
            "api_token": "t0k",
            "lag": float("nan"),
        },
    )
    (doc,) = lines(stream)
    assert doc["events"] == 12 and doc["tenant"] == "acme" and doc["partitions"] == [0, 3]
    assert doc["where"] == str(object)  # not JSON: its str()
    assert doc["redis_password"] == "***" and doc["api_token"] == "***"
    assert doc["lag"] == "nan"  # NaN is not JSON
    assert "hunter2" not in stream.getvalue() and "t0k" not in stream.getvalue()
    assert not {"args", "msg", "levelno", "pathname", "exc_info", "taskName"} & set(doc)


def test_settings_log_format_flag_environment_default() -> None:
    def parse(argv: list[str], env: dict[str, str]) -> s.Settings:
        parser = argparse.ArgumentParser()
        s.add_arguments(parser, ("log_level", "log_format"))
        return s.from_args(parser.parse_args(argv), env)

    assert parse([], {}).log_format == "text"
    assert parse([], {"CCMON_LOG_FORMAT": "JSON"}).log_format == "json"
    assert parse(["--log-format", "text"], {"CCMON_LOG_FORMAT": "json"}).log_format == "text"
    with pytest.raises(ConfigError) as info:
        parse(["--log-format", "yaml"], {})
    assert info.value.field == "--log-format"
    assert str(info.value) == "config field '--log-format': must be one of text, json, got 'yaml'"
    with pytest.raises(ConfigError) as info:
        parse([], {"CCMON_LOG_FORMAT": "xml"})
    assert info.value.field == "CCMON_LOG_FORMAT"


def test_format_from_for_commands_without_settings() -> None:
    parser = argparse.ArgumentParser()
    logs.add_format_argument(parser)
    assert logs.format_from(parser.parse_args([]), {}) == "text"
    assert logs.format_from(parser.parse_args([]), {"CCMON_LOG_FORMAT": "json"}) == "json"
    assert logs.format_from(parser.parse_args(["--log-format", "Text"]), {"CCMON_LOG_FORMAT": "json"}) == "text"
    with pytest.raises(ConfigError, match=r"'CCMON_LOG_FORMAT': must be one of text, json, got 'logfmt'"):
        logs.format_from(parser.parse_args([]), {"CCMON_LOG_FORMAT": "logfmt"})


def test_faust_logging_config_installs_the_json_formatter() -> None:
    assert logs.faust_logging_config("INFO", "text") is None  # Faust's own handlers, as before
    config = logs.faust_logging_config("INFO", "json")
    assert config is not None
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    kept = logging.getLogger("ccmon.test_logs.kept")
    try:
        logging.config.dictConfig(config)  # what mode.utils.logging does with it
        (handler,) = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter)
        assert root.level == logging.INFO
        assert not kept.disabled  # the loggers that exist already (ccmon.worker) keep logging
        assert logs.is_json()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CCMON_CUSTOMER_KEY_SECRET"}
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_json_logs_warnings_and_uncaught_exceptions_as_json_lines() -> None:
    result = run_python(
        "import threading, warnings\n"
        "from streams import logs\n"
        "logs.configure('INFO', 'json')\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='t1'); t.start(); t.join()\n"
        "warnings.warn('careful')\n"
        "raise RuntimeError('boom')\n"
    )
    assert result.returncode == 1 and result.stdout == ""
    thread, warning, uncaught = [json.loads(line) for line in result.stderr.splitlines()]
    assert (
        thread["level"] == "CRITICAL"
        and thread["message"] == "uncaught ZeroDivisionError in thread t1: division by zero"
    )
    assert isinstance(thread["exc"], str) and thread["exc"].endswith("ZeroDivisionError: division by zero")
    assert warning["logger"] == "py.warnings" and "UserWarning: careful" in str(warning["message"])
    assert uncaught["message"] == "uncaught RuntimeError: boom"
    assert isinstance(uncaught["exc"], str) and uncaught["exc"].endswith("RuntimeError: boom")


@pytest.mark.slow
def test_a_command_error_after_the_logs_are_set_up_is_a_json_line_too() -> None:
    # No customer key secret: the worker fails after setting up its logging (no Kafka reached).
    result = run_python("", "-m", "streams.cli", "worker", "--web-port", "0", env={"CCMON_LOG_FORMAT": "json"})
    assert result.returncode == 2
    (doc,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert doc["level"] == "ERROR" and doc["logger"] == "ccmon"
    assert str(doc["message"]).startswith("ccmon worker: config field 'CCMON_CUSTOMER_KEY_SECRET or ")
    # Text: the same one line as always.
    result = run_python("", "-m", "streams.cli", "worker", "--web-port", "0")
    assert result.returncode == 2 and result.stderr == f"{doc['message']}\n"
