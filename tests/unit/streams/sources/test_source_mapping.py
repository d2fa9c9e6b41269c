"""The one mapping dialect of the tabular sources (streams/sources/mapping.py, docs/SOURCES.md):
a CDR mapping written in the shared spelling ([time], [none], [defaults]) maps exactly as the
CDR's former spelling ([file] time settings, [values]); the tickets source accepts the same
spellings; a setting given in both places is refused naming the field; a mapping file that is
not TOML text names ``--mapping``; and every source reads its file with the shared reader (a
zipped CDR, a row over the CSV field limit reported and skipped)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from kpi_core.errors import ConfigError
from streams.sources import asterisk, cdr, tickets
from streams.sources.common import Report

#: A small call-detail file in the Anonymous Bank's layout: an answered call, one crossing
#: midnight, a caller who hung up, a PHANTOM row, a call that never queued, an answered call
#: with no agent named, an unidentified customer.
CDR_ROWS = (
    "line\tcall_id\tcustomer_id\ttype\tdate\tq_start\tq_exit\toutcome\tser_start\tser_exit\tq_time\tser_time\tserver\n"
    "A1\t1\t111\tPS\t990101\t6:55:26\t6:55:43\tAGENT\t6:55:43\t6:56:37\t17\t54\tMICHAL\n"
    "A1\t2\t0\tPS\t990101\t23:59:50\t23:59:58\tAGENT\t23:59:58\t0:01:10\t8\t72\tBASCH\n"
    "A1\t3\t222\tNW\t990101\t7:00:00\t7:01:40\tHANG\t0:00:00\t0:00:00\t100\t0\tNO_SERVER\n"
    "A1\t4\t333\tPS\t990101\t7:02:00\t7:02:01\tPHANTOM\t0:00:00\t0:00:00\t1\t0\tNO_SERVER\n"
    "A1\t5\t444\tPS\t990101\t0:00:00\t0:00:00\tHANG\t0:00:00\t0:00:00\t0\t0\tNO_SERVER\n"
    "A1\t6\t555\tPS\t990101\t8:00:00\t8:00:05\tAGENT\t8:00:05\t8:00:25\t5\t20\tNO_SERVER\n"
)
COLUMNS = {
    "call_id": ["line", "call_id"],
    "customer_id": "customer_id",
    "queue": "type",
    "date": "date",
    "queue_entry": "q_start",
    "exit": "q_exit",
    "answer": "ser_start",
    "service_end": "ser_exit",
    "wait": "q_time",
    "talk": "ser_time",
    "agent": "server",
    "outcome": "outcome",
}
OUTCOMES = {"AGENT": "answered", "HANG": "abandoned", "PHANTOM": "ignore"}
#: The CDR's former spelling (deploy/sources/anonymous_bank_1999.toml until the dialects were one).
FORMER: dict[str, dict[str, Any]] = {
    "file": {
        "delimiter": "\t",
        "date_format": "%y%m%d",
        "time_format": "%H:%M:%S",
        "timezone": "Asia/Jerusalem",
        "id_prefix": "bank99",
    },
    "columns": COLUMNS,
    "outcomes": OUTCOMES,
    "values": {"not_queued": ["0:00:00"], "no_customer": ["0"], "no_agent": ["NO_SERVER"], "unknown_agent": "unknown"},
}
#: The same mapping in the shared spelling.
SHARED: dict[str, dict[str, Any]] = {
    "file": {"delimiter": "tab", "id_prefix": "bank99"},
    "time": {"date_format": "%y%m%d", "time_format": "%H:%M:%S", "timezone": "Asia/Jerusalem"},
    "columns": COLUMNS,
    "none": {
        "q_start": ["0:00:00"],
        "q_exit": ["0:00:00"],
        "ser_start": ["0:00:00"],
        "ser_exit": ["0:00:00"],
        "customer_id": ["0"],
        "server": ["NO_SERVER"],
    },
    "defaults": {"agent": "unknown"},
    "outcomes": OUTCOMES,
}


def _toml(path: Path, doc: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def _cdr(
    tmp_path: Path, doc: dict[str, dict[str, Any]], data: Path | None = None
) -> tuple[list[dict[str, Any]], Report]:
    if data is None:
        data = tmp_path / "calls.txt"
        data.write_text(CDR_ROWS)
    report = Report("test", stream=io.StringIO())
    return cdr.map_file(str(data), cdr.load_mapping(_toml(tmp_path / "m.toml", doc)), report=report), report


def test_a_cdr_mapping_in_the_shared_spelling_maps_as_the_former_one(tmp_path: Path) -> None:
    former, former_report = _cdr(tmp_path, FORMER)
    shared, shared_report = _cdr(tmp_path, SHARED)
    assert shared == former
    assert (former_report.rows, dict(former_report.skipped), former_report.listed) == (
        shared_report.rows,
        dict(shared_report.skipped),
        shared_report.listed,
    )
    assert (shared_report.rows, dict(shared_report.skipped)) == (6, {"outcome PHANTOM": 1, "never queued": 1})
    by_call = {(e["call_id"], e["type"]): e for e in shared}
    assert by_call[("990101-A1-1", "call.offered")]["customer_id"] == "111"
    assert "customer_id" not in by_call[("990101-A1-2", "call.offered")]  # customer 0: unidentified
    midnight = by_call[("990101-A1-2", "call.ended")]["ts"] - by_call[("990101-A1-2", "call.answered")]["ts"]
    assert midnight == 72.0  # 23:59:58 -> 0:01:10 the next day
    assert by_call[("990101-A1-6", "call.answered")]["agent_id"] == "unknown"  # NO_SERVER: the default agent
    assert by_call[("990101-A1-3", "call.abandoned")]["wait_seconds"] == 100.0


def test_the_tickets_source_reads_the_time_settings_under_file_too(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("id,status,at\nT1,new,01.03.2026 09:00\nT1,done,01.03.2026 10:00\n")
    doc: dict[str, dict[str, Any]] = {
        "file": {"format": "%d.%m.%Y %H:%M", "timezone": "Europe/Berlin"},
        "columns": {"ticket_id": "id", "state": "status", "changed_at": "at"},
        "defaults": {"queue": "web"},
        "states": {"new": "new", "done": "resolved"},
    }
    events = tickets.map_file(str(log), _toml(tmp_path / "t.toml", doc))
    assert [(e["type"], e["ts"]) for e in events] == [
        ("ticket.created", "2026-03-01T09:00:00+01:00"),
        ("ticket.replied", "2026-03-01T10:00:00+01:00"),
        ("ticket.resolved", "2026-03-01T10:00:00+01:00"),
    ]


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        (
            {**SHARED, "file": {**SHARED["file"], "timezone": "UTC"}},
            "m.toml:file.timezone",
            "is already set as time.timezone",
        ),
        (
            {**SHARED, "values": {"unknown_agent": "nobody"}},
            "m.toml:values.unknown_agent",
            "is already set as defaults.agent",
        ),
        ({**SHARED, "values": {"no_cusomer": ["0"]}}, "m.toml:values.no_cusomer", "unknown field"),
        ({**SHARED, "time": {**SHARED["time"], "format": "iso"}}, "m.toml:time.format", "unknown field"),
        ({**SHARED, "none": {"server": "NO_SERVER"}}, "m.toml:none.server", "must be a list of strings"),
        ({**FORMER, "values": {"not_queued": "0:00:00"}}, "m.toml:values.not_queued", "must be a list of strings"),
        (
            {**SHARED, "time": {**SHARED["time"], "date_format": "yymmdd"}},
            "m.toml:time.date_format",
            "must be a strptime format",
        ),
    ],
)
def test_a_setting_given_twice_or_misspelt_names_the_field(
    tmp_path: Path, doc: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        cdr.load_mapping(_toml(tmp_path / "m.toml", doc))
    assert exc.value.field == field and message in exc.value.message


@pytest.mark.parametrize("load", [cdr.load_mapping, tickets.load_mapping])
def test_a_mapping_file_that_is_not_toml_text_names_the_mapping(tmp_path: Path, load: Any) -> None:
    binary = tmp_path / "m.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError) as exc:
        load(binary)
    assert exc.value.field == "--mapping" and "is not a mapping file (not UTF-8 text at byte" in exc.value.message
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    assert exc.value.field == "--mapping" and "is a directory, not a mapping file" in exc.value.message


def test_a_cdr_is_read_by_the_shared_reader_from_a_zip_and_past_an_unreadable_row(tmp_path: Path) -> None:
    expected, _ = _cdr(tmp_path, SHARED)
    zipped = tmp_path / "calls.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("calls.txt", CDR_ROWS)
    assert _cdr(tmp_path, SHARED, zipped)[0] == expected
    huge = tmp_path / "huge.txt"
    lines = CDR_ROWS.splitlines(keepends=True)
    huge.write_text(lines[0] + lines[1] + "A1\t9\t" + "x" * (csv.field_size_limit() + 10) + "\n" + "".join(lines[2:]))
    events, report = _cdr(tmp_path, SHARED, huge)
    assert events == expected
    assert [(line, reason.split(":")[0]) for _, line, reason in report.listed] == [(3, "unreadable_row")]


def test_an_asterisk_export_is_read_past_an_unreadable_row(tmp_path: Path) -> None:
    export = tmp_path / "queue_log.csv"
    export.write_text(
        "time,callid,queuename,agent,event,data1,data2,data3\n"
        "1700000000,c1,sales,NONE,ENTERQUEUE,,0123456789,1\n"
        f"1700000001,c2,sales,NONE,ENTERQUEUE,,{'9' * (csv.field_size_limit() + 10)},1\n"
        "1700000005,c1,sales,SIP/7,CONNECT,5,x,1\n"
    )
    report = Report("test", stream=io.StringIO())
    events = asterisk.map_file(str(export), report=report)
    assert [e["type"] for e in events] == ["call.offered", "call.answered", "agent.state"]
    assert [(line, reason.split(":")[0]) for _, line, reason in report.listed] == [(3, "unreadable_row")]
