"""Call-detail records (CSV/TSV, one row per call) -> canonical events, through a declared
column mapping (TOML, ``--mapping``): which column is the queue, the call and customer ids,
the queue entry, answer, exit and service end, the outcome and what each of its values means,
date and time formats, the time zone. A service that crosses midnight is handled (a time
more than 12 h earlier than the one before it in the call's sequence is on the next day; a
few seconds earlier is clock skew between the switch's columns). Ready example:
deploy/sources/anonymous_bank_1999.toml. See docs/sources/cdr.md."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kpi_core.errors import ConfigError
from streams.sources.common import Report, RowProblem, Sink, add_output_arguments, progress_enabled

#: What an outcome value can mean.
MEANINGS = ("answered", "abandoned", "timeout", "voicemail", "ignore")
#: Time columns, in the order they happen within a call.
TIME_COLUMNS = ("arrival", "queue_entry", "exit", "answer", "service_end")
REQUIRED = ("call_id", "queue", "date", "queue_entry", "outcome")
#: A time of day this much earlier than the call's previous time is on the next day.
NEXT_DAY_AFTER = timedelta(hours=12)


@dataclass(frozen=True)
class CdrMapping:
    """A validated mapping (see deploy/sources/anonymous_bank_1999.toml for every field)."""

    columns: Mapping[str, str | list[str]]
    outcomes: Mapping[str, str]
    delimiter: str = ","
    encoding: str = "utf-8"
    date_format: str = "%Y-%m-%d"
    time_format: str = "%H:%M:%S"
    timezone: str = "UTC"
    id_prefix: str = "cdr"
    not_queued: tuple[str, ...] = ()
    no_customer: tuple[str, ...] = ()
    no_agent: tuple[str, ...] = ()
    unknown_agent: str | None = None
    zone: ZoneInfo = field(default=ZoneInfo("UTC"), compare=False)


def load_mapping(path: str | Path) -> CdrMapping:
    """Read and validate a mapping; a bad one stops with the field named."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--mapping", f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--mapping", f"{path} is not valid TOML: {exc}") from None
    return mapping_from_dict(raw)


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(where, f"must be a list of strings, got {raw!r}")
    return tuple(raw)


def _unknown_agent(raw: Any) -> str | None:
    if raw is not None and (not isinstance(raw, str) or not raw):
        raise ConfigError("values.unknown_agent", f"must be a non-empty string, got {raw!r}")
    return raw


