"""``ccmon report``: interval reports (15 min, 30 min, 1 h, a day) per tenant and queue.

Each row's figures are exactly what ``/metrics`` shows, at the interval's end, for a window as
long as the interval: the report evaluates :func:`kpi_core.kpis.snapshot` with that one window
(``1d`` is a 24 h sliding window) over the state the engine built, so every definition is the
exporter's own. Intervals start at ``--from`` and follow each other up to ``--to``; both must
be whole minutes (bucket boundaries, where a window is exact) and ``--to - --from`` a whole
number of intervals.

One pass, one engine, one :class:`~kpi_core.state.MemoryState`
---------------------------------------------------------------
The events go through the engine once, each applied as of its own time (as a live worker that
received it when it happened), and the state is read at every interval end once the events
before it, and none after it, are applied. So a row counts exactly the events before its end
(what ``ccmon replay --at END`` reads, without replay's cut-off of the events older than the
lateness horizon before ``--at``: a call offered before the window and answered in it keeps its
wait). The input need not be in time order (the engine is order-independent, and a call-record
export is typically sorted by line, not time): the events of each interval are held until the
input ends, then applied interval by interval, in time order, each interval's rows read after
its events. Memory therefore grows with the events of ``[--from, --to)`` (docs/REPORTS.md
gives the figure); events before ``--from`` are applied as they are read.

So a ticket opened days before ``--from`` and resolved in an interval keeps its resolution
time; events at or after ``--to`` cannot change any row and are left out. From Kafka
(:func:`kafka_events`) the partitions are read from the first message
stamped at or after ``--from`` minus the lateness horizon (and ``max_future_seconds``) up to
the first one stamped after ``--to`` plus the same margin, or the end offsets taken when the
read starts: the read always ends.

A row is written per interval, tenant and queue (and ``_all``, the tenant's total) with
traffic: some windowed figure non-zero. A figure whose denominator is empty (no call answered:
no ASA) is empty in CSV and ``null`` in JSON. The backlog columns (open tickets and their mean
age, pending callbacks and the oldest one's age) are the snapshot's gauges at the interval's
end: every entity opened before it and still open then, however old (events before ``--from``
are applied).

``--per-agent`` adds a row per interval, tenant, queue and agent, from the events that name
the agent in the interval (``docs/REPORTS.md``): the calls the agent answered and their wait,
the handle time of the calls the agent answered and that ended in the interval, the rings the
agent missed and the callbacks the agent attempted. (The exporter has no per-agent series, so
these are the report's own, stated there.)
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from kpi_core.catalog import get as kpi
from kpi_core.config import Config, Window
from kpi_core.errors import CcmonError, InvalidEventError
from kpi_core.events import Event, Rejection, iter_envelope, parse_instant, parse_line
from streams import decoding
from streams import settings as settings_module
from streams.cli.replay import MAINTAIN_EVERY, Meter
from streams.files import load_config
from streams.progress import wanted

if TYPE_CHECKING:  # the engine is imported when a report is built: ccmon --help starts fast
    from kpi_core.state import MemoryState

#: ``ccmon report --help``'s description.
DESCRIPTION = """Interval reports: per tenant and queue (and per agent with --per-agent), one row per
interval with traffic, from a JSONL file or from the Kafka events topic. Each figure is what
/metrics shows at the interval's end for a window as long as the interval (docs/REPORTS.md):
calls offered, answered and abandoned, service level, ASA, abandon rate, AHT, callbacks made,
tickets created and resolved, first response and resolution times, CSAT, NPS and CES; empty
where undefined. Intervals start at --from and end at --to (whole minutes, a whole number of
intervals apart; RFC 3339 with an offset, or epoch seconds).

  ccmon report EVENTS.jsonl --from 2026-01-05T00:00:00Z --to 2026-01-06T00:00:00Z --interval 30m
  ccmon report --kafka kafka:9092 --from ... --to ... --interval 1h --format html -o day.html

