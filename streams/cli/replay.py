"""``ccmon replay``: run a JSONL file through the engine and print the KPIs at ``at``.

Events are applied in the file's order (which need not be time order). Events at or after
``at`` are left out. A file may span days: call, callback, agent and ticket events older than
the lateness cutoff (up to a year) are still applied for what they open or close, so the open
tickets, pending callbacks and their ages at ``at`` are the live system's
(:func:`offline_engine`, docs/KPI_ENGINE.md "Long backlogs in replay"). ``at`` defaults to the
newest event time in the file; the file is read once either way: without ``--at`` its events
are kept, parsed and compact (:class:`_Kept`), until ``at`` is known. Rejected lines are counted,
summarised on stderr, and never fatal.

The default ``at`` ignores mis-stamped outliers: one event stamped 2099 would otherwise move
``at`` to 2099, and every real event would be too old to count. An event time later than the
*fence* is left out of the choice (and so, being after ``at``, out of the replay)::

    fence = Q3 + 10 x (Q3 - Q1) + engine.max_future_seconds

Q1 and Q3 are the quartiles of the file's valid event times, at minute resolution (rounded
outwards, and the fence up to the end of its minute). It is Tukey's outer fence made
deliberately loose (10 inter-quartile ranges, not 3: a small file's last straggler is no
outlier, e.g. the golden file's last call 36 minutes after its third quartile), plus the
clock skew the engine tolerates anyway. It is meant for stamps off by days to decades (a wrong
year or century, a swapped month): a day's file keeps everything up to ~2.5 days after its
third quartile; events all within one minute keep ``max_future_seconds`` after it. As Q3 is
itself an event time, at least three quarters of the events always stay. What is excluded is
reported (count, range, and the fence) by :func:`exclusion_note`; ``--at`` overrides it all.
"""

from __future__ import annotations

import argparse
import marshal
import math
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import compress, islice
from operator import itemgetter, ne
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from kpi_core.config import Config
from kpi_core.errors import InvalidEventError
from kpi_core.events import Event, parse_instant, parse_line
from streams import settings as settings_module
from streams.decoding import loads
from streams.files import load_config
from streams.progress import Progress, percent, wanted

if TYPE_CHECKING:  # the engine is imported when a file is replayed: ccmon --help starts fast
    from kpi_core.engine import Engine
    from kpi_core.kpis import MetricFamily
    from kpi_core.state import StateStore

#: Upkeep (pruning old buckets, records and event ids) every this many events.
MAINTAIN_EVERY = 20_000

#: The fence is Q3 + FENCE_IQR x (Q3 - Q1) + max_future_seconds (Tukey's "far out" uses 3).
FENCE_IQR = 10.0


#: ``ccmon replay --help``'s description.
DESCRIPTION = """Run the events of a JSONL file through the KPI engine, in the file's order, and print
every KPI metric at AT in Prometheus text format on stdout. Events at or after AT are left
out. Open tickets, pending callbacks and agents' states are carried however old (up to a
year): a file spanning days shows the backlog the live system holds at AT. Without --at, AT is the
newest event time in the file, ignoring mis-stamped outliers:
event times later than the fence Q3 + 10 x (Q3 - Q1) + engine.max_future_seconds (Q1, Q3: the
quartiles of the file's event times) are left out, and a line on stderr says how many, their
range and the fence. Rejected lines are counted and summarised on stderr; the exit code is 0
even then, and non-zero only when the file or the config cannot be read."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.jsonl", help="one event per line")
    parser.add_argument(
        "--config",
        default=settings_module.lookup("config_path")[0],
        help="TOML config (default: $CCMON_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--at",
        help="evaluation instant, RFC 3339 with an offset or epoch seconds "
        "(default: the newest event time in the file, leaving out event times beyond "
        "Q3 + 10 x IQR + engine.max_future_seconds of the file's event times, as mis-stamped)",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no summary on stderr (what the default --at left out is still said)"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    at = None
    if args.at is not None:
        try:
            at = parse_instant(args.at)
        except InvalidEventError as exc:
            print(f"ccmon replay: --at: {exc.message}", file=sys.stderr)
            return 2
    try:
        result = replay(args.file, config, at, progress=wanted(args.progress))
    except OSError as exc:
        print(f"ccmon replay: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sys.stdout.write(result.text)
    note = exclusion_note(result.choice) if result.choice is not None else None
    if note is not None:
        print(f"ccmon replay: {note}", file=sys.stderr)
    if not args.quiet:
        print(summary(result), file=sys.stderr)
    return 0


@dataclass(frozen=True)
class AtChoice:
    """The default ``at``: the newest event time that is not beyond the fence."""

    at: float | None  # None: no valid event in the file
    events: int = 0  # valid event times seen
    fence: float | None = None
    excluded: int = 0  # event times beyond the fence
    excluded_range: tuple[float, float] | None = None


@dataclass
class ReplayResult:
    at: float
    families: list[MetricFamily]
    accepted: int = 0
    duplicates: int = 0
    left_out: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    #: How the default ``at`` was chosen (None when ``at`` was given).
    choice: AtChoice | None = None

    @property
    def text(self) -> str:
        from kpi_core.exposition import render

        return render(self.families)


class Meter:
    """Replay's (and report's) progress line, ``label: 42.0%  N lines  R/s``: how far of ``total``
    (bytes read, lines or intervals) and how fast (:mod:`streams.progress`)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.line = Progress(enabled, stream)

    def update(self, done: int, events: int, label: str) -> None:
        self.line.update(
            lambda: f"{label}: {percent(done, self.total)}  {events:,} lines  {self.line.rate(events):,.0f}/s "
        )

    def done(self) -> None:
        self.line.done()


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(handle, start=1):
        if line.strip():
            yield number, line


