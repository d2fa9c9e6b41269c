"""``ccmon source asterisk``: on the real PBXware queue_log (tests/data/pbxware_queue_log_2018)
the figures the KPI engine computes from the command's output equal the figures this test
derives directly from the raw rows, day by day; the classic pipe format event by event; table
exports; bad rows; following a file across rotation, truncation and restarts; and a Kafka
that does not take what was sent. No services: tests/integration has the Kafka tests."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest
from realdata import real_data

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.cli.replay import replay
from streams.sources import asterisk
from streams.sources.asterisk import Follower, Mapper, Position, map_file, parse_pipe_line
from streams.sources.common import DeliveryError

DATA = real_data("pbxware_queue_log_2018/queue_log.csv")
#: The log's `time` column is local time, 5 h behind its epoch `date_time` (checked below).
ZONE = timezone(timedelta(hours=-5))
ZONE_NAME = "Etc/GMT+5"
ENDED = ("COMPLETEAGENT", "COMPLETECALLER", "BLINDTRANSFER", "ATTENDEDTRANSFER")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "source", "asterisk", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def raw_rows() -> list[dict[str, str]]:
    with DATA.open(newline="") as handle:
        return list(csv.DictReader(handle))


def local_day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, ZONE).strftime("%Y-%m-%d")


def end_of(day: str) -> float:
    """The last whole minute of a local day (23:59): ``today`` is then the whole day (the log
    has nothing in the last minute of a day; every figure would show it)."""
    return (datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=ZONE) + timedelta(days=1)).timestamp() - 60


def test_the_zone_matches_the_logs_local_time_column() -> None:
    for row in raw_rows():  # the text column is rounded, the epoch truncated: within a second
        local = datetime.strptime(row["time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZONE).timestamp()
        assert abs(local - int(row["date_time"])) <= 1, row


def raw_figures(threshold: float) -> dict[str, dict[str, float]]:
    """Per local day, straight from the rows: the PBX's own hold times are the waits, its talk
    times the talk."""
    days: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for row in raw_rows():
        if row["queue_name"] != "IT":
            continue
        day, hold = days[local_day(int(row["date_time"]))], float(row["htime"])
        event = row["event"]
        if event == "ENTERQUEUE":
            day["offered"] += 1
        elif event == "CONNECT":
            day["answered"] += 1
            day["wait_sum"] += hold
            day["within"] += hold <= threshold
        elif event == "ABANDON":
            day["abandoned"] += 1
            day["short"] += hold < 5
        elif event in ("EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY"):
            day["timeout"] += 1
        elif event == "RINGNOANSWER":
            day["rings"] += 1
        elif event in ENDED:
            day["handled"] += 1
            day["talk_sum"] += float(row["ttime"])
            day["transfers"] += event.endswith("TRANSFER")
    out = {}
    for name, d in days.items():
        denominator = d["answered"] + d["abandoned"] - d["short"]
        out[name] = {
            "ccmon_calls_offered": d["offered"],
            "ccmon_calls_answered": d["answered"],
            "ccmon_calls_abandoned": d["abandoned"],
            "ccmon_calls_timed_out": d["timeout"],
            "ccmon_answered_wait_time_seconds": d["wait_sum"],
            "ccmon_agent_missed_rings": d["rings"],
            "ccmon_calls_handled": d["handled"],
            "ccmon_transfers_out": d["transfers"],
        }
        if d["answered"]:
            out[name]["ccmon_average_speed_of_answer_seconds"] = d["wait_sum"] / d["answered"]
        if d["handled"]:
            out[name]["ccmon_average_talk_time_seconds"] = d["talk_sum"] / d["handled"]
        if denominator:
            out[name]["ccmon_service_level_ratio"] = d["within"] / denominator
            out[name]["ccmon_abandon_rate_ratio"] = (d["abandoned"] - d["short"]) / denominator
    return out


def config(threshold: float) -> Any:
    return config_from_dict(
        {"tenants": {"default": {"timezone": ZONE_NAME, "queues": {"IT": {"sl_threshold_seconds": threshold}}}}}
    )


def today_in_it(families: Any) -> dict[str, float]:
    return {
        name: value
        for (name, labels), value in flatten(families).items()
        if dict(labels).get("queue") == "IT" and dict(labels).get("window") == "today"
    }


def engine_figures(events: list[dict[str, Any]], threshold: float) -> dict[str, dict[str, float]]:
    """The engine fed in time order as a live worker would be, read at the end of each local
    day (window ``today``)."""
    cfg = config(threshold)
    store = MemoryState(cfg.bucket_seconds, cfg.coarse_bucket_seconds)
    engine = Engine(cfg, store)
    per_day: dict[str, dict[str, float]] = {}
    day = None
    for event in sorted(events, key=lambda e: e["ts"]):
        event_day = local_day(event["ts"])
        if day is not None and event_day != day:
            per_day[day] = today_in_it(snapshot(cfg, store, end_of(day)))
        day = event_day
        assert engine.handle(parse_event(event), event["ts"]) in ("accepted", "duplicate")
    assert day is not None
    per_day[day] = today_in_it(snapshot(cfg, store, end_of(day)))
    return per_day


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], str]:
    """The real log through the command, to a JSONL file: (file, events, stderr)."""
    out = tmp_path_factory.mktemp("pbxware") / "events.jsonl"
    proc = cli(str(DATA), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    return out, events, proc.stderr


@pytest.mark.realdata
def test_every_row_is_mapped_or_skipped_by_name(imported: tuple[Path, list[dict[str, Any]], str]) -> None:
    _out, events, stderr = imported
    raw = raw_rows()
    skipped = Counter(r["event"] for r in raw if r["event"] in ("CONFIGRELOAD", "QUEUESTART"))
    assert skipped == {"CONFIGRELOAD": 11, "QUEUESTART": 7}
    assert (
        f"1,000 rows -> {len(events):,} events" in stderr
        and "0 rows not mapped" in stderr
        and "skipped CONFIGRELOAD: 11, QUEUESTART: 7" in stderr
    ), stderr
    for event in events:
        parse_event(event)  # every one is a valid canonical event
    # Ids repeat only where the log repeats a row verbatim (PBXware logs some OUTDIALs twice);
    # the engine counts such a repeat once.
    entry_fields = ("date_time", "callid", "queue_name", "type", "event", "param1", "param2", "param3")
    verbatim = Counter(
        tuple(r[k] for k in entry_fields) for r in raw if r["event"] == "OUTDIAL" and r["param1"].startswith("tel-")
    )
    repeats = sum(n - 1 for n in verbatim.values())
    assert len(events) - len({e["event_id"] for e in events}) == repeats == 8


@pytest.mark.parametrize("threshold", [20, 30, 60])
@pytest.mark.realdata
def test_daily_figures_equal_the_raw_rows(imported: tuple[Path, list[dict[str, Any]], str], threshold: int) -> None:
    out, events, _stderr = imported
    want = raw_figures(threshold)
    offered_days = sorted(day for day, figures in want.items() if figures["ccmon_calls_offered"])
    assert offered_days == ["2018-11-30", "2018-12-03", "2018-12-04"]  # the days with queue calls
    live = engine_figures(events, threshold)
    for day, figures in want.items():
        # As `ccmon replay FILE --at <end of the day>` computes it, from the file itself.
        replayed = today_in_it(replay(str(out), config(threshold), at=end_of(day)).families)
        for name, value in figures.items():
            assert live[day].get(name) == pytest.approx(value, rel=1e-12), (day, name, "live")
            assert replayed.get(name) == pytest.approx(value, rel=1e-12), (day, name, "replay")
    # The totals the docs quote (docs/sources/asterisk.md).
    totals = {
        k: sum(d.get(k, 0.0) for d in want.values())
        for k in (
            "ccmon_calls_offered",
            "ccmon_calls_answered",
            "ccmon_calls_abandoned",
            "ccmon_calls_timed_out",
            "ccmon_agent_missed_rings",
            "ccmon_calls_handled",
            "ccmon_transfers_out",
        )
    }
    assert totals == {
        "ccmon_calls_offered": 108,
        "ccmon_calls_answered": 93,
        "ccmon_calls_abandoned": 12,
        "ccmon_calls_timed_out": 1,
        "ccmon_agent_missed_rings": 360,
        "ccmon_calls_handled": 91,
        "ccmon_transfers_out": 2,
    }


@pytest.mark.realdata
def test_every_answered_calls_wait_is_the_pbx_hold_time(imported: tuple[Path, list[dict[str, Any]], str]) -> None:
    holds = {row["callid"]: float(row["htime"]) for row in raw_rows() if row["event"] == "CONNECT"}
    answered = {e["call_id"]: e["wait_seconds"] for e in imported[1] if e["type"] == "call.answered"}
    assert answered == holds and len(answered) == 93
    talks = {row["callid"]: float(row["ttime"]) for row in raw_rows() if row["event"] in ENDED}
    ended = {
        e["call_id"]: e["talk_seconds"] for e in imported[1] if e["type"] == "call.ended" and e["call_id"] in talks
    }
    assert ended == talks and len(ended) == 91


@pytest.mark.realdata
def test_callbacks_to_missed_callers_are_matched(imported: tuple[Path, list[dict[str, Any]], str]) -> None:
    """Walk each caller's timeline from the raw rows: a missed call (abandon, timeout) opens a
    callback; the caller's next answered inbound call closes it as recontacted, an agent's
    dial to that number as a callback made."""
    rows = sorted(raw_rows(), key=lambda r: (int(r["date_time"]), int(r["uid"])))
    caller_of = {r["callid"]: r["param1"] for r in rows if r["event"] == "ENTERQUEUE"}
    open_cb: set[str] = set()
    due = made = recontacted = 0
    for r in rows:
        event = r["event"]
        if event in ("ABANDON", "EXITWITHTIMEOUT") and r["param1"].startswith("tel-"):
            due += r["param1"] not in open_cb
            open_cb.add(r["param1"])
        elif event == "CONNECT" and caller_of.get(r["callid"], "") in open_cb:
            open_cb.discard(caller_of[r["callid"]])
            recontacted += 1
        elif event == "OUTDIAL" and r["param1"] in open_cb:
            open_cb.discard(r["param1"])
            made += 1
    per_day = engine_figures(imported[1], 20)
    got = {
        name: sum(day.get(name, 0.0) for day in per_day.values())
        for name in ("ccmon_callbacks_due", "ccmon_callbacks_made", "ccmon_callbacks_recontacted")
    }
    assert got == {"ccmon_callbacks_due": due, "ccmon_callbacks_made": made, "ccmon_callbacks_recontacted": recontacted}
    # In this excerpt (docs/sources/asterisk.md): 11 callbacks due from missed calls; 3 closed
    # by the caller calling again and being answered; none by an agent's dial (the one dial to a
    # missed caller came after that caller had been answered).
    assert (due, made, recontacted) == (11, 0, 3)
    pending = len(open_cb)
    assert pending == 8 == due - made - recontacted


# -- the classic file, event by event ------------------------------------------------------------
#: A timeline in Asterisk's own layouts (docs.asterisk.org, Queue Logs; app_queue.c): each line
#: and the events it must give, as (type, the fields that matter).
CLASSIC: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
    (
        "1700000000|NONE|sales|Local/1001@agents/n|ADDMEMBER|",
        [("agent.state", {"agent_id": "1001", "state": "available", "queues": ["sales"]})],
    ),
    (
        "1700000001|NONE|NONE|Agent/1001|AGENTLOGIN|SIP/1001",
        [("agent.state", {"agent_id": "1001", "state": "available", "queues": ["sales"]})],
    ),
    (
        "1700000010|c1|sales|NONE|ENTERQUEUE||+4915112345678|1",
        [("call.offered", {"call_id": "c1", "queue": "sales", "customer_id": "+4915112345678"})],
    ),
    (
        "1700000015|c1|sales|SIP/1001|RINGNOANSWER|4500",
        [("call.ring_no_answer", {"call_id": "c1", "agent_id": "1001", "ring_seconds": 4.5})],
    ),
    (
        "1700000030|c1|sales|SIP/1001|CONNECT|20|1700000025.5|3",
        [
            ("call.answered", {"call_id": "c1", "agent_id": "1001", "wait_seconds": 20.0}),
            ("agent.state", {"agent_id": "1001", "state": "on_call"}),
        ],
    ),
    ("1700000040|NONE|sales|SIP/1001|PAUSE|lunch", [("agent.state", {"agent_id": "1001", "state": "away"})]),
    (
        "1700000130|c1|sales|SIP/1001|COMPLETEAGENT|20|100|1",
        [
            ("call.ended", {"call_id": "c1", "talk_seconds": 100.0}),
            ("agent.state", {"agent_id": "1001", "state": "away"}),
        ],
    ),  # still paused
    ("1700000140|NONE|sales|SIP/1001|UNPAUSE|", [("agent.state", {"agent_id": "1001", "state": "available"})]),
    (
        "1700000200|c2|sales|NONE|ENTERQUEUE||0301234567|2",
        [("call.offered", {"call_id": "c2", "customer_id": "0301234567"})],
    ),
    (
        "1700000210|c2|sales|SIP/1001|CONNECT|10|x|2",
        [("call.answered", {"wait_seconds": 10.0}), ("agent.state", {"state": "on_call"})],
    ),
    (
        "1700000260|c2|sales|SIP/1001|TRANSFER|200|from-internal|10|50|2",  # Asterisk up to 11
        [
            ("call.ended", {"talk_seconds": 50.0}),
            ("call.transferred", {"call_id": "c2"}),
            ("agent.state", {"state": "available"}),
        ],
    ),
    (
        "1700000360|c3|sales|SIP/1001|ATTENDEDTRANSFER|LINK|PJSIP/a-1|PJSIP/b-2|5|55|1",
        [("call.ended", {"talk_seconds": 55.0}), ("call.transferred", {}), ("agent.state", {})],
    ),
    (
        "1700000470|c4|sales|SIP/1001|ATTENDEDTRANSFER|BRIDGE|6d0d4b02|5|65|1",
        [("call.ended", {"talk_seconds": 65.0}), ("call.transferred", {}), ("agent.state", {})],
    ),
    (
        "1700000480|c5|sales|SIP/1001|BLINDTRANSFER|201|from-internal|5|75|1",
        [("call.ended", {"talk_seconds": 75.0}), ("call.transferred", {}), ("agent.state", {})],
    ),
    ("1700000500|c6|sales|NONE|EXITEMPTY|1|1|12", [("call.timeout", {"call_id": "c6", "wait_seconds": 12.0})]),
    ("1700000501|c7|sales|NONE|EXITWITHTIMEOUT|1|1|300", [("call.timeout", {"wait_seconds": 300.0})]),
    ("1700000600|c8|sales|NONE|EXITWITHKEY|5|1|1|33", [("call.timeout", {"wait_seconds": 33.0})]),
    ("1700000700|c9|sales|NONE|ABANDON|1|1|4", [("call.abandoned", {"call_id": "c9", "wait_seconds": 4.0})]),
    ("1700000800|NONE|sales|SIP/1001|REMOVEMEMBER|", [("agent.state", {"state": "offline", "queues": None})]),
    ("1700000900|NONE|NONE|Agent/1001|AGENTLOGOFF|SIP/1001|900", [("agent.state", {"state": "offline"})]),
]


def test_classic_entries_map_as_asterisk_documents_them() -> None:
    mapper = Mapper()
    for number, (line, expected) in enumerate(CLASSIC, start=1):
        events = mapper.map(parse_pipe_line(line, number))
        got = [(e["type"], {k: e.get(k) for k in fields}) for e, (_, fields) in zip(events, expected, strict=False)]
        assert len(events) == len(expected) and got == expected, line
        for event in events:
            parse_event(event)
            assert event["ts"] == int(line.split("|")[0])
    every = [e for n, (line, _) in enumerate(CLASSIC, 1) for e in Mapper().map(parse_pipe_line(line, n))]
    assert len({e["event_id"] for e in every}) == len(every)  # one row, several events: distinct ids
    again = [e for n, (line, _) in enumerate(CLASSIC, 1) for e in Mapper().map(parse_pipe_line(line, n))]
    assert [e["event_id"] for e in again] == [e["event_id"] for e in every]  # a re-import dedupes


def test_the_engine_counts_a_transfer_after_answer_as_answered_and_transferred() -> None:
    cfg = config_from_dict({})
    store = MemoryState(cfg.bucket_seconds, cfg.coarse_bucket_seconds)
    engine = Engine(cfg, store)
    mapper = Mapper()
    for number, (line, _) in enumerate(CLASSIC, start=1):
        for event in mapper.map(parse_pipe_line(line, number)):
            assert engine.handle(parse_event(event), 1700001000) == "accepted"
    got = {
        name: value
        for (name, labels), value in flatten(snapshot(cfg, store, 1700001000)).items()
        if dict(labels).get("queue") == "sales" and dict(labels).get("window") == "1h"
    }
    assert got["ccmon_calls_offered"] == 2 and got["ccmon_calls_answered"] == 2  # c1, c2 (c3-c5: no offer)
    assert got["ccmon_transfers_out"] == 4 and got["ccmon_calls_timed_out"] == 3
    assert got["ccmon_calls_abandoned"] == 1 and got["ccmon_calls_abandoned_short"] == 1
    assert got["ccmon_agent_missed_rings"] == 1


def test_unknown_events_are_skipped_by_name_and_rows_without_an_agent_are_problems() -> None:
    mapper = Mapper()
    for event in ("JOINEMPTY", "AGENTDUMP", "QUEUESTART"):
        with pytest.raises(asterisk.RowSkipped, match=event):
            mapper.map(parse_pipe_line(f"1700000000|c1|sales|NONE|{event}|1|1", 1))
    for event in ("CONNECT", "RINGNOANSWER", "PAUSE", "ADDMEMBER", "AGENTLOGIN"):
        with pytest.raises(asterisk.RowProblem, match=f"missing_field:agent: {event}"):
            mapper.map(parse_pipe_line(f"1700000000|c1|sales|NONE|{event}|5|x|1", 1))
    with pytest.raises(asterisk.RowProblem, match="invalid_field:data1"):
        mapper.map(parse_pipe_line("1700000000|c1|sales|SIP/1|RINGNOANSWER|soon", 1))


def test_agents_dialling_customers_are_outbound_calls_and_busy_agents() -> None:
    """PBXware's OUTDIAL / OUTANSWER (logged when the answered dial ends, ``ttime`` = talk)."""
    mapper = Mapper()
    mapper.map(parse_pipe_line("1700000000|NONE|IT|Local/1127@callback-agent|ADDMEMBER|", 1))
    assert mapper.map(parse_pipe_line("1700000100|d1|NONE|Agent/1127|OUTDIAL|3318", 2)) == []  # an extension
    assert mapper.map(parse_pipe_line("1700000400|d1|NONE|Agent/1127|OUTANSWER|3318|COMPLETEAGENT", 3)) == []
    dial = mapper.map(parse_pipe_line("1700000500|d2|NONE|Agent/1127|OUTDIAL|tel-5337b4785c05", 4))
    assert [(e["type"], e["direction"], e["queue"], e["customer_id"]) for e in dial] == [
        ("call.offered", "outbound", "IT", "tel-5337b4785c05")
    ]
    row = parse_pipe_line("1700000570|d2|NONE|Agent/1127|OUTANSWER|tel-5337b4785c05|COMPLETEAGENT", 5)
    row.talk = 54.0
    answer = mapper.map(row)
    assert [(e["type"], e["ts"], e.get("state"), e.get("talk_seconds")) for e in answer] == [
        ("call.ended", 1700000570, None, 54.0),
        ("agent.state", 1700000570 - 54.0, "on_call", None),
        ("agent.state", 1700000570, "available", None),
    ]
    assert len({e["event_id"] for e in answer}) == 3
    fail = mapper.map(parse_pipe_line("1700000600|d3|NONE|Agent/1127|OUTDIAL|tel-1", 6))
    assert mapper.map(parse_pipe_line("1700000601|d3|NONE|Agent/1127|OUTCHANUNAVAIL|tel-1", 7)) == []
    assert fail and "d3" not in mapper.dials


