"""The commands that take a setting or two without the whole Settings (simulate, source, replay,
report, demo) find it as the worker does (streams.settings.lookup): the flag, else the first
environment variable set, an empty one being unset, else the default."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streams.cli import build_parser, main
from streams.settings import lookup


def test_lookup_names_where_the_value_came_from() -> None:
    env = {"CCMON_ALERTMANAGER_URL": "http://am:9093"}
    assert lookup("alertmanager_url", argparse.Namespace(alertmanager_url=None), env) == (
        "http://am:9093",
        "CCMON_ALERTMANAGER_URL",
    )
    flag = argparse.Namespace(alertmanager_url="http://other:9093")
    assert lookup("alertmanager_url", flag, env) == ("http://other:9093", "--alertmanager-url")
    assert lookup("events_topic", None, {"CCMON_EVENTS_TOPIC": ""}) == ("ccmon.events", "events_topic")
    assert lookup("kafka_bootstrap", None, {"KAFKA_BOOTSTRAP": "k:9092"}) == ("k:9092", "KAFKA_BOOTSTRAP")


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate"],
        ["source", "cdr", "x.csv", "--mapping", "m.toml"],
        ["report", "--from", "0", "--to", "900", "--interval", "15m"],
    ],
)
def test_the_topic_comes_from_the_environment_and_an_empty_variable_is_unset(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCMON_EVENTS_TOPIC", "calls.events")
    assert build_parser().parse_args(argv).topic == "calls.events"
    monkeypatch.setenv("CCMON_EVENTS_TOPIC", "")
    assert build_parser().parse_args(argv).topic == "ccmon.events"


def test_an_empty_ccmon_config_means_the_built_in_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id": "e1", "type": "call.offered", "ts": "2026-11-20T09:00:00Z", '
        '"tenant": "default", "queue": "support", "call_id": "c1"}\n'
    )
    monkeypatch.setenv("CCMON_CONFIG", "")
    assert main(["replay", str(events), "--at", "2026-11-20T09:05:00Z", "--quiet"]) == 0
    assert 'ccmon_calls_offered_total{tenant="default",queue="support"} 1' in capsys.readouterr().out