From Kafka, every partition is read by timestamp from --from minus the lateness horizon up to
--to plus it (or the end of the topic when the read starts), then the report ends.
Exit status: 0 done (rejected events are counted on stderr), 1 the file cannot be read, 2 a bad
flag, config, or an unreachable Kafka or topic."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="EVENTS.jsonl", nargs="?", help="one event per line (or --kafka)")
    parser.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="T1",
        help="start of the first interval, RFC 3339 with an offset or epoch seconds",
    )
    parser.add_argument("--to", dest="end", required=True, metavar="T2", help="end of the last interval")
    parser.add_argument("--interval", required=True, metavar="15m|30m|1h|1d", help="interval length")
    parser.add_argument(
        "--config",
        default=settings_module.lookup("config_path")[0],
        help="TOML config (default: $CCMON_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--format",
        default="csv",
        metavar="csv|json|html",
        help="csv (default), json, or a self-contained html page with charts",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report there (default: stdout)")
    parser.add_argument(
        "--per-agent",
        action="store_true",
        help="add a row per interval, queue and agent (calls answered and handled, ASA, AHT, "
        "missed rings, callbacks attempted)",
    )
    parser.add_argument(
        "--kafka", metavar="BOOTSTRAP", help="read the events topic of these Kafka servers instead of a file"
    )
    parser.add_argument(
        "--topic",
        default=settings_module.lookup("events_topic")[0],
        help="with --kafka: the events topic (default: $CCMON_EVENTS_TOPIC, else ccmon.events)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")


def _fail(message: str) -> int:
    print(f"ccmon report: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    instants = {}
    for flag, text in (("--from", args.start), ("--to", args.end)):
        try:
            instants[flag] = parse_instant(text)
        except InvalidEventError as exc:
            return _fail(f"{flag}: {exc.message}")
    if args.format not in FORMATS:
        return _fail(f"--format: must be one of {', '.join(FORMATS)}, got {args.format!r}")
    if (args.file is None) == (args.kafka is None):
        return _fail(
            "give either EVENTS.jsonl or --kafka BOOTSTRAP"
            if args.file is None
            else f"give either EVENTS.jsonl ({args.file}) or --kafka ({args.kafka}), not both"
        )
    try:
        plan = make_plan(instants["--from"], instants["--to"], args.interval)
    except ReportError as exc:
        return _fail(str(exc))
    config = load_config(args.config)
    show = wanted(args.progress)
    notes: list[str] = []
    if args.kafka is not None:
        from streams.settings import kafka_client_kwargs_from_env

        margin = lateness_seconds(config) + config.max_future_seconds
        meter = Meter(1, sys.stderr, show)

        def told(done: int, total: int) -> None:
            meter.total = max(total, 1)
            meter.update(done, done, f"reading {args.topic}")

        items = kafka_events(
            args.kafka,
            args.topic,
            plan.start - margin,
            plan.end + margin,
            progress=told,
            client_kwargs=kafka_client_kwargs_from_env(),
            notes=notes,
        )
    else:
        try:
            meter = Meter(file_size(args.file), sys.stderr, show)
        except OSError as exc:
            print(f"ccmon report: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        items = file_items(args.file, meter)
    # Then the intervals: each one's events applied and its rows read.
    intervals = Meter(len(plan.ends), sys.stderr, show)

    def applying(done: int, total: int, events: int) -> None:
        if done == 1:
            meter.done()
            intervals.line.started = time.monotonic()
        intervals.update(done, events, "intervals")

    try:
        result = build_report(items, config, plan, per_agent=args.per_agent, progress=applying)
    except ReportError as exc:
        meter.done()
        return _fail(str(exc))
    except OSError as exc:
        meter.done()
        print(f"ccmon report: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    intervals.done()
    render = RENDERERS[args.format]
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                render(result, out)
        except OSError as exc:
            print(f"ccmon report: -o: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        render(result, sys.stdout)
    for note in notes:
        print(f"ccmon report: {note}", file=sys.stderr)
    if not args.quiet:
        print(result.summary(), file=sys.stderr)
    return 0


#: Interval name -> seconds.
INTERVALS: dict[str, int] = {"15m": 900, "30m": 1800, "1h": 3600, "1d": 86400}

#: Report column -> the snapshot's metric it shows (window = the interval), from the KPI catalog.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls_offered", kpi("calls_offered").name),
    ("calls_answered", kpi("calls_answered").name),
    ("calls_abandoned", kpi("calls_abandoned").name),
    ("service_level", kpi("service_level_ratio").name),
    ("asa_seconds", kpi("average_speed_of_answer_seconds").name),
    ("abandon_rate", kpi("abandon_rate_ratio").name),
    ("aht_seconds", kpi("average_handle_time_seconds").name),
    ("callbacks_made", kpi("callbacks_made").name),
    ("tickets_created", kpi("tickets_created").name),
    ("tickets_resolved", kpi("tickets_resolved").name),
    ("ticket_first_response_seconds", kpi("ticket_first_response_seconds").name),
    ("ticket_resolution_seconds", kpi("ticket_resolution_seconds").name),
    ("csat_ratio", kpi("csat_ratio").name),
    ("nps_score", kpi("nps_score").name),
    ("ces_score", kpi("ces_score").name),
)
#: Backlog columns: the snapshot's gauges at the interval's end (no window). They do not make
#: a row by themselves (a row is an interval with traffic).
BACKLOG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tickets_open", kpi("tickets_open").name),
    ("open_ticket_age_seconds", kpi("open_ticket_age_seconds").name),
    ("callbacks_pending", kpi("callbacks_pending").name),
    ("oldest_pending_callback_age_seconds", kpi("oldest_pending_callback_age_seconds").name),
)
KEY_COLUMNS = ("interval_start", "interval_end", "tenant", "queue")
#: ``--per-agent`` rows: their own figures (module docstring).
AGENT_COLUMNS = ("calls_answered", "asa_seconds", "calls_handled", "aht_seconds", "missed_rings", "callbacks_attempted")
FORMATS = ("csv", "json", "html")

_METRIC_COLUMN = {metric: column for column, metric in COLUMNS}
_BACKLOG_COLUMN = {metric: column for column, metric in BACKLOG_COLUMNS}


class ReportError(CcmonError):
    """A bad flag value (named, with the value) or a source that cannot be read."""


@dataclass(frozen=True)
class Plan:
    """The intervals ``[start + k * seconds, start + (k + 1) * seconds)`` up to ``end``."""

    start: float
    end: float
    interval: str
    seconds: int

    @property
    def ends(self) -> list[float]:
        count = round((self.end - self.start) / self.seconds)
        return [self.start + (k + 1) * self.seconds for k in range(count)]


def make_plan(start: float, end: float, interval: str) -> Plan:
    """Check ``--from``, ``--to`` and ``--interval``; raises :class:`ReportError` naming the flag."""
    seconds = INTERVALS.get(interval)
    if seconds is None:
        raise ReportError(f"--interval: must be one of {', '.join(INTERVALS)}, got {interval!r}")
    for flag, value in (("--from", start), ("--to", end)):
        if value % 60:
            raise ReportError(
                f"--{flag.lstrip('-')}: must be a whole minute (intervals start and end on "
                f"bucket boundaries), got {utc(value, exact=True)}"
            )
    if end <= start:
        raise ReportError(f"--to: must be after --from ({utc(start)}), got {utc(end)}")
    if (end - start) % seconds:
        raise ReportError(
            f"--to: must be a whole number of {interval} intervals after --from ({utc(start)}), "
            f"got {utc(end)} ({(end - start) / seconds:g} intervals)"
        )
    return Plan(start, end, interval, seconds)


def utc(ts: float, exact: bool = False) -> str:
    """RFC 3339 UTC, ``2026-01-05T08:30:00Z`` (with the fraction when ``exact`` and there is one)."""
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.isoformat() if exact and moment.microsecond else moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text.replace("+00:00", "") + "Z"


@dataclass
class Row:
    start: float
    end: float
    tenant: str
    queue: str
    values: dict[str, float | None]
    agent: str | None = None


@dataclass
class ReportResult:
    plan: Plan
    rows: list[Row] = field(default_factory=list)
    per_agent: bool = False
    read: int = 0  # events and rejections read
    accepted: int = 0
    duplicates: int = 0
    left_out: int = 0  # at or after --to
    rejected: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)

    def note(self, where: str, exc: InvalidEventError) -> None:
        self.rejected[exc.reason] += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"{where}: {exc.reason}: {exc.message}")

    def summary(self) -> str:
        lines = [
            f"report: {len(self.plan.ends)} intervals of {self.plan.interval} from {utc(self.plan.start)} to "
            f"{utc(self.plan.end)}, {len(self.rows)} rows; events: {self.accepted} applied, {self.duplicates} "
            f"duplicates, {sum(self.rejected.values())} rejected, {self.left_out} at or after --to left out"
        ]
        lines.extend(f"  rejected {count} x {reason}" for reason, count in self.rejected.most_common())
        lines.extend(f"  {line}" for line in self.first_errors)
        return "\n".join(lines)


#: An input item: where it was read (``line 12``, ``partition 0 offset 7``) and the event, or
#: why it is not one.
Item = tuple[str, Event | InvalidEventError]


def lateness_seconds(config: Config) -> float:
    """How far before an instant the engine still accepts events at it: the longest sliding
    window, or 25 h with a ``today`` window (:meth:`Engine.lateness_cutoff`)."""
    return max(float(config.longest_sliding_seconds), 25 * 3600.0 if config.has_today else 0.0)


def build_report(
    items: Iterable[Item],
    config: Config,
    plan: Plan,
    *,
    per_agent: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> ReportResult:
    """Run ``items`` once through the engine and read every interval end (module docstring).
    ``progress(intervals done, intervals, events applied)`` is told each interval's end once
    the input is read."""
    # As replay: a finished call's record is kept for the whole horizon, so a late line of any
    # call still finds its record.
    config = replace(
        config, finished_call_grace_seconds=max(config.finished_call_grace_seconds, config.horizon_seconds)
    )
    evaluation = replace(config, windows=(Window(plan.interval, plan.seconds),))
    from kpi_core.engine import ALL, Engine
    from kpi_core.state import MemoryState

    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    result = ReportResult(plan=plan, per_agent=per_agent)
    agents = _AgentTally(plan) if per_agent else None
    ends = plan.ends
    held: list[list[Event]] = [[] for _ in ends]  # the events of each interval, until its turn
    newest = -math.inf  # the newest event time applied: "now" for upkeep
    applied = 0

    def apply(event: Event) -> None:
        nonlocal applied, newest
        try:
            # As of its own time: a live worker that received it when it happened.
            if engine.process(event, now=event.ts):
                result.accepted += 1
                if agents is not None:
                    agents.add(event)
            else:
                result.duplicates += 1
        except InvalidEventError as exc:
            engine.reject(exc.reason, event.tenant)
            result.note(f"event {event.event_id}", exc)
        newest = max(newest, event.ts)
        applied += 1
        if applied % MAINTAIN_EVERY == 0:
            keep = max(config.longest_sliding_seconds, plan.seconds) + 3600
            store.maintain(newest, keep, max(config.horizon_seconds, plan.seconds) + 3600)

    for where, item in items:
        result.read += 1
        if isinstance(item, InvalidEventError):
            engine.reject(item.reason)
            result.note(where, item)
        elif item.ts >= plan.end:
            result.left_out += 1  # changes no row
        elif item.ts < plan.start:
            apply(item)  # before every interval: in every row's state, in any order
        else:
            held[int((item.ts - plan.start) // plan.seconds)].append(item)
    for index, end in enumerate(ends):
        for event in sorted(held[index], key=lambda e: e.ts):  # stable: the input's order at equal times
            apply(event)
        held[index] = []
        _read_rows(evaluation, store, plan, end, result)
        if progress is not None:
            progress(index + 1, len(ends), applied)
    if agents is not None:
        result.rows.extend(agents.rows())
        result.rows.sort(key=lambda row: (row.end, row.tenant, row.queue == ALL, row.queue, row.agent or ""))
    return result


def _read_rows(evaluation: Config, store: MemoryState, plan: Plan, end: float, result: ReportResult) -> None:
    """The rows of the interval ending at ``end``: the snapshot's values for the window."""
    from kpi_core.engine import ALL
    from kpi_core.kpis import snapshot

    found: dict[tuple[str, str], dict[str, float | None]] = {}
    backlog: dict[tuple[str, str], dict[str, float | None]] = {}
    for family in snapshot(evaluation, store, end):
        column = _METRIC_COLUMN.get(family.name)
        if column is not None:
            for _suffix, labels, value in family.samples:
                d = dict(labels)
                if d.get("window") == plan.interval:
                    found.setdefault((d["tenant"], d["queue"]), dict.fromkeys(_METRIC_COLUMN.values()))[column] = value
        column = _BACKLOG_COLUMN.get(family.name)
        if column is not None:
            for _suffix, labels, value in family.samples:
                d = dict(labels)
                backlog.setdefault((d["tenant"], d["queue"]), {})[column] = value
    for (tenant, queue), values in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] == ALL, kv[0][1])):
        if any(v for v in values.values()):
            values.update({column: backlog.get((tenant, queue), {}).get(column) for column in _BACKLOG_COLUMN.values()})
            result.rows.append(Row(end - plan.seconds, end, tenant, queue, values))


class _AgentTally:
    """``--per-agent`` figures by (interval end, tenant, queue, agent), from the events applied
    (first-time event ids only): see the module docstring."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.call_queue: dict[tuple[str, str], str] = {}  # (tenant, call id) -> queue of its offer
        self.answered_by: dict[tuple[str, str], str] = {}  # (tenant, call id) -> first agent to answer
        self.offered_at: dict[tuple[str, str], float] = {}
        self.sums: dict[tuple[float, str, str, str], defaultdict[str, float]] = {}

    def _bucket(self, event: Event, queue: str | None, agent: str) -> defaultdict[str, float] | None:
        if not self.plan.start <= event.ts < self.plan.end:
            return None
        k = (event.ts - self.plan.start) // self.plan.seconds
        end = self.plan.start + (k + 1) * self.plan.seconds
        return self.sums.setdefault((end, event.tenant, queue or "", agent), defaultdict(float))

    def add(self, event: Event) -> None:
        call = (event.tenant, event.call_id or "")
        if event.type == "call.offered" and event.direction == "inbound":
            self.call_queue.setdefault(call, event.queue or "")
            self.offered_at.setdefault(call, event.ts)
        elif event.type == "call.answered" and event.agent_id is not None and call not in self.answered_by:
            self.answered_by[call] = event.agent_id
            sums = self._bucket(event, event.queue or self.call_queue.get(call), event.agent_id)
            if sums is not None:
                wait = event.wait_seconds
                if wait is None and call in self.offered_at:
                    wait = max(0.0, event.ts - self.offered_at[call])
                sums["answered"] += 1
                if wait is not None:
                    sums["wait_n"] += 1
                    sums["wait_sum"] += wait
        elif event.type == "call.ended" and call in self.answered_by:
            agent = self.answered_by.pop(call)
            sums = self._bucket(event, self.call_queue.get(call), agent)
            if sums is not None:
                sums["handled"] += 1
                sums["handle_sum"] += (
                    (event.talk_seconds or 0.0) + (event.hold_seconds or 0.0) + (event.acw_seconds or 0.0)
                )
        elif event.type == "call.ring_no_answer" and event.agent_id is not None:
            sums = self._bucket(event, event.queue or self.call_queue.get(call), event.agent_id)
            if sums is not None:
                sums["rings"] += 1
        elif event.type == "callback.attempted" and event.agent_id is not None:
            sums = self._bucket(event, event.queue, event.agent_id)
            if sums is not None:
                sums["callbacks"] += 1

    def rows(self) -> list[Row]:
        out = []
        for (end, tenant, queue, agent), s in self.sums.items():
            values: dict[str, float | None] = {
                "calls_answered": s["answered"],
                "asa_seconds": s["wait_sum"] / s["wait_n"] if s["wait_n"] else None,
                "calls_handled": s["handled"],
                "aht_seconds": s["handle_sum"] / s["handled"] if s["handled"] else None,
                "missed_rings": s["rings"],
                "callbacks_attempted": s["callbacks"],
            }
            out.append(Row(end - self.plan.seconds, end, tenant, queue, values, agent=agent))
        return out


# -- sources -----------------------------------------------------------------------------------
def file_items(path: str, progress: Meter | None = None) -> Iterator[Item]:
    """The lines of a JSONL file (raises OSError when it cannot be read)."""
    handle: BinaryIO
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", parse_line(line)
            except InvalidEventError as exc:
                yield f"line {number}", exc
            if progress is not None and number % 4096 == 0:
                progress.update(handle.tell(), number, "reading")


def file_size(path: str) -> int:
    return os.path.getsize(path)


def kafka_events(
    bootstrap: str,
    topic: str,
    read_from: float,
    read_to: float,
    *,
    progress: Callable[[int, int], None] | None = None,
    client_kwargs: dict[str, Any] | None = None,
    stall_seconds: float = 60.0,
    notes: list[str] | None = None,
) -> Iterator[Item]:
    """Every event of ``topic`` in the messages stamped (Kafka timestamp) from ``read_from``
    up to ``read_to``, partition by partition's offsets: from the offset for ``read_from`` up
    to the offset for ``read_to`` (exclusive), or the end offset when the read started if no
    message is stamped that late; a message among those offsets stamped outside the range is
    skipped. ``progress(done, total)`` is told the messages read; ``notes`` gets a sentence
    when the topic holds messages but none stamped in the range."""
    from kafka.errors import KafkaError

    from streams.kafka import read

    try:
        consumer = kafka_consumer(bootstrap, client_kwargs)
    except (KafkaError, OSError) as exc:
        raise ReportError(f"--kafka: cannot reach Kafka at {bootstrap}: {exc or type(exc).__name__}") from None
    try:
        plans = read.plan(consumer, topic, read_from, read_to)
        if not plans:
            raise ReportError(f"--topic: topic {topic!r} does not exist (or has no partitions) at {bootstrap}")
        total = sum(p.messages for p in plans)
        if not total:
            held = sum(p.latest - p.earliest for p in plans)
            if held and notes is not None:
                notes.append(
                    f"none of the {held} messages of topic {topic!r} is stamped between {utc(read_from)} and "
                    f"{utc(read_to)} (Kafka timestamps: a topic filled after the fact, by an import, is "
                    "stamped at import time; report from the file instead)"
                )
            return
        done = 0
        for batch in read.read(consumer, topic, plans, 5000, stall_seconds):
            for message in batch:
                stamp = message.timestamp
                if stamp is not None and not read_from <= stamp <= read_to:
                    continue  # among the range's offsets, but stamped outside it
                where = f"partition {message.partition} offset {message.offset}"
                for item in iter_envelope(message.value, decoding.loads):
                    if isinstance(item, Rejection):
                        yield where, InvalidEventError(item.reason, item.message)
                    else:
                        yield where, item
            done += len(batch)
            if progress is not None:
                progress(done, total)
    except read.KafkaReadError as exc:
        raise ReportError(f"--kafka: {exc}") from None
    except KafkaError as exc:
        raise ReportError(f"--kafka: reading {topic!r} at {bootstrap} failed: {exc}") from None
    finally:
        consumer.close()


def kafka_consumer(bootstrap: str, client_kwargs: dict[str, Any] | None) -> Any:
    """A ``KafkaConsumer`` outside any group (``client_kwargs``: security, from the environment)."""
    import kafka

    return kafka.KafkaConsumer(
        bootstrap_servers=[s.strip() for s in bootstrap.split(",") if s.strip()],
        group_id=None,
        enable_auto_commit=False,
        client_id="ccmon-report",
        request_timeout_ms=30000,
        **(client_kwargs or {}),
    )


# -- rendering ---------------------------------------------------------------------------------
def columns(result: ReportResult) -> list[str]:
    if result.per_agent:
        names = [c for c, _m in (*COLUMNS, *BACKLOG_COLUMNS)] + list(AGENT_COLUMNS)
        return [*KEY_COLUMNS, "agent", *dict.fromkeys(names)]
    return [*KEY_COLUMNS, *(c for c, _m in (*COLUMNS, *BACKLOG_COLUMNS))]


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _record(row: Row, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "interval_start": utc(row.start),
        "interval_end": utc(row.end),
        "tenant": row.tenant,
        "queue": row.queue,
    }
    if "agent" in names:
        out["agent"] = row.agent or ""
    for name in names[len(out) :]:
        value = row.values.get(name)
        out[name] = int(value) if value is not None and float(value).is_integer() else value
    return out


def render_csv(result: ReportResult, out: TextIO) -> None:
    names = columns(result)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in result.rows:
        record = _record(row, names)
        writer.writerow([v if isinstance(v, str) else _number(v) for v in record.values()])


def render_json(result: ReportResult, out: TextIO) -> None:
    plan = result.plan
    document = {
        "from": utc(plan.start),
        "to": utc(plan.end),
        "interval": plan.interval,
        "columns": columns(result),
        "rows": [_record(row, columns(result)) for row in result.rows],
    }
    json.dump(document, out, indent=1)
    out.write("\n")


_CHART_W, _CHART_H, _PAD = 720, 180, 36


def _chart(rows: list[Row], plan: Plan) -> str:
    """Inline SVG: offered (bars) and answered (dark bars) per interval, service level (line,
    right axis 0..100 %)."""
    by_end = {row.end: row for row in rows}
    ends = plan.ends
    n = max(len(ends), 1)
    peak = max([row.values.get("calls_offered") or 0.0 for row in rows] + [1.0])
    width = (_CHART_W - 2 * _PAD) / n
    inner_h = _CHART_H - 2 * _PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_CHART_W} {_CHART_H}" role="img" '
        f'class="chart"><title>calls offered, answered and service level per interval</title>'
    ]
    parts.append(
        f'<line x1="{_PAD}" y1="{_CHART_H - _PAD}" x2="{_CHART_W - _PAD}" y2="{_CHART_H - _PAD}" stroke="#999"/>'
    )
    parts.append(f'<text x="4" y="{_PAD}" font-size="10">{peak:g}</text>')
    parts.append(f'<text x="{_CHART_W - _PAD + 4}" y="{_PAD}" font-size="10">100%</text>')
    lines: list[list[str]] = [[]]  # service-level line, broken where an interval has none
    step = max(1, n // 6)
    for i in range(0, n, step):  # a few interval starts along the axis
        x = _PAD + i * width
        parts.append(
            f'<line x1="{x:.1f}" y1="{_CHART_H - _PAD}" x2="{x:.1f}" y2="{_CHART_H - _PAD + 4}" stroke="#999"/>'
        )
        if 0 < i <= n - step:
            label = utc(plan.start + i * plan.seconds)[5:16].replace("T", " ")
            parts.append(
                f'<text x="{x:.1f}" y="{_CHART_H - _PAD + 14}" font-size="9" text-anchor="middle">{label}</text>'
            )
    for i, end in enumerate(ends):
        row = by_end.get(end)
        x = _PAD + i * width
        if row is None or row.values.get("service_level") is None:
            lines.append([])
        if row is None:
            continue
        for key, color, shrink in (("calls_offered", "#9ecae1", 0.0), ("calls_answered", "#3182bd", 0.25)):
            value = row.values.get(key) or 0.0
            h = inner_h * value / peak
            parts.append(
                f'<rect x="{x + width * shrink / 2:.1f}" y="{_CHART_H - _PAD - h:.1f}" '
                f'width="{max(width * (1 - shrink) - 1, 0.5):.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{html.escape(utc(end))} {key} {value:g}</title></rect>"
            )
        sl = row.values.get("service_level")
        if sl is not None:
            lines[-1].append(f"{x + width / 2:.1f},{_CHART_H - _PAD - inner_h * sl:.1f}")
    for points in lines:
        if len(points) > 1:
            parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#e6550d" stroke-width="1.5"/>')
        elif points:
            cx, cy = points[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="#e6550d"/>')
    parts.append(f'<text x="{_PAD}" y="{_CHART_H - 8}" font-size="10">{html.escape(utc(plan.start))}</text>')
    parts.append(
        f'<text x="{_CHART_W - _PAD}" y="{_CHART_H - 8}" font-size="10" text-anchor="end">'
        f"{html.escape(utc(plan.end))}</text></svg>"
    )
    return "".join(parts)


def render_html(result: ReportResult, out: TextIO) -> None:
    """One self-contained page: per tenant and queue a chart (inline SVG) and the table."""
    from kpi_core.engine import ALL

    plan = result.plan
    names = columns(result)
    title = f"ccmon report: {plan.interval} intervals, {utc(plan.start)} to {utc(plan.end)}"
    page = io.StringIO()
    page.write(
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
        ".chart{width:100%;max-width:900px;display:block}.legend span{margin-right:1em}</style></head><body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="legend"><span style="color:#9ecae1">&#9632; offered'
        '</span><span style="color:#3182bd">&#9632; answered</span><span style="color:#e6550d">&#8212; '
        "service level (right axis, 0-100 %)</span></p>\n"
    )
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in result.rows:
        if row.agent is None:
            groups.setdefault((row.tenant, row.queue), []).append(row)
    if not groups:
        page.write("<p>No traffic in these intervals.</p>\n")
    for (tenant, queue), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == ALL, kv[0][1])):
        page.write(
            f"<section><h2>{html.escape(tenant)} / {html.escape(queue)}</h2>\n{_chart(rows, plan)}\n</section>\n"
        )
    page.write("<h2>All rows</h2>\n<table><thead><tr>")
    page.write("".join(f"<th>{html.escape(n)}</th>" for n in names))
    page.write("</tr></thead><tbody>\n")
    for row in result.rows:
        record = _record(row, names)
        cells = (html.escape(v) if isinstance(v, str) else _number(v) for v in record.values())
        page.write("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n")
    page.write("</tbody></table>\n</body></html>\n")
    out.write(page.getvalue())


RENDERERS: dict[str, Callable[[ReportResult, TextIO], None]] = {
    "csv": render_csv,
    "json": render_json,
    "html": render_html,
}
