"""``ccmon report``: interval reports whose figures are the snapshot's for a window of the
interval's length at each interval's end (streams/cli/report.py, docs/REPORTS.md)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.bank import BANK, MAPPING, ZONE, raw_figures, row_times
from harness.paths import REPO

from kpi_core.config import Config, config_from_dict
from kpi_core.events import parse_event
from kpi_core.kpis import flatten
from streams.cli import main
from streams.cli.replay import replay
from streams.cli.report import (
    BACKLOG_COLUMNS,
    COLUMNS,
    ReportResult,
    build_report,
    make_plan,
    render_csv,
    render_html,
    render_json,
)
from streams.sources.cdr import load_mapping, map_file

GOLDEN = REPO / "tests" / "golden" / "basic.jsonl"
START = 1795165200  # 2026-11-20T09:00:00Z, the golden file's first event


def report_of(
    events: list[dict[str, Any]], config: Config, start: float, end: float, interval: str, **kwargs: Any
) -> ReportResult:
    items = ((f"event {i}", parse_event(e)) for i, e in enumerate(events))
    return build_report(items, config, make_plan(start, end, interval), **kwargs)


def golden_events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in GOLDEN.read_text().splitlines() if line.strip()]


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(["report", *args])
    finally:
        sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


# -- the real data: every half hour equals the raw rows ---------------------------------------
@pytest.mark.parametrize(
    ("month", "first_day"), [("january", datetime(1999, 1, 4)), ("october", datetime(1999, 10, 10))]
)
@pytest.mark.realdata
def test_every_half_hour_of_the_bank_days_equals_the_raw_rows(month: str, first_day: datetime, tmp_path: Path) -> None:
    """Two days of each month (the rows of those dates; both have calls answered after
    midnight): every half hour and service type, offered, answered, abandoned, ASA, AHT and
    service level at 20 s equal the figures computed here from the raw rows by the rules of
    docs/sources/cdr.md."""
    n_days = 2
    if os.environ.get("CCMON_REPORT_ALL_DAYS"):  # the whole month (~25 s a month): run by hand, docs/REPORTS.md
        first_day, n_days = first_day.replace(day=1), 31
    dates = {(first_day + timedelta(days=d)).strftime("%y%m%d") for d in range(n_days)}
    rows = BANK[month].read_text().splitlines(keepends=True)
    date_column = rows[0].rstrip("\n").split("\t").index("date")
    days = tmp_path / f"{month}.txt"
    days.write_text("".join([rows[0], *(r for r in rows[1:] if r.split("\t")[date_column] in dates)]))
    start = first_day.replace(tzinfo=ZONE).timestamp()
    end = start + (n_days + 1) * 86400  # and the next day, for the calls that crossed midnight
    events = map_file(str(days), load_mapping(MAPPING))
    config = config_from_dict({"tenants": {"default": {"timezone": "Asia/Jerusalem"}}})
    result = report_of(events, config, start, end, "30m", per_agent=True)  # queue rows and agent rows
    got = {
        (str(int(row.end)), row.queue): row.values for row in result.rows if row.queue != "_all" and row.agent is None
    }

    def period(moment: datetime) -> str:
        ts = moment.replace(tzinfo=ZONE).timestamp()
        return str(int((ts // 1800 + 1) * 1800))

    want = {
        key: figures
        for key, figures in raw_figures(days, period).items()
        if start < int(key[0]) <= end and any(figures.values())
    }
    assert len(want) > 250
    assert set(got) == set(want)  # a row exactly for each half hour and service type with traffic
    names = {
        "ccmon_calls_offered": "calls_offered",
        "ccmon_calls_answered": "calls_answered",
        "ccmon_calls_abandoned": "calls_abandoned",
        "ccmon_average_speed_of_answer_seconds": "asa_seconds",
        "ccmon_average_handle_time_seconds": "aht_seconds",
        "ccmon_service_level_ratio": "service_level",
    }
    for key, figures in want.items():
        for metric, column in names.items():
            if metric in figures:
                assert got[key][column] == pytest.approx(figures[metric], rel=1e-12, abs=1e-9), (key, column)
            else:
                assert got[key][column] in (None, 0.0), (key, column)
    # The tenant's _all row sums its queues.
    totals: dict[str, float] = {}
    for (end_text, _queue), values in got.items():
        totals[end_text] = totals.get(end_text, 0.0) + (values["calls_offered"] or 0.0)
    for row in result.rows:
        if row.queue == "_all" and row.agent is None:
            assert row.values["calls_offered"] == totals.get(str(int(row.end)), 0.0)
    assert result.rejected == {}
    # --per-agent: calls answered per half hour, service type and agent (the `server` column),
    # and their mean wait, equal the raw rows too.
    got_agents = {
        (int(row.end), row.queue, row.agent): row.values
        for row in result.rows
        if row.agent is not None and row.values["calls_answered"]
    }
    want_agents = raw_answered_by_agent(days)
    assert len(want_agents) > 700
    assert set(got_agents) == set(want_agents)
    for key, (answered, wait) in want_agents.items():
        assert got_agents[key]["calls_answered"] == answered, key
        assert got_agents[key]["asa_seconds"] == pytest.approx(wait / answered, rel=1e-12), key


def raw_answered_by_agent(path: Path) -> dict[tuple[int, str, str], tuple[int, float]]:
    """(UTC end of the half hour of ser_start, type, server) -> (answered, sum of waits), by the
    rules of raw_figures: AGENT rows with a service start, wait q_time (0 when never queued),
    a time more than 12 h before the previous one of the row is on the next day; the
    data's NO_SERVER is the mapping's agent "unknown"."""
    out: dict[tuple[int, str, str], tuple[int, float]] = {}
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    header = rows[0]
    for values in rows[1:]:
        r = dict(zip(header, values, strict=True))
        if r["outcome"] != "AGENT" or r["ser_start"] == "0:00:00":
            continue
        clock = row_times(r, ("vru_entry", "q_start", "q_exit", "ser_start"))
        assert "ser_start" in clock
        last = clock["ser_start"]
        end = int((last.replace(tzinfo=ZONE).timestamp() // 1800 + 1) * 1800)
        key = (end, r["type"], "unknown" if r["server"] == "NO_SERVER" else r["server"])
        answered, waits = out.get(key, (0, 0.0))
        out[key] = (answered + 1, waits + (float(r["q_time"]) if r["q_start"] != "0:00:00" else 0.0))
    return out


# -- the same figures as /metrics --------------------------------------------------------------
def test_each_row_is_the_snapshot_of_a_window_of_the_interval_at_its_end() -> None:
    """Every figure of every row equals what ``ccmon replay --at END`` exports for a window of
    the interval's length (with ``today`` too, so that replay keeps the morning's events)."""
    config = config_from_dict({"engine": {"windows": ["15m", "today"]}})
    result = report_of(golden_events(), config, START, START + 4 * 900, "15m")
    rows = {(row.end, row.queue): row for row in result.rows}
    assert len(rows) >= 4
    for end in (START + 900, START + 1800, START + 2700, START + 3600):
        exported = flatten(replay(str(GOLDEN), config, end).families)
        for queue in ("support", "_all"):
            want = {
                column: exported.get((metric, (("tenant", "default"), ("queue", queue), ("window", "15m"))))
                for column, metric in COLUMNS
            }
            row = rows.get((end, queue))
            if not any(want.values()):
                assert row is None, (end, queue)
                continue
            assert row is not None, (end, queue)
            want.update(
                {
                    column: exported.get((metric, (("tenant", "default"), ("queue", queue))))
                    for column, metric in BACKLOG_COLUMNS
                }
            )
            assert row.values == want, (end, queue)


def test_file_order_does_not_matter() -> None:
    events = golden_events()
    config = Config()
    ordered = report_of(events, config, START, START + 7200, "30m")
    random.Random(7).shuffle(events)
    shuffled = report_of(events, config, START, START + 7200, "30m")
    assert [(r.end, r.queue, r.values) for r in shuffled.rows] == [(r.end, r.queue, r.values) for r in ordered.rows]
    assert len(ordered.rows) == 4


def test_an_event_hours_out_of_order_counts_in_its_interval() -> None:
    """A call-record export is sorted by line, not time: an event read hours after newer ones
    still counts in its own interval, and in no earlier one."""
    config = config_from_dict({"engine": {"windows": ["15m"], "repeat_caller_seconds": 600}})
    events = [
        {"event_id": "o1", "type": "call.offered", "ts": START + 60, "queue": "q", "call_id": "c1"},
        {"event_id": "o2", "type": "call.offered", "ts": START + 2 * 86400, "queue": "q", "call_id": "c2"},
        {"event_id": "o3", "type": "call.offered", "ts": START + 100, "queue": "q", "call_id": "c3"},
        {"event_id": "a3", "type": "call.answered", "ts": START + 3700, "queue": "q", "call_id": "c3", "agent_id": "x"},
    ]
    result = report_of(events, config, START, START + 3 * 86400, "1h")
    rows = {(row.end, row.queue): row.values for row in result.rows}
    assert rows[(START + 3600, "q")]["calls_offered"] == 2
    assert rows[(START + 7200, "q")]["calls_answered"] == 1 and rows[(START + 7200, "q")]["asa_seconds"] == 3600
    assert rows[(START + 2 * 86400 + 3600, "q")]["calls_offered"] == 1
    assert len(rows) == 6 and result.rejected == {}


def test_a_ticket_opened_days_before_keeps_its_resolution_time() -> None:
    """Events before --from are applied: a ticket created three days before the interval and
    resolved in it has its resolution time (a replay at the interval's end cuts it off)."""
    config = Config()
    events = [
        {"event_id": "t1", "type": "ticket.created", "ts": START - 3 * 86400, "queue": "desk", "ticket_id": "T"},
        {
            "event_id": "t2",
            "type": "ticket.resolved",
            "ts": START + 600,
            "queue": "desk",
            "ticket_id": "T",
            "resolution": "solved",
        },
    ]
    result = report_of(events, config, START, START + 3600, "1h")
    (row, _total) = result.rows
    assert row.queue == "desk" and row.values["tickets_resolved"] == 1
    assert row.values["ticket_resolution_seconds"] == 3 * 86400 + 600
    assert row.values["tickets_created"] == 0 and row.values["calls_offered"] == 0
    assert row.values["tickets_open"] == 0


def test_the_backlog_at_each_end_carries_entities_opened_days_before() -> None:
    """A ticket opened three days before --from and a callback requested two days before are
    still open at every interval's end: the backlog columns show them with their ages, as the
    live system would at that instant."""
    events = [
        {"event_id": "t1", "type": "ticket.created", "ts": START - 3 * 86400, "queue": "desk", "ticket_id": "T"},
        {
            "event_id": "b1",
            "type": "callback.requested",
            "ts": START - 2 * 86400,
            "queue": "desk",
            "callback_id": "B",
            "customer_id": "c9",
        },
        {"event_id": "o1", "type": "call.offered", "ts": START + 60, "queue": "desk", "call_id": "c1"},
        {"event_id": "o2", "type": "call.offered", "ts": START + 3660, "queue": "desk", "call_id": "c2"},
        {"event_id": "a2", "type": "callback.attempted", "ts": START + 3700, "callback_id": "B", "agent_id": "x"},
    ]
    result = report_of(events, Config(), START, START + 7200, "1h")
    first, second = (row.values for row in result.rows if row.queue == "desk")
    assert first["tickets_open"] == 1 and first["open_ticket_age_seconds"] == 3 * 86400 + 3600
    assert first["callbacks_pending"] == 1 and first["oldest_pending_callback_age_seconds"] == 2 * 86400 + 3600
    assert second["tickets_open"] == 1 and second["open_ticket_age_seconds"] == 3 * 86400 + 7200
    assert second["callbacks_pending"] == 0 and second["callbacks_made"] == 1


def test_a_day_interval_is_a_24_hour_window() -> None:
    events = golden_events()
    result = report_of(events, Config(), START - 9 * 3600, START + 15 * 3600, "1d")
    half = report_of(events, Config(), START - 9 * 3600, START + 15 * 3600, "1h")
    (day, _total) = result.rows
    assert day.values["calls_offered"] == sum(r.values["calls_offered"] or 0 for r in half.rows if r.queue == day.queue)
    assert day.values["calls_offered"] == 10


# -- output ------------------------------------------------------------------------------------
def test_csv_columns_rows_with_traffic_and_empty_undefined_values(tmp_path: Path) -> None:
    code, out, err = cli(
        str(GOLDEN), "--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T11:00:00+00:00", "--interval", "30m"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split(",")[:12] == [
        "interval_start",
        "interval_end",
        "tenant",
        "queue",
        "calls_offered",
        "calls_answered",
        "calls_abandoned",
        "service_level",
        "asa_seconds",
        "abandon_rate",
        "aht_seconds",
        "callbacks_made",
    ]
    assert {
        "tickets_created",
        "tickets_resolved",
        "ticket_first_response_seconds",
        "csat_ratio",
        "nps_score",
        "ces_score",
    } <= set(lines[0].split(","))
    rows = [dict(zip(lines[0].split(","), line.split(","), strict=True)) for line in lines[1:]]
    assert [(r["interval_start"], r["queue"]) for r in rows] == [
        ("2026-11-20T09:00:00Z", "support"),
        ("2026-11-20T09:00:00Z", "_all"),
        ("2026-11-20T09:30:00Z", "support"),
        ("2026-11-20T09:30:00Z", "_all"),
    ]  # the 10:00 and 10:30 intervals had no traffic: no rows
    first, second = rows[0], rows[2]
    assert first["interval_end"] == "2026-11-20T09:30:00Z" and first["calls_offered"] == "10"
    assert float(first["service_level"]) == pytest.approx(4 / 7)
    assert second["calls_offered"] == "0" and second["asa_seconds"] == "" and second["service_level"] == ""
    assert second["tickets_resolved"] == "1"
    assert "4 intervals of 30m" in err and "48 applied" in err


def test_json_and_html_outputs(tmp_path: Path) -> None:
    result = report_of(golden_events(), Config(), START, START + 3600, "30m")
    out = io.StringIO()
    render_json(result, out)
    doc = json.loads(out.getvalue())
    assert doc["interval"] == "30m" and doc["from"] == "2026-11-20T09:00:00Z"
    assert doc["rows"][0]["calls_offered"] == 10 and doc["rows"][2]["asa_seconds"] is None
    page = tmp_path / "report.html"
    code, _out, err = cli(
        str(GOLDEN),
        "--from",
        str(START),
        "--to",
        str(START + 3600),
        "--interval",
        "30m",
        "--format",
        "html",
        "-o",
        str(page),
    )
    assert code == 0, err
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 2  # support and _all
    assert "<rect" in text and "<table>" in text
    assert text.count('<circle cx="') == 2  # the service level of the one interval that has one, per chart
    # Self-contained: no script, stylesheet or image fetched from anywhere.
    assert "<script" not in text and "<link" not in text and "src=" not in text
    assert text.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    csv_out = io.StringIO()
    render_csv(result, csv_out)
    html_out = io.StringIO()
    render_html(result, html_out)
    assert html_out.getvalue().count("<tr>") == csv_out.getvalue().count("\n")  # header + every row


def test_per_agent_rows() -> None:
    result = report_of(golden_events(), Config(), START, START + 3600, "1h", per_agent=True)
    agents = {row.agent: row.values for row in result.rows if row.agent is not None}
    queue_rows = [row for row in result.rows if row.agent is None]
    assert [row.queue for row in queue_rows] == ["support", "_all"]
    answered = sum(v["calls_answered"] or 0 for v in agents.values())
    assert answered == queue_rows[0].values["calls_answered"] == 6
    handled = {a: v for a, v in agents.items() if v["calls_handled"]}
    assert sum(v["calls_handled"] or 0 for v in handled.values()) > 0
    a0 = agents["a0"]
    assert a0["asa_seconds"] == 5.0  # g1 offered at :00, answered by a0 at :05
    code, out, _err = cli(
        str(GOLDEN), "--from", str(START), "--to", str(START + 3600), "--interval", "1h", "--per-agent"
    )
    assert code == 0 and out.splitlines()[0].split(",")[4] == "agent"
    assert any(line.split(",")[4] == "a0" for line in out.splitlines()[1:])


# -- errors, help, progress --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday", "--to", "2026-11-20T11:00:00Z", "--interval", "30m"], "--from: "),
        (["--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T11:00:00", "--interval", "30m"], "--to: "),
        (
            ["--from", "2026-11-20T09:00:30Z", "--to", "2026-11-20T11:00:00Z", "--interval", "30m"],
            "--from: must be a whole minute (intervals start and end on bucket boundaries), got 2026-11-20T09:00:30Z",
        ),
        (
            ["--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T09:00:00Z", "--interval", "30m"],
            "--to: must be after --from (2026-11-20T09:00:00Z), got 2026-11-20T09:00:00Z",
        ),
        (
            ["--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T10:10:00Z", "--interval", "30m"],
            "--to: must be a whole number of 30m intervals after --from (2026-11-20T09:00:00Z), got "
            "2026-11-20T10:10:00Z",
        ),
        (
            ["--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T11:00:00Z", "--interval", "20m"],
            "--interval: must be one of 15m, 30m, 1h, 1d, got '20m'",
        ),
        (
            ["--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T11:00:00Z", "--interval", "30m", "--format", "xls"],
            "--format: must be one of csv, json, html, got 'xls'",
        ),
    ],
)
def test_a_bad_flag_is_named_with_its_value(args: list[str], message: str) -> None:
    code, out, err = cli(str(GOLDEN), *args)
    assert code == 2 and out == ""
    assert err.startswith("ccmon report: ") and message in err, err
    if args[1] == "yesterday":
        assert "yesterday" in err


