"""Call-detail records (CSV/TSV, one row per call) -> canonical events, through a declared
column mapping (TOML, ``--mapping``): which column is the queue, the call and customer ids,
the queue entry, answer, exit and service end, the outcome and what each of its values means,
date and time formats, the time zone. A service that crosses midnight is handled (a time
more than 12 h earlier than the one before it in the call's sequence is on the next day; a
few seconds earlier is clock skew between the switch's columns). The mapping is in the
dialect of every tabular source (:mod:`streams.sources.mapping`); this module is its mapper,
a row -> its events. Ready example: deploy/sources/anonymous_bank_1999.toml. See
docs/sources/cdr.md."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from streams.sources.common import Report, RowProblem, RowSkipped
from streams.sources.mapping import (
    Columns,
    Spec,
    TableMapping,
    TimeSettings,
    load_spec,
    mapped_command,
    read,
    table_mapping,
    time_settings,
)

#: What an outcome value can mean.
MEANINGS = ("answered", "abandoned", "timeout", "voicemail", "ignore")
#: Time columns, in the order they happen within a call.
TIME_COLUMNS = ("arrival", "queue_entry", "exit", "answer", "service_end")
REQUIRED = ("call_id", "queue", "date", "queue_entry", "outcome")
#: Column roles: (role, required), in the order they are checked.
ROLES = (
    *((role, True) for role in REQUIRED),
    *((role, False) for role in ("arrival", "exit", "answer", "service_end", "customer_id", "agent", "wait", "talk")),
)
#: A time of day this much earlier than the call's previous time is on the next day.
NEXT_DAY_AFTER = timedelta(hours=12)


@dataclass(frozen=True)
class CdrMapping(TableMapping):
    """A validated mapping (see deploy/sources/anonymous_bank_1999.toml for every field)."""

    time: TimeSettings  # date_format and time_format
    outcomes: Mapping[str, str]


def mapping_from_spec(spec: Spec) -> CdrMapping:
    shared = table_mapping(
        spec,
        sections={"outcomes", "values"},
        id_prefix="cdr",
        roles=ROLES,
        lists={"call_id"},
        defaults_for={"agent"},
        time_roles=TIME_COLUMNS,
    )
    outcomes = spec.meanings("outcomes", MEANINGS)
    if "answered" in outcomes.values() and not shared["columns"]["answer"]:
        raise spec.error("columns.answer", "is required when an outcome means answered")
    times = time_settings(spec, {"date_format": "%Y-%m-%d", "time_format": "%H:%M:%S"})
    return CdrMapping(**shared, time=times, outcomes=outcomes)


def load_mapping(path: str | Path) -> CdrMapping:
    """Read and validate a mapping file; a bad one stops with the file and the field named."""
    return mapping_from_spec(load_spec(path))


def mapping_from_dict(raw: Mapping[str, Any], name: str = "") -> CdrMapping:
    """A mapping from its decoded TOML (errors name the field, and ``name`` when given)."""
    return mapping_from_spec(Spec(raw, name))


@dataclass
class CdrMapper:
    """Turns a call's row into its events."""

    mapping: CdrMapping
    tenant: str = "default"
    row: Columns = field(init=False)

    def __post_init__(self) -> None:
        self.row = Columns(self.mapping.spec, self.mapping.columns, self.mapping.none)

    def set_header(self, header: list[str], where: str) -> None:
        self.row.set_header(header, where)

    def _day(self, text: str) -> date:
        fmt = self.mapping.time.formats["date_format"]
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            raise RowProblem(f"bad_timestamp: date {text[:30]!r} does not match {fmt!r}") from None

    def _time(self, text: str, role: str) -> time:
        fmt = self.mapping.time.formats["time_format"]
        try:
            return datetime.strptime(text, fmt).time()
        except ValueError:
            raise RowProblem(f"bad_timestamp: {role} {text[:30]!r} does not match {fmt!r}") from None

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
        midnight). Less is clock skew, not a new day: a switch's answer time may be a second or two
        before its queue exit (docs/sources/cdr.md), which must not move the call a day on."""
        day = self._day(self.row.value(values, "date") or "")
        out: dict[str, float] = {}
        previous: datetime | None = None
        for role in TIME_COLUMNS:
            text = self.row.value(values, role)
            if text is None:  # not mapped, or a [none] value: the call has no such moment
                continue
            moment = datetime.combine(day, self._time(text, role))
            if previous is not None:
                while moment < previous - NEXT_DAY_AFTER:
                    moment += timedelta(days=1)
            previous = moment
            out[role] = moment.replace(tzinfo=self.mapping.time.zone).timestamp()
        return out

    def map(self, values: list[str]) -> list[dict[str, Any]]:
        m = self.mapping
        value = self.row.value
        outcome = value(values, "outcome") or ""
        meaning = m.outcomes.get(outcome)
        if meaning is None:
            raise RowProblem(f"invalid_field:outcome: {outcome[:30]!r} is not declared under [outcomes]")
        if meaning == "ignore":
            raise RowSkipped(f"outcome {outcome}")
        queue = value(values, "queue")
        call_id = "-".join(self.row.parts(values, "call_id"))
        if not queue:
            raise RowProblem("missing_field:queue")
        if not call_id:
            raise RowProblem("missing_field:call_id")
        times = self.times(values)
        entry = times.get("queue_entry")
        wait = self._seconds(value(values, "wait"), "wait")
        if entry is None:
            # Never reached the queue: an answered call was served without waiting (offered and
            # answered at once); anything else ended before the queue and is not a queue call.
            if meaning != "answered" or "answer" not in times:
                raise RowSkipped("never queued")
            entry, wait = times["answer"], 0.0
        customer = value(values, "customer_id")
        agent = value(values, "agent") or m.defaults.get("agent")  # an answered call whose record names no agent
        day_text = value(values, "date")
        base = {"tenant": self.tenant, "queue": queue, "call_id": f"{day_text}-{call_id}"}
        digest = hashlib.blake2b("\x1f".join(values).encode(), digest_size=6).hexdigest()

        def event(kind: str, ts: float, **fields: Any) -> dict[str, Any]:
            return {
                "event_id": f"{m.file.id_prefix}-{day_text}-{call_id}-{digest}-{kind}",
                "type": kind,
                "ts": ts,
                **base,
                **{k: v for k, v in fields.items() if v is not None},
            }

        events = [event("call.offered", entry, customer_id=customer)]
        if meaning == "answered":
            if "answer" not in times:
                raise RowProblem("missing_field:answer: an answered call without an answer time")
            if agent is None:
                raise RowProblem("missing_field:agent: an answered call without an agent")
            events.append(event("call.answered", times["answer"], agent_id=agent, wait_seconds=wait))
            talk = self._seconds(value(values, "talk"), "talk")
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


def map_file(
    path: str, mapping: CdrMapping, *, tenant: str = "default", report: Report | None = None
) -> list[dict[str, Any]]:
    report = report or Report("cdr", stream=io.StringIO())
    return [e for events in read(path, mapping.file, CdrMapper(mapping, tenant), report) for e in events]


add_arguments, run = mapped_command(
    "ccmon source cdr",
    "call-detail record files (CSV/TSV with a header)",
    "deploy/sources/anonymous_bank_1999.toml",
    load_mapping,
    CdrMapper,
)