# -- table exports -------------------------------------------------------------------------------
def test_an_asterisk_realtime_table_export_with_local_date_times(tmp_path: Path) -> None:
    """Asterisk's realtime ``queue_log`` table: ``time`` as a date and time (local unless
    logger.conf says GMT), ``data1..data5``; another export with one pipe-joined ``data``."""
    split = tmp_path / "queue_log_table.csv"
    split.write_text(
        "\ufefftime,callid,queuename,agent,event,data1,data2,data3,data4,data5\n"
        "2023-07-03 15:27:23.896208,c1,q1,NONE,ENTERQUEUE,,+4915112345678,1,,\n"
        "2023-07-03 15:27:43.000000,c1,q1,PJSIP/3001,CONNECT,20,c1b,3,,\n"
        "2023-07-03 15:29:43+00,c1,q1,PJSIP/3001,COMPLETECALLER,20,120,1,,\n"
        "yesterday,c2,q1,NONE,ENTERQUEUE,,+4915112345679,1,,\n"
    )
    joined = tmp_path / "queue_log_joined.csv"
    joined.write_text(
        'time,callid,queuename,agent,event,data\n2023-07-03 15:27:43,c1,q1,PJSIP/3001,CONNECT,"20|c1b|3"\n'
    )
    out = tmp_path / "events.jsonl"
    proc = cli(str(split), "--out", str(out), "--timezone", "Europe/Berlin")
    assert proc.returncode == 0, proc.stderr
    assert f"{split}:5: skipped: bad_timestamp: time is neither epoch seconds nor a date and time" in proc.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    berlin = datetime(2023, 7, 3, 13, 27, 23, 896208, tzinfo=UTC).timestamp()  # CEST = UTC+2
    assert [(e["type"], e["ts"]) for e in events] == [
        ("call.offered", berlin),
        ("call.answered", berlin + 19.103792),
        ("agent.state", berlin + 19.103792),
        ("call.ended", datetime(2023, 7, 3, 15, 29, 43, tzinfo=UTC).timestamp()),
        ("agent.state", datetime(2023, 7, 3, 15, 29, 43, tzinfo=UTC).timestamp()),
    ]
    assert events[1]["wait_seconds"] == 20.0 and events[3]["talk_seconds"] == 120.0
    assert events[0]["customer_id"] == "+4915112345678"
    assert map_file(str(joined), zone=asterisk.ZoneInfo("Europe/Berlin"))[0]["wait_seconds"] == 20.0