def robust_at(minutes: Mapping[int, tuple[int, float, float]], max_future_seconds: float) -> AtChoice:
    """The default ``at`` from event times grouped by minute (``minute -> (count, earliest,
    newest)``, the minute being ``floor(ts / 60)``): the newest time not beyond the fence (see
    the module's docstring)."""
    if not minutes:
        return AtChoice(at=None)
    keys = sorted(minutes)
    total = sum(minutes[key][0] for key in keys)
    q1_rank, q3_rank = math.ceil(0.25 * total), math.ceil(0.75 * total)  # nearest rank, 1-based
    q1 = q3 = None
    seen = 0
    for key in keys:
        seen += minutes[key][0]
        if q1 is None and seen >= q1_rank:
            q1 = key * 60.0  # the start of Q1's minute, the end of Q3's: the IQR only widens
        if seen >= q3_rank:
            q3 = (key + 1) * 60.0
            break
    assert q1 is not None and q3 is not None
    fence = q3 + FENCE_IQR * (q3 - q1) + max_future_seconds
    fence = math.ceil(fence / 60.0) * 60.0  # whole minutes are kept or excluded
    kept = [key for key in keys if key * 60.0 < fence]
    out = [key for key in keys if key * 60.0 >= fence]
    at = max(minutes[key][2] for key in kept)  # never empty: Q3's minute starts before the fence
    if not out:
        return AtChoice(at=at, events=total, fence=fence)
    return AtChoice(
        at=at,
        events=total,
        fence=fence,
        excluded=sum(minutes[key][0] for key in out),
        excluded_range=(min(minutes[key][1] for key in out), max(minutes[key][2] for key in out)),
    )


#: An Event's defaults by position (event_id, type and ts have none: None here).
_DEFAULTS = tuple(Event._field_defaults.get(name) for name in Event._fields)
#: Events kept per chunk: a chunk is freed as soon as it has been replayed.
_CHUNK = 4096
#: Events whose ids the store looks up at once (:func:`_seen_ahead`).
_AHEAD = 1024