def test_file_or_kafka_and_unreadable_file(tmp_path: Path) -> None:
    flags = ["--from", str(START), "--to", str(START + 3600), "--interval", "1h"]
    code, _out, err = cli(*flags)
    assert code == 2 and "give either EVENTS.jsonl or --kafka BOOTSTRAP" in err
    code, _out, err = cli(str(GOLDEN), "--kafka", "127.0.0.1:1", *flags)
    assert code == 2 and "not both" in err
    code, _out, err = cli(str(tmp_path / "missing.jsonl"), *flags)
    assert code == 1 and "cannot read" in err and "missing.jsonl" in err


def test_help_and_progress(tmp_path: Path) -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert helped.returncode == 0
    assert "--interval" in helped.stdout and "--kafka" in helped.stdout and "--per-agent" in helped.stdout
    big = tmp_path / "big.jsonl"
    lines = GOLDEN.read_text().splitlines()
    with big.open("w") as handle:
        for copy in range(100):  # 4,800 lines: the meter shows at 4,096-line steps
            for line in lines:
                event = json.loads(line)
                for key in ("event_id", "call_id", "customer_id", "ticket_id", "callback_id", "contact_id"):
                    if key in event:
                        event[key] = f"{copy}-{event[key]}"
                handle.write(json.dumps(event) + "\n")
    code, _out, err = cli(str(big), "--from", str(START), "--to", str(START + 3600), "--interval", "1h", "--progress")
    assert code == 0 and "reading:" in err and "intervals: 100.0%" in err
    assert f"{100 * 48} applied" in err


def test_the_row_times_are_rfc3339_utc() -> None:
    result = report_of(golden_events(), Config(), START, START + 1800, "30m")
    out = io.StringIO()
    render_csv(result, out)
    start, end = out.getvalue().splitlines()[1].split(",")[:2]
    assert datetime.fromisoformat(start) == datetime.fromtimestamp(START).astimezone()
    assert datetime.fromisoformat(end) - datetime.fromisoformat(start) == timedelta(minutes=30)
    assert start.endswith("Z") and end.endswith("Z")
