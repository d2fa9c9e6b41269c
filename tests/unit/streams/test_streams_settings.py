"""streams.settings: flags over environment over defaults; errors name the source; secrets
never shown."""

from __future__ import annotations

import argparse

import pytest

from kpi_core.errors import ConfigError
from streams import settings as s


def parse(argv: list[str], env: dict[str, str] | None = None) -> s.Settings:
    parser = argparse.ArgumentParser()
    s.add_arguments(parser, tuple(s.SOURCES))
    return s.from_args(parser.parse_args(argv), env or {})


def test_defaults() -> None:
    settings = parse([])
    assert settings == s.Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert (settings.events_topic, settings.dlq_topic, settings.group_id) == ("ccmon.events", "ccmon.dlq", "ccmon")
    assert (settings.exporter_port, settings.worker_web_port) == (9108, 9109)
    assert (settings.batch_size, settings.batch_within) == (2000, 0.01)
    assert settings.fixed_time is None


def test_flag_beats_environment_beats_default() -> None:
    env = {
        "KAFKA_BOOTSTRAP": "k2:9092",
        "CCMON_KAFKA_BOOTSTRAP": "k1:9092",
        "REDIS_URL": "redis://r:1/2",
        "CCMON_BATCH_SIZE": "50",
    }
    settings = parse([], env)
    assert settings.kafka_bootstrap == "k1:9092"  # CCMON_ first
    assert settings.redis_url == "redis://r:1/2"
    assert settings.batch_size == 50
    settings = parse(["--kafka", "kafka://a:1,b:2", "--batch-size", "7"], env)
    assert settings.kafka_bootstrap == "a:1,b:2"
    assert settings.kafka_url == "kafka://a:1;b:2"
    assert settings.batch_size == 7


@pytest.mark.parametrize(
    ("argv", "env", "field"),
    [
        (["--batch-size", "0"], {}, "--batch-size"),
        ([], {"CCMON_BATCH_SIZE": "many"}, "CCMON_BATCH_SIZE"),
        ([], {"CCMON_BATCH_WITHIN": "-1"}, "CCMON_BATCH_WITHIN"),
        (["--port", "70000"], {}, "--port"),
        (["--kafka", "no-port"], {}, "--kafka"),
        ([], {"REDIS_URL": "http://x"}, "REDIS_URL"),
        (["--clock", "yesterday"], {}, "--clock"),
        (["--clock", "fixed:not-a-time"], {}, "--clock"),
        (["--topic", "bad topic"], {}, "--topic"),
        (["--redis-prefix", "a{b}"], {}, "--redis-prefix"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--offset-reset", "middle"], {}, "--offset-reset"),
    ],
)
def test_errors_name_the_flag_or_variable(argv: list[str], env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(argv, env)
    assert info.value.field == field


def test_fixed_clock() -> None:
    assert parse(["--clock", "fixed:1795168800"]).now() == 1795168800.0
    settings = parse(["--clock", "fixed:2026-11-20T10:00:00Z"])
    assert settings.fixed_time == 1795168800.0
    assert settings.make_clock()() == 1795168800.0


def test_secrets_are_redacted() -> None:
    settings = parse(["--redis", "redis://user:hunter2@redis.example:6380/1"])
    assert settings.redis_url == "redis://user:hunter2@redis.example:6380/1"
    assert settings.redacted()["redis_url"] == "redis://user:***@redis.example:6380/1"
    assert "hunter2" not in repr(settings)
    assert s.redact_url("redis://:pw@h/0") == "redis://:***@h/0"
    with pytest.raises(ConfigError) as info:
        parse(["--redis", "http://:hunter2@h/0"])
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "good", "bad", "rule"),
    [
        ("CCMON_BATCH_WITHIN", ("0.01", "60"), ("0", "60.5", "nan", "soon"), "must be a number of seconds in (0, 60]"),
        (
            "CCMON_KAFKA_SESSION_TIMEOUT",
            ("6", "300"),
            ("5.9", "301", "inf", "-6"),
            "must be a number of seconds in [6, 300]",
        ),
        (
            "CCMON_STUCK_PARTITION_SECONDS",
            ("0", "5", "3600"),
            ("4", "3601", "-1", "x"),
            "must be 0 (off) or a number of seconds in [5, 3600]",
        ),
        (
            "CCMON_REDIS_POLICY_RECHECK_SECONDS",
            ("1", "3600"),
            ("0", "0.5", "3601", "nan"),
            "must be a number of seconds in [1, 3600]",
        ),
    ],
)
def test_duration_settings_are_bounded_and_named_in_errors(
    variable: str, good: tuple[str, ...], bad: tuple[str, ...], rule: str
) -> None:
    for value in good:
        s.from_args(environ={variable: value})
    for value in bad:
        with pytest.raises(ConfigError) as caught:
            s.from_args(environ={variable: value})
        message = str(caught.value)
        assert variable in message and rule in message and repr(value) in message, message


def test_each_setting_is_one_row_giving_its_flag_variable_check_and_help() -> None:
    import dataclasses

    rows = s.ROWS
    assert list(rows) == [f.name for f in dataclasses.fields(s.Settings)] == list(s.SOURCES) and len(rows) > 40
    for name, row in rows.items():
        assert s.SOURCES[name] == (row.flag, row.env), name
        assert (row.flag == "") == (name in s.SECRETS), name  # a secret alone has no flag...
        assert bool(row.help) == bool(row.flag), name  # ...and no --help line
        assert row.env[0].startswith("CCMON_") and callable(row.check), name
        if name in s.SECRETS:
            assert rows[f"{name}_file"].env == (f"{row.env[0]}_FILE",), name  # its file's row
    flags = [row.flag for row in rows.values() if row.flag]
    variables = [var for row in rows.values() for var in row.env]
    assert len(flags) == len(set(flags)) and len(variables) == len(set(variables))
    # A row's check is what from_args applies: the value from the environment, checked and converted.
    assert rows["batch_size"].check(" 7 ") == 7 and s.from_args(None, {"CCMON_BATCH_SIZE": " 7 "}).batch_size == 7
    with pytest.raises(s.Invalid, match=r"^must be an integer in 1\.\.1000000, got 'x'$"):
        rows["batch_size"].check("x")