class _Kept:
    """The parsed lines of a file, kept compact while the default ``at`` is not yet known, in
    chunks of :data:`_CHUNK` lines, each a flat list: an event as the positions of its fields
    that differ from the defaults (one tuple per shape) followed by their values, repeated
    strings (queues, agents, calls...) stored once a chunk; a rejected line as None, its error
    kept aside. A full chunk is sealed into one block: its marshal dump, deflated (~15 bytes
    an event where the list and its objects took ~230, and one block to free, not thousands of
    small objects that leave the allocator's pages half used under the engine's growing state:
    docs/BENCHMARKS.md); :meth:`items` rebuilds the Events in order and frees each chunk once
    read."""

    def __init__(self) -> None:
        self.chunks: list[list[Any] | bytes] = []
        self.shapes: dict[tuple[int, ...], tuple[tuple[int, ...], itemgetter[Any]]] = {}
        self.strings: dict[str, str] = {}
        #: The rejected lines' errors, by their rank among the kept lines.
        self.errors: dict[int, InvalidEventError] = {}
        self.count = 0
        self._chunk: list[Any] = []
        self._in_chunk = 0
        #: (count, number): the line number of the ``count``-th non-blank line from there on
        #: is ``number + (its count - count)`` (blank lines are skipped, not kept).
        self.numbers: list[tuple[int, int]] = []

    def add(self, number: int, item: Event | InvalidEventError) -> None:
        if not self.numbers or self.numbers[-1][1] + self.count - self.numbers[-1][0] != number:
            self.numbers.append((self.count, number))
        if self._in_chunk == _CHUNK:
            self._seal()
        self._in_chunk += 1
        chunk = self._chunk
        if isinstance(item, InvalidEventError):
            self.errors[self.count] = item
            self.count += 1
            chunk.append(None)
            return
        self.count += 1
        present = tuple(compress(range(len(_DEFAULTS)), map(ne, item, _DEFAULTS)))
        shape = self.shapes.get(present)
        if shape is None:
            shape = self.shapes[present] = (present, itemgetter(*present))
        strings = self.strings
        values = shape[1](item)  # at least event_id, type and ts: a tuple
        chunk.append(shape[0])
        chunk.append(values[0])  # the event_id, unique; the other strings repeat (a call's id...)
        chunk.extend([strings.setdefault(v, v) if v.__class__ is str else v for v in values[1:]])

    def _seal(self) -> None:
        """Keep the current chunk as its marshal dump (as it is if something in it has none)."""
        try:
            self.chunks.append(zlib.compress(marshal.dumps(self._chunk), 1))
        except ValueError:  # a value marshal cannot write: never from parse_line
            self.chunks.append(self._chunk)
        self._chunk = []
        self._in_chunk = 0
        self.strings.clear()  # a dump shares a string within itself only

    def items(self) -> Iterator[tuple[int, Event | InvalidEventError]]:
        """``(line number, event or error)`` in the file's order, each chunk freed once read."""
        if self._in_chunk:
            self._seal()
        self.shapes.clear()  # only needed to add: freed before the engine's state grows
        runs = [*self.numbers, (self.count, 0)]  # the last one is never reached
        run = 0
        count = 0
        self.chunks.reverse()
        while self.chunks:
            sealed = self.chunks.pop()
            chunk: list[Any] = marshal.loads(zlib.decompress(sealed)) if isinstance(sealed, bytes) else sealed
            del sealed
            at = 0
            while at < len(chunk):
                if count == runs[run + 1][0]:
                    run += 1
                start, number = runs[run]
                line = number + count - start
                head = chunk[at]
                at += 1
                if head is None:
                    yield line, self.errors.pop(count)
                    count += 1
                    continue
                count += 1
                fields = list(_DEFAULTS)
                for position in head:
                    fields[position] = chunk[at]
                    at += 1
                yield line, Event._make(fields)


def _parsed(handle: BinaryIO) -> Iterator[tuple[int, Event | InvalidEventError]]:
    """``(line number, event or error)`` of every non-blank line."""
    for number, line in _lines(handle):
        try:
            yield number, parse_line(line, loads)
        except InvalidEventError as exc:
            yield number, exc


