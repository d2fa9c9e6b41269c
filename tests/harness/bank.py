"""The Anonymous Bank call records (tests/data/anonymous_bank_1999) read straight from the raw
rows, without ccmon: the daily figures per service type that ``ccmon source cdr`` with the shipped
mapping (deploy/sources/anonymous_bank_1999.toml) must give (tests/unit/streams/sources/test_source_cdr.py,
tests/unit/streams/cli/test_report.py)."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from realdata import real_data

REPO = Path(__file__).resolve().parents[2]
BANK = {month: real_data(f"anonymous_bank_1999/{month}.txt") for month in ("january", "october")}
MAPPING = REPO / "deploy" / "sources" / "anonymous_bank_1999.toml"
ZONE = ZoneInfo("Asia/Jerusalem")
NAMES = (
    "ccmon_calls_offered",
    "ccmon_calls_answered",
    "ccmon_calls_abandoned",
    "ccmon_average_speed_of_answer_seconds",
    "ccmon_average_handle_time_seconds",
    "ccmon_service_level_ratio",
)


def local_day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def row_times(
    r: dict[str, str], columns: tuple[str, ...] = ("vru_entry", "q_start", "q_exit", "ser_start", "ser_exit")
) -> dict[str, datetime]:
    """The row's clock times that are set (not 0:00:00), on the row's date; a time more than
    12 h earlier than the one before it is on the next day."""
    day0 = datetime.strptime(r["date"], "%y%m%d")
    clock: dict[str, datetime] = {}
    last = None
    for col in columns:
        if r[col] == "0:00:00":
            continue
        h, m, sec = map(int, r[col].split(":"))
        t = day0 + timedelta(hours=h, minutes=m, seconds=sec)
        while last is not None and t < last - timedelta(hours=12):
            t += timedelta(days=1)
        clock[col] = last = t
    return clock


def raw_figures(path: Path, period: Callable[[datetime], str] = local_day) -> dict[tuple[str, str], dict[str, float]]:
    """Per (local day, or ``period`` of the local time, service type), from the rows, by the rules
    docs/sources/cdr.md states:
    PHANTOM ignored; a call that never reached the queue (q_start 0:00:00) counts only when it
    was served, as offered and answered at once with no wait; waits and service times are the
    switch's (q_time, ser_time); a time more than 12 h earlier than the one before it is on the
    next day (a few seconds earlier is the switch's clock skew: ser_start is often 1 s before q_exit)."""
    acc: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    header = rows[0]
    for values in rows[1:]:
        if len(values) != len(header):
            continue
        r = dict(zip(header, values, strict=True))
        if r["outcome"] == "PHANTOM":
            continue
        clock = row_times(r)

        def day_of(col: str, clock: dict[str, datetime] = clock) -> str:
            return period(clock[col])

        queue = r["type"]
        if r["outcome"] == "AGENT":
            if "ser_start" not in clock:
                continue  # served without a service start: not mappable (reported by the source)
            entry, wait = ("q_start", float(r["q_time"])) if "q_start" in clock else ("ser_start", 0.0)
            acc[(day_of(entry), queue)]["offered"] += 1
            answered = acc[(day_of("ser_start"), queue)]
            answered["answered"] += 1
            answered["wait"] += wait
            answered["within"] += wait <= 20
            if "ser_exit" in clock:
                ended = acc[(day_of("ser_exit"), queue)]
                ended["handled"] += 1
                ended["talk"] += float(r["ser_time"])
        elif r["outcome"] == "HANG" and "q_start" in clock:
            wait = float(r["q_time"])
            acc[(day_of("q_start"), queue)]["offered"] += 1
            abandoned = acc[(day_of("q_exit"), queue)]
            abandoned["abandoned"] += 1
            abandoned["short"] += wait < 5
    out = {}
    for key, a in acc.items():
        figures = {
            "ccmon_calls_offered": a["offered"],
            "ccmon_calls_answered": a["answered"],
            "ccmon_calls_abandoned": a["abandoned"],
        }
        if a["answered"]:
            figures["ccmon_average_speed_of_answer_seconds"] = a["wait"] / a["answered"]
        if a["handled"]:
            figures["ccmon_average_handle_time_seconds"] = a["talk"] / a["handled"]
        if a["answered"] + a["abandoned"] - a["short"]:
            figures["ccmon_service_level_ratio"] = a["within"] / (a["answered"] + a["abandoned"] - a["short"])
        out[key] = figures
    return out
