"""The integration tests' command lines: :func:`harness.pipeline.cli_args` and the
:class:`~harness.pipeline.Pipeline` methods built on it spell the flags the CLI parses."""

from __future__ import annotations

from pathlib import Path

from harness.pipeline import Pipeline, cli_args

from streams.cli import build_parser


def test_cli_args_turns_keywords_into_flags_then_the_clock_then_the_extra_arguments() -> None:
    args = cli_args("worker", "--web-port", "0", at=1700000000.0, batch_size=5, redis_ca_file=Path("/ca.pem"))
    assert args == [
        "worker",
        "--batch-size",
        "5",
        "--redis-ca-file",
        "/ca.pem",
        "--clock",
        "fixed:1700000000.0",
        "--web-port",
        "0",
    ]
    assert cli_args("exporter", port=9464) == ["exporter", "--port", "9464"]  # no clock unless given


def test_pipeline_args_name_the_runs_own_topics_group_redis_and_port(tmp_path: Path) -> None:
    p = Pipeline("127.0.0.1:9092", "redis://127.0.0.1:6379/0", tmp_path)
    worker = p.worker_args(at="60", batch_within="0.1")
    assert worker == [
        "worker",
        "--kafka",
        "127.0.0.1:9092",
        "--topic",
        p.topic,
        "--dlq-topic",
        p.dlq,
        "--group",
        p.group,
        "--redis",
        "redis://127.0.0.1:6379/0",
        "--redis-prefix",
        p.prefix,
        "--batch-within",
        "0.1",
        "--clock",
        "fixed:60",
    ]
    exporter = p.exporter_args(redis_url="redis://other:6379/1", host="127.0.0.1")
    assert exporter == [
        "exporter",
        "--port",
        str(p.port),
        "--redis",
        "redis://other:6379/1",
        "--redis-prefix",
        p.prefix,
        "--host",
        "127.0.0.1",
    ]
    rebuild = p.rebuild_args("--json", at="60")
    assert rebuild == [
        "rebuild",
        "--kafka",
        "127.0.0.1:9092",
        "--topic",
        p.topic,
        "--group",
        p.group,
        "--redis",
        "redis://127.0.0.1:6379/0",
        "--redis-prefix",
        p.prefix,
        "--clock",
        "fixed:60",
        "--json",
    ]
    parser = build_parser()
    for args in (worker, exporter, rebuild):
        parsed = parser.parse_args(args)
        assert parsed.redis_prefix == p.prefix