@pytest.mark.slow
def test_wrong_arguments_stop_with_the_field_named(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    log.write_text("1700000000|c1|sales|NONE|ENTERQUEUE||+4915112345678|1\n")
    state = tmp_path / "state.json"
    cases = [
        ((str(DATA), "--state", str(state)), "config field '--state': applies to the pipe-delimited"),
        ((str(DATA), "--follow"), "config field '--follow': follows a pipe-delimited queue_log file"),
        ((str(log), "--timezone", "Mars/Olympus"), "config field '--timezone': unknown IANA time zone"),
        ((str(tmp_path / "nope"),), "config field 'FILE': no such file"),
        ((str(log), "--poll", "0"), "config field '--poll': must be > 0 seconds"),
        ((str(log), "--customer-pattern", "("), "config field '--customer-pattern': not a regular expression"),
    ]
    for args, message in cases:
        proc = cli(*args, "--out", str(tmp_path / "out.jsonl"))
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    other = tmp_path / "other_log"
    other.write_text(log.read_text())
    assert cli(str(log), "--state", str(state), "--out", str(tmp_path / "o.jsonl")).returncode == 0
    proc = cli(str(other), "--state", str(state), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and f"holds the position in {log}" in proc.stderr
    state.write_text("{not json")
    proc = cli(str(log), "--state", str(state), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "is not a ccmon source state file" in proc.stderr


def test_bad_rows_are_reported_with_their_line_and_skipped(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    log.write_text(
        "1366720340|c1|support|NONE|ENTERQUEUE||+4915112345678|1\n"
        "not a queue_log line\n"
        "13667x0349|c1|support|SIP/8007|CONNECT|12\n"
        "1366720349|c1|support|SIP/8007|CONNECT|twelve\n"
        "1366720352|c1|support|SIP/8007|SOMETHINGNEW|x\n"
        "1366720452|c1|support|SIP/8007|COMPLETEAGENT|12|100|1\n"
    )
    out = tmp_path / "events.jsonl"
    proc = cli(str(log), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"{log}:2: skipped: too_few_fields" in proc.stderr
    assert f"{log}:3: skipped: bad_timestamp" in proc.stderr
    assert f"{log}:4: skipped: invalid_field:data1" in proc.stderr
    assert "SOMETHINGNEW: 1" in proc.stderr
    assert [json.loads(line)["type"] for line in out.read_text().splitlines()] == [
        "call.offered",
        "call.ended",
        "agent.state",
    ]


def test_a_resumed_import_appends_only_new_lines_to_the_output(tmp_path: Path) -> None:
    log, state, out = tmp_path / "queue_log", tmp_path / "state.json", tmp_path / "events.jsonl"
    log.write_text("".join(f"17000000{i:02d}|c{i}|q|NONE|ENTERQUEUE||+49151000000{i:02d}|1\n" for i in range(5)))
    assert cli(str(log), "--state", str(state), "--out", str(out)).returncode == 0
    with log.open("a") as handle:
        handle.write("".join(f"17000000{i:02d}|c{i}|q|NONE|ENTERQUEUE||+49151000000{i:02d}|1\n" for i in range(5, 8)))
    assert cli(str(log), "--state", str(state), "--out", str(out)).returncode == 0
    ids = [json.loads(line)["call_id"] for line in out.read_text().splitlines()]
    assert ids == [f"c{i}" for i in range(8)]
    saved = json.loads(state.read_text())
    assert saved["offset"] == log.stat().st_size and saved["line"] == 8 and saved["file"] == str(log)


# -- Kafka not taking what was sent (a fake sink: the real Kafka is in tests/integration) -----
class FlakySink:
    """Records what is written; the first flush after ``fail_after`` writes fails, as
    ``Sink.flush`` does when Kafka did not acknowledge a message."""

    instances: ClassVar[list[FlakySink]] = []
    delivered: ClassVar[list[str]] = []
    failures: ClassVar[int] = 1

    def __init__(self, args: argparse.Namespace, prog: str, append: bool = False) -> None:
        self.buffer: list[str] = []
        self.target = "fake"
        FlakySink.instances.append(self)

    def write(self, events: list[dict[str, Any]]) -> None:
        self.buffer += [e["event_id"] for e in events]

    def flush(self) -> None:
        if self.buffer and FlakySink.failures:
            FlakySink.failures -= 1
            self.buffer.clear()  # lost with the failed batch
            raise DeliveryError("Kafka did not acknowledge 1 of 1 messages: KafkaTimeoutError()")
        FlakySink.delivered += self.buffer
        self.buffer.clear()

    def close(self) -> None:
        self.flush()

    def abort(self) -> None:
        self.buffer.clear()


def test_what_kafka_did_not_take_is_read_again_from_the_saved_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, state = tmp_path / "queue_log", tmp_path / "state.json"
    write(log, 0, 4)
    monkeypatch.setattr(asterisk, "Sink", FlakySink)
    monkeypatch.setattr(asterisk, "RETRY_SECONDS", 0.05)
    args = asterisk_args(log, state, follow=True)

    def feed_then_stop() -> None:
        time.sleep(0.3)
        write(log, 4, 3)
        # Stop once the follower has delivered every line (or gave up): on a loaded machine a
        # fixed sleep stopped it before it had read the new lines.
        expected = len(map_file(str(log)))
        deadline = time.monotonic() + 30
        while len(FlakySink.delivered) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # and a moment more, in which nothing may be delivered twice
        os.kill(os.getpid(), signal.SIGTERM)  # the source's handler: a clean stop

    FlakySink.failures, FlakySink.delivered, FlakySink.instances = 1, [], []
    feeder = threading.Thread(target=feed_then_stop)
    feeder.start()
    assert asterisk.run(args) == 0
    feeder.join()
    assert len(FlakySink.instances) == 2  # reconnected after the failure
    assert sorted(FlakySink.delivered) == sorted(e["event_id"] for e in map_file(str(log)))  # everything, once
    assert json.loads(state.read_text())["line"] == 7
    # Without --follow a failure stops the import with the position saved before it.
    FlakySink.failures, FlakySink.delivered = 1, []
    state.unlink()
    with pytest.raises(DeliveryError, match=r"the position in .* was saved before this"):
        asterisk.run(asterisk_args(log, state, follow=False))
    assert json.loads(state.read_text())["offset"] == 0


def test_a_message_kafka_did_not_acknowledge_fails_the_flush() -> None:
    """``KafkaProducer.flush`` returns even when a record failed (timed out while the broker
    was down): the sink looks at every send's outcome, so a source never saves a position past
    events that were not delivered."""
    from kafka.errors import KafkaTimeoutError
    from kafka.future import Future

    from streams.kafka.produce import KafkaSink
    from streams.sources.common import _TrackedProducer

    class Producer:
        outcomes: ClassVar[list[bool]] = [True, False, True]

        def partitions_for(self, topic: str) -> set[int]:
            return {0}

        def send(self, topic: str, **kwargs: Any) -> Future:
            future = Future()
            return future.success(None) if self.outcomes.pop(0) else future.failure(KafkaTimeoutError("expired"))

        def flush(self, timeout: float | None = None) -> None:
            pass

    sink = KafkaSink(_TrackedProducer(Producer()), "t", batch=1)
    sink.write([{"event_id": "a", "call_id": "a"}, {"event_id": "b", "call_id": "b"}])
    with pytest.raises(DeliveryError, match="did not acknowledge 1 of 2 messages: KafkaTimeoutError"):
        sink.flush()
    sink.write([{"event_id": "c", "call_id": "c"}])
    sink.flush()  # the failure was reported once; what follows is judged on its own


def asterisk_args(log: Path, state: Path, *, follow: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    asterisk.add_arguments(parser)
    return parser.parse_args([str(log), "--state", str(state), "--poll", "0.05", *(["--follow"] if follow else [])])


# -- following a live file: rotation, truncation, restarts (plain files, no services) ----------
def entry(i: int) -> str:
    return f"{1795000000 + i}|c{i}|support|NONE|ENTERQUEUE||tel-{i:04d}|1\n"


def write(path: Path, first: int, n: int) -> None:
    with path.open("a") as handle:
        handle.write("".join(entry(i) for i in range(first, first + n)))


def read(follower: Follower) -> list[int]:
    """The entry numbers of the lines there are now."""
    return [int(line.split("|", 2)[1][1:]) for _where, _number, line in follower.lines()]


def test_follow_reads_only_whole_lines_and_what_is_appended(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    write(log, 0, 3)
    with log.open("a") as handle:
        handle.write(entry(3)[:10])  # a line being written
    follower = Follower(str(log), Position())
    assert read(follower) == [0, 1, 2]
    assert read(follower) == []
    with log.open("a") as handle:
        handle.write(entry(3)[10:])
    write(log, 4, 1)
    assert read(follower) == [3, 4]
    assert follower.position.line == 5 and follower.position.offset == log.stat().st_size


def test_rotation_waits_for_the_writer_to_reopen(tmp_path: Path) -> None:
    """logrotate with ``create``: the new, empty file exists while Asterisk still writes to the
    old one until it reopens. Nothing written to the old file after the rename is lost."""
    log = tmp_path / "queue_log"
    write(log, 0, 3)
    notes: list[str] = []
    follower = Follower(str(log), Position(), warn=notes.append)
    assert read(follower) == [0, 1, 2]
    os.rename(log, tmp_path / "queue_log.1")
    log.touch()  # created empty by logrotate
    assert read(follower) == []
    write(tmp_path / "queue_log.1", 3, 2)  # Asterisk has not reopened yet
    assert read(follower) == [3, 4]
    write(tmp_path / "queue_log.1", 5, 1)
    write(log, 6, 2)  # reopened: the last line it wrote to the old file is read first
    assert read(follower) == [5, 6, 7]
    assert follower.name == str(log) and follower.position.line == 2
    assert any("now reading" in note for note in notes)


def test_restart_after_two_rotations_reads_the_rest_then_every_newer_file(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    write(log, 0, 5)
    first = Follower(str(log), Position())
    assert read(first) == [0, 1, 2, 3, 4]
    saved = first.position
    first.close()
    write(log, 5, 2)  # while stopped: more lines, then two daily rotations
    time.sleep(0.02)  # (rotated files are put in order by modification time)
    os.rename(log, tmp_path / "queue_log.1")
    write(log, 7, 3)
    time.sleep(0.02)
    os.rename(tmp_path / "queue_log.1", tmp_path / "queue_log.2")
    os.rename(log, tmp_path / "queue_log.1")
    write(log, 10, 2)
    (tmp_path / "queue_log.state").write_text("{}")  # not a rotated log
    notes: list[str] = []
    again = Follower(str(log), saved, warn=notes.append)
    assert read(again) == [5, 6, 7, 8, 9, 10, 11]
    assert "resuming in" in notes[0] and notes[0].endswith("queue_log.1")
    assert again.name == str(log) and again.position.line == 2


def test_a_file_truncated_while_stopped_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    write(log, 0, 5)
    first = Follower(str(log), Position())
    read(first)
    saved = first.position
    first.close()
    log.write_text("")  # truncated in place, then a little written: same inode, shorter
    write(log, 0, 1)
    notes: list[str] = []
    assert read(Follower(str(log), saved, warn=notes.append)) == [0]
    assert notes  # said so


def test_a_reused_inode_is_not_taken_for_the_file_that_was_read(tmp_path: Path) -> None:
    """The state names the inode the current file happens to have (inodes are reused after a
    delete) but another first line: that is not our file, so it is read from the start."""
    log = tmp_path / "queue_log"
    write(log, 100, 4)
    stranger = Position(log.stat().st_ino, 2 * len(entry(0)), 2, head="0123456789abcdef")
    notes: list[str] = []
    assert read(Follower(str(log), stranger, warn=notes.append)) == [100, 101, 102, 103]
    assert "is gone" in notes[0]


def test_copytruncate_while_followed_reads_the_rest_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "queue_log"
    write(log, 0, 3)
    follower = Follower(str(log), Position())
    assert read(follower) == [0, 1, 2]
    write(log, 3, 2)  # written, not read yet ...
    shutil.copyfile(log, tmp_path / "queue_log.1")  # ... when logrotate copies and truncates
    with log.open("r+") as handle:
        handle.truncate(0)
    write(log, 10, 9)  # and Asterisk writes on, past where we were
    assert read(follower) == [3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert read(follower) == []