def mapping_from_dict(raw: Mapping[str, Any]) -> CdrMapping:
    for key in raw:
        if key not in ("file", "columns", "outcomes", "values"):
            raise ConfigError(key, "unknown section (expected file, columns, outcomes, values)")
    file = raw.get("file", {})
    columns = raw.get("columns")
    outcomes = raw.get("outcomes")
    values = raw.get("values", {})
    for name, table in (("file", file), ("columns", columns), ("outcomes", outcomes), ("values", values)):
        if not isinstance(table, dict):
            raise ConfigError(name, f"must be a table, got {table!r}")
    assert isinstance(columns, dict) and isinstance(outcomes, dict)
    known = {*REQUIRED, *TIME_COLUMNS, "customer_id", "agent", "wait", "talk"}
    for key, value in columns.items():
        if key not in known:
            raise ConfigError(f"columns.{key}", f"unknown column role (expected one of: {', '.join(sorted(known))})")
        names = value if key == "call_id" and isinstance(value, list) else [value]
        if not names or not all(isinstance(v, str) and v for v in names):
            raise ConfigError(f"columns.{key}", f"must be a column name{' or a list of them' if key == 'call_id' else ''}, "
                              f"got {value!r}")  # fmt: skip
    for key in REQUIRED:
        if key not in columns:
            raise ConfigError(f"columns.{key}", "is required")
    for value, meaning in outcomes.items():
        if meaning not in MEANINGS:
            raise ConfigError(f"outcomes.{value}", f"must be one of {', '.join(MEANINGS)}, got {meaning!r}")
    if "answered" in outcomes.values() and "answer" not in columns:
        raise ConfigError("columns.answer", "is required when an outcome means answered")
    for key in file:
        if key not in ("delimiter", "encoding", "date_format", "time_format", "timezone", "id_prefix"):
            raise ConfigError(f"file.{key}", "unknown field")
    zone_name = file.get("timezone", "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError("file.timezone", f"unknown IANA time zone {zone_name!r}") from None
    delimiter = file.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConfigError("file.delimiter", f"must be one character, got {delimiter!r}")
    for key in ("date_format", "time_format"):
        if not isinstance(file.get(key, "%"), str):
            raise ConfigError(f"file.{key}", "must be a strptime format")
    return CdrMapping(
        columns=dict(columns), outcomes=dict(outcomes), delimiter=delimiter,
        encoding=file.get("encoding", "utf-8"), date_format=file.get("date_format", "%Y-%m-%d"),
        time_format=file.get("time_format", "%H:%M:%S"), timezone=zone_name, id_prefix=file.get("id_prefix", "cdr"),
        not_queued=_strings(values.get("not_queued", []), "values.not_queued"),
        no_customer=_strings(values.get("no_customer", []), "values.no_customer"),
        no_agent=_strings(values.get("no_agent", []), "values.no_agent"),
        unknown_agent=_unknown_agent(values.get("unknown_agent")),
        zone=zone,
    )  # fmt: skip


@dataclass
class CdrMapper:
    mapping: CdrMapping
    tenant: str = "default"
    header: list[str] = field(default_factory=list)
    index: dict[str, list[int]] = field(default_factory=dict)

    def set_header(self, header: list[str]) -> None:
        self.header = [h.strip() for h in header]
        for role, spec in self.mapping.columns.items():
            columns = spec if isinstance(spec, list) else [spec]
            for column in columns:
                if column not in self.header:
                    raise ConfigError(f"columns.{role}", f"no column {column!r} in the file's header {self.header}")
            self.index[role] = [self.header.index(column) for column in columns]

    def _get(self, values: list[str], role: str) -> str | None:
        """The role's value (several columns, as for a call id unique per line: joined by '-')."""
        indexes = self.index.get(role)
        return "-".join(values[i].strip() for i in indexes) if indexes is not None else None

    def _day(self, text: str) -> date:
        try:
            return datetime.strptime(text, self.mapping.date_format).date()
        except ValueError:
            raise RowProblem(f"bad_timestamp: date {text[:30]!r} does not match {self.mapping.date_format!r}") from None

    def _time(self, text: str, role: str) -> time:
        try:
            return datetime.strptime(text, self.mapping.time_format).time()
        except ValueError:
            raise RowProblem(f"bad_timestamp: {role} {text[:30]!r} does not match {self.mapping.time_format!r}") from None

    def _seconds(self, text: str | None, role: str) -> float | None:
        if text is None or text == "":
            return None
        try:
            value = float(text)
        except ValueError:
            raise RowProblem(f"invalid_field:{role}: not a number: {text[:30]!r}") from None
        if not 0 <= value <= 366 * 86400:
            raise RowProblem(f"invalid_field:{role}: out of range: {text[:30]!r}")
        return value

    def times(self, values: list[str]) -> dict[str, float]:
        """Epoch seconds of every time column the row has, in call order; a time more than
        NEXT_DAY_AFTER earlier than the one before it is on the next day (a call crossing
        midnight). Less is clock skew, not a new day: the Anonymous Bank's ser_start is often
        1-2 s before its q_exit (~10,000 calls a month), which must not move them a day on."""
        day = self._day(self._get(values, "date") or "")
        out: dict[str, float] = {}
        previous: datetime | None = None
        for role in TIME_COLUMNS:
            text = self._get(values, role)
            if text is None or text in self.mapping.not_queued:
                continue
            moment = datetime.combine(day, self._time(text, role))
            if previous is not None:
                while moment < previous - NEXT_DAY_AFTER:
                    moment += timedelta(days=1)
            previous = moment
            out[role] = moment.replace(tzinfo=self.mapping.zone).timestamp()
        return out

    def map(self, values: list[str]) -> list[dict[str, Any]]:
        m = self.mapping
        if len(values) != len(self.header):
            raise RowProblem(f"wrong_field_count: {len(values)} fields, the header has {len(self.header)}")
        outcome = self._get(values, "outcome") or ""
        meaning = m.outcomes.get(outcome)
        if meaning is None:
            raise RowProblem(f"invalid_field:outcome: {outcome[:30]!r} is not declared under [outcomes]")
        if meaning == "ignore":
            raise _Skip(f"outcome {outcome}")
        queue = self._get(values, "queue")
        call_id = self._get(values, "call_id")
        if not queue:
            raise RowProblem("missing_field:queue")
        if not call_id:
            raise RowProblem("missing_field:call_id")
        times = self.times(values)
        entry = times.get("queue_entry")
        wait = self._seconds(self._get(values, "wait"), "wait")
        if entry is None:
            # Never reached the queue: an answered call was served without waiting (offered and
            # answered at once); anything else ended before the queue and is not a queue call.
            if meaning != "answered" or "answer" not in times:
                raise _Skip("never queued")
            entry, wait = times["answer"], 0.0
        customer = self._get(values, "customer_id")
        if customer in m.no_customer:
            customer = None
        agent = self._get(values, "agent")
        if agent in m.no_agent:
            agent = m.unknown_agent  # an answered call whose agent the record does not name
        day_text = self._get(values, "date")
        base = {"tenant": self.tenant, "queue": queue, "call_id": f"{day_text}-{call_id}"}
        digest = hashlib.blake2b("\x1f".join(values).encode(), digest_size=6).hexdigest()

        def event(kind: str, ts: float, **fields: Any) -> dict[str, Any]:
            return {"event_id": f"{m.id_prefix}-{day_text}-{call_id}-{digest}-{kind}", "type": kind, "ts": ts,
                    **base, **{k: v for k, v in fields.items() if v is not None}}  # fmt: skip

        events = [event("call.offered", entry, customer_id=customer)]
        if meaning == "answered":
            if "answer" not in times:
                raise RowProblem("missing_field:answer: an answered call without an answer time")
            if agent is None:
                raise RowProblem("missing_field:agent: an answered call without an agent")
            events.append(event("call.answered", times["answer"], agent_id=agent, wait_seconds=wait))
            talk = self._seconds(self._get(values, "talk"), "talk")
            end = times.get("service_end")
            if end is not None:
                if talk is None:
                    talk = end - times["answer"]
                events.append(event("call.ended", end, agent_id=agent, talk_seconds=talk))
        else:
            exit_ts = times.get("exit")
            if exit_ts is None:
                raise RowProblem(f"missing_field:exit: a {meaning} call without an exit time")
            kind = {"abandoned": "call.abandoned", "timeout": "call.timeout", "voicemail": "call.voicemail"}[meaning]
            events.append(event(kind, exit_ts, wait_seconds=wait))
        return events


class _Skip(Exception):
    """A row understood but with nothing for ccmon (PHANTOM, never queued): counted."""


def read(path: str, mapper: CdrMapper, report: Report) -> Iterator[list[dict[str, Any]]]:
    """The events of each row of ``path``; problems reported with their line numbers."""
    with open(path, newline="", encoding=mapper.mapping.encoding, errors="replace") as handle:
        reader = csv.reader(handle, delimiter=mapper.mapping.delimiter)
        header = next(reader, None)
        if header is None:
            return
        mapper.set_header(header)
        for values in reader:
            if not values:
                continue
            report.rows += 1
            try:
                events = mapper.map(values)
            except _Skip as exc:
                report.skip(str(exc))
                continue
            except RowProblem as exc:
                report.problem(path, reader.line_num, str(exc))
                continue
            report.events += len(events)
            report.tick()
            yield events


def map_file(path: str, mapping: CdrMapping, *, tenant: str = "default", report: Report | None = None) -> list[dict[str, Any]]:
    report = report or Report("cdr", stream=io.StringIO())
    return [e for events in read(path, CdrMapper(mapping, tenant), report) for e in events]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="call-detail record files (CSV/TSV with a header)")
    parser.add_argument("--mapping", required=True, metavar="TOML",
                        help="the column mapping, e.g. deploy/sources/anonymous_bank_1999.toml")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    report = Report("ccmon source cdr", progress=progress_enabled(args))
    sink = Sink(args, "ccmon-source-cdr")
    try:
        for path in args.files:
            if not Path(path).exists():
                raise ConfigError("FILE", f"no such file: {path}")
            mapper = CdrMapper(mapping, args.tenant)
            batch: list[dict[str, Any]] = []
            for events in read(path, mapper, report):
                batch.extend(events)
                if len(batch) >= 1000:
                    sink.write(batch)
                    batch.clear()
            sink.write(batch)
        sink.flush()
    finally:
        sink.close()
        report.finish(sink.target)
    return 0
