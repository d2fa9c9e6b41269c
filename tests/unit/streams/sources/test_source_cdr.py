"""``ccmon source cdr`` with the shipped mapping on the real Anonymous Bank records
(tests/data/anonymous_bank_1999): daily offered, answered, abandoned, ASA, AHT and service
level at 20 s per service type, computed by the KPI engine from the imported events, equal
the same figures computed directly from the raw rows (tests/harness/bank.py; January and
October)."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.bank import BANK, MAPPING, NAMES, ZONE, raw_figures

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.errors import ConfigError
from kpi_core.events import parse_event
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.sources.cdr import load_mapping, map_file, mapping_from_dict
from streams.sources.common import Report


def engine_figures(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """The engine fed in time order, as a live worker would be; read at each local day's end."""
    config = config_from_dict({"tenants": {"default": {"timezone": "Asia/Jerusalem"}}})
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    out: dict[tuple[str, str], dict[str, float]] = {}

    def close(day: str) -> None:
        end = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=ZONE) + timedelta(days=1)
        for (name, labels), value in flatten(snapshot(config, store, end.timestamp() - 0.001)).items():
            d = dict(labels)
            if name in NAMES and d.get("window") == "today" and d.get("queue") != "_all":
                out.setdefault((day, d["queue"]), {})[name] = value

    current = None
    for event in sorted(events, key=lambda e: (e["ts"], e["event_id"])):
        day = datetime.fromtimestamp(event["ts"], ZONE).strftime("%Y-%m-%d")
        if current is not None and day != current:
            close(current)
        current = day
        assert engine.handle(parse_event(event), event["ts"]) == "accepted", event
    assert current is not None
    close(current)
    return out


@pytest.mark.parametrize("month", ["january", "october"])
@pytest.mark.realdata
def test_daily_figures_per_service_type_equal_the_raw_rows(month: str) -> None:
    path = BANK[month]
    report = Report("test", stream=io.StringIO())
    events = map_file(str(path), load_mapping(MAPPING), report=report)
    want = raw_figures(path)
    got = engine_figures(events)
    assert len(want) > 100
    for key, figures in want.items():
        for name, value in figures.items():
            assert got.get(key, {}).get(name, 0.0) == pytest.approx(value, rel=1e-12, abs=1e-9), (key, name)
    # Every row is accounted for: mapped, skipped as documented, or reported with its line.
    assert report.rows == sum(1 for _ in path.open(newline="")) - 1
    if month == "october":
        assert report.problems["wrong_field_count"] == 2  # the data's two 16-field rows


@pytest.mark.realdata
def test_clock_skew_is_not_a_new_day_but_midnight_is() -> None:
    """The switch's columns disagree by a second or two (ser_start before q_exit in ~10,000
    calls a month): such a call must stay on its day, while a service that really crosses
    midnight moves to the next. Checked on the raw clock: every answer lands within 10 minutes
    of queue entry + the switch's own wait (a day's shift would be 86,400 s off)."""
    events = map_file(str(BANK["october"]), load_mapping(MAPPING))
    offered = {e["call_id"]: e["ts"] for e in events if e["type"] == "call.offered"}
    answered = [e for e in events if e["type"] == "call.answered"]
    assert len(answered) > 30000
    worst = max(abs(e["ts"] - offered[e["call_id"]] - e["wait_seconds"]) for e in answered)
    assert worst < 600
    # AA0104 34391 on 991011: vru_entry 23:59:39, ser_start 0:00:04 -> answered on 12 October.
    crossing = [e for e in answered if e["call_id"].endswith("AA0104-34391")]
    assert [datetime.fromtimestamp(e["ts"], ZONE).isoformat() for e in crossing] == ["1999-10-12T00:00:04+02:00"]


@pytest.mark.realdata
def test_one_day_through_the_ccmon_replay_command(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "source",
            "cdr",
            "--mapping",
            str(MAPPING),
            str(BANK["january"]),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rows not mapped" in proc.stderr and ":11848: skipped: missing_field:answer" in proc.stderr
    day = tmp_path / "day.jsonl"
    start = datetime(1999, 1, 5, tzinfo=ZONE).timestamp()
    import json

    lines = [line for line in out.read_text().splitlines() if start <= json.loads(line)["ts"] < start + 86400]
    day.write_text("\n".join(lines) + "\n")
    config = tmp_path / "ccmon.toml"
    config.write_text('[tenants.default]\ntimezone = "Asia/Jerusalem"\n')
    at = datetime(1999, 1, 5, 23, 59, 59, tzinfo=ZONE).isoformat()
    replay = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", str(day), "--config", str(config), "--at", at],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    want = raw_figures(BANK["january"])[("1999-01-05", "PS")]
    printed = {}
    for line in replay.stdout.splitlines():
        if line.startswith("ccmon_calls_offered{") and 'queue="PS"' in line and 'window="today"' in line:
            printed["offered"] = float(line.rsplit(" ", 1)[1])
        if line.startswith("ccmon_service_level_ratio{") and 'queue="PS"' in line and 'window="today"' in line:
            printed["sl"] = float(line.rsplit(" ", 1)[1])
    assert printed["offered"] == want["ccmon_calls_offered"]
    assert printed["sl"] == pytest.approx(want["ccmon_service_level_ratio"], rel=1e-12)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"columns": {"queue": "t"}, "outcomes": {}}, "columns.call_id"),
        (
            {
                "columns": {"call_id": "a", "queue": "b", "date": "c", "queue_entry": "d", "outcome": "e", "qeue": "x"},
                "outcomes": {},
            },
            "columns.qeue",
        ),
        (
            {
                "columns": {"call_id": "a", "queue": "b", "date": "c", "queue_entry": "d", "outcome": "e"},
                "outcomes": {"AGENT": "served"},
            },
            "outcomes.AGENT",
        ),
        (
            {
                "file": {"timezone": "Mars/Olympus"},
                "columns": {"call_id": "a", "queue": "b", "date": "c", "queue_entry": "d", "outcome": "e"},
                "outcomes": {},
            },
            "file.timezone",
        ),
        (
            {
                "columns": {"call_id": "a", "queue": "b", "date": "c", "queue_entry": "d", "outcome": "e"},
                "outcomes": {"AGENT": "answered"},
            },
            "columns.answer",
        ),
    ],
)
def test_a_bad_mapping_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        mapping_from_dict(raw)
    assert exc.value.field == field