def read_kept(path: str, max_future_seconds: float, meter: Meter) -> tuple[AtChoice, _Kept]:
    """One pass over the file: its lines kept (:class:`_Kept`), and the default ``at`` from
    the event times of its valid events, by minute."""
    minutes: dict[int, tuple[int, float, float]] = {}
    kept = _Kept()
    with open(path, "rb") as handle:
        for count, (number, item) in enumerate(_parsed(handle)):
            kept.add(number, item)
            if count % 4096 == 0:
                meter.update(handle.tell(), count, "reading")
            if isinstance(item, InvalidEventError):
                continue
            ts = item.ts  # only a valid event may set `at`
            key = int(ts // 60)
            seen = minutes.get(key)
            minutes[key] = (1, ts, ts) if seen is None else (seen[0] + 1, min(seen[1], ts), max(seen[2], ts))
    return robust_at(minutes, max_future_seconds), kept


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def exclusion_note(choice: AtChoice) -> str | None:
    """What the default ``at`` left out, and why; None when nothing was."""
    if not choice.excluded or choice.excluded_range is None or choice.fence is None or choice.at is None:
        return None  # nothing left out (or no event at all)
    first, last = choice.excluded_range
    stamped = _utc(first) if first == last else f"{_utc(first)} .. {_utc(last)}"
    return (
        f"{choice.excluded} of {choice.events} events left out as mis-stamped: stamped {stamped}, later than "
        f"{_utc(choice.fence)} (the third quartile of the file's event times + {FENCE_IQR:g} inter-quartile "
        f"ranges + engine.max_future_seconds); at = {_utc(choice.at)}, the newest event time before that "
        f"(give --at to choose)"
    )


def offline_engine(config: Config) -> Engine:
    """The engine a file is run through at one ``now`` (``ccmon replay``; any command that
    evaluates a file at one instant), over a MemoryState:

    * A file need not be in time order: finished calls are kept for the whole horizon, so a
      late line for any call of the replayed span still finds its record.
    * A file may span days: open entities are carried however old (``carry_open``): an event
      older than the lateness cutoff still opens or closes its ticket, callback, agent state or
      call, so the open tickets, pending callbacks and their ages at ``now`` are the live
      system's; its windowed contributions stay frozen (windows count only their own span)."""
    from kpi_core.engine import Engine
    from kpi_core.state import MemoryState

    config = replace(
        config, finished_call_grace_seconds=max(config.finished_call_grace_seconds, config.horizon_seconds)
    )
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    return Engine(config, store, carry_open=True)


def replay(
    path: str,
    config: Config,
    at: float | None = None,
    *,
    progress: bool = False,
    err: TextIO = sys.stderr,
) -> ReplayResult:
    """Raises OSError when the file cannot be read."""
    size = os.path.getsize(path)
    meter = Meter(size, err, progress)
    choice = None
    if at is None:
        choice, kept = read_kept(path, config.max_future_seconds, meter)
        meter.done()
        at = choice.at if choice.at is not None else time.time()
        result = _run(kept.items(), config, at, Meter(kept.count, err, progress), lambda count: count)
    else:
        with open(path, "rb") as handle:
            result = _run(_parsed(handle), config, at, meter, lambda _count: handle.tell())
    result.choice = choice
    return result


def _run(
    items: Iterable[tuple[int, Event | InvalidEventError]],
    config: Config,
    at: float,
    meter: Meter,
    done: Callable[[int], int],
) -> ReplayResult:
    """Apply the parsed lines in order, at ``at`` (``done``: how far, for ``meter``)."""
    from kpi_core.kpis import snapshot
    from kpi_core.state import MemoryState

    engine = offline_engine(config)
    config, store = engine.config, engine.store
    assert isinstance(store, MemoryState)
    result = ReplayResult(at=at, families=[])
    watermark = float("-inf")  # newest event time so far: what "now" was, for pruning
    for count, (number, event) in enumerate(_seen_ahead(items, store, at)):
        if isinstance(event, InvalidEventError):
            engine.reject(event.reason)
            _note(result, number, event)
            continue
        if event.ts >= at:
            result.left_out += 1
            continue
        watermark = max(watermark, event.ts)
        try:
            if engine.process(event, now=at):
                result.accepted += 1
            else:
                result.duplicates += 1
        except InvalidEventError as exc:
            engine.reject(exc.reason)
            _note(result, number, exc)
        if count % MAINTAIN_EVERY == MAINTAIN_EVERY - 1:
            store.maintain(watermark, config.fine_keep_seconds, config.coarse_keep_seconds)
        if count % 4096 == 0:
            meter.update(done(count), count, "replaying")
    meter.done()
    engine.maintain(at)
    result.families = snapshot(config, store, at)
    return result


def _seen_ahead(
    items: Iterable[tuple[int, Event | InvalidEventError]], store: StateStore, at: float
) -> Iterator[tuple[int, Event | InvalidEventError]]:
    """``items``, letting ``store`` look up the ids of each :data:`_AHEAD` events to be
    replayed at once (:meth:`~kpi_core.state.StateStore.prefetch_seen`)."""
    iterator = iter(items)
    while batch := list(islice(iterator, _AHEAD)):
        store.prefetch_seen(
            (event.tenant, event.event_id, event.ts)
            for _number, event in batch
            if not isinstance(event, InvalidEventError) and event.ts < at
        )
        yield from batch


def _note(result: ReplayResult, number: int, exc: InvalidEventError) -> None:
    result.rejected[exc.reason] += 1
    if len(result.first_errors) < 10:
        result.first_errors.append(f"line {number}: {exc.reason}: {exc.message}")


def summary(result: ReplayResult) -> str:
    lines = [
        f"replayed: {result.accepted} accepted, {result.duplicates} duplicates, "
        f"{sum(result.rejected.values())} rejected, {result.left_out} at or after --at left out"
    ]
    for reason, count in result.rejected.most_common():
        lines.append(f"  rejected {count} x {reason}")
    lines.extend(f"  {line}" for line in result.first_errors)
    return "\n".join(lines)
