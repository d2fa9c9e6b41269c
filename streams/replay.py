"""``ccmon replay``: run a JSONL file through the engine and print the KPIs at ``at``.

Events are applied in the file's order (which need not be time order). Events at or after
``at`` are left out. ``at`` defaults to the newest event time in the file, which takes a
first pass over the file; with ``--at`` the file is read once. Rejected lines are counted,
summarised on stderr, and never fatal.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO, TextIO

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.errors import InvalidEventError
from kpi_core.events import Event, parse_line
from kpi_core.exposition import render
from kpi_core.kpis import MetricFamily, snapshot
from kpi_core.state import MemoryState

#: Upkeep (pruning old buckets, records and event ids) every this many events.
MAINTAIN_EVERY = 20_000


@dataclass
class ReplayResult:
    at: float
    families: list[MetricFamily]
    accepted: int = 0
    duplicates: int = 0
    left_out: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return render(self.families)


class Progress:
    """A one-line progress report on a terminal (or when forced), by bytes read."""

    def __init__(self, total_bytes: int, stream: TextIO, enabled: bool) -> None:
        self.total = max(total_bytes, 1)
        self.stream = stream
        self.enabled = enabled
        self.started = time.monotonic()
        self.last = 0.0

    def update(self, done_bytes: int, events: int, label: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        rate = events / max(now - self.started, 1e-9)
        self.stream.write(f"\r{label}: {100 * done_bytes / self.total:5.1f}%  {events:,} lines  {rate:,.0f}/s ")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(handle, start=1):
        if line.strip():
            yield number, line


def newest_ts(path: str, progress: Progress | None = None) -> float | None:
    newest: float | None = None
    with open(path, "rb") as handle:
        for count, (_number, line) in enumerate(_lines(handle)):
            try:
                ts = parse_line(line).ts  # only a valid event may set `at`
            except InvalidEventError:
                continue
            if newest is None or ts > newest:
                newest = ts
            if progress is not None and count % 4096 == 0:
                progress.update(handle.tell(), count, "scanning for the newest event")
    return newest


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
    meter = Progress(size, err, progress)
    if at is None:
        at = newest_ts(path, meter)
        meter.done()
        if at is None:
            at = time.time()
    # A file need not be in time order: keep finished calls for the whole horizon, so a late
    # line for any call of the replayed span still finds its record.
    config = replace(config, finished_call_grace_seconds=max(config.finished_call_grace_seconds, config.horizon_seconds))
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    result = ReplayResult(at=at, families=[])
    meter = Progress(size, err, progress)
    watermark = float("-inf")  # newest event time so far: what "now" was, for pruning
    with open(path, "rb") as handle:
        for count, (number, line) in enumerate(_lines(handle)):
            try:
                event: Event = parse_line(line)
            except InvalidEventError as exc:
                engine.reject(exc.reason)
                _note(result, number, exc)
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
                store.maintain(watermark, config.longest_sliding_seconds + 3600, config.horizon_seconds + 3600)
            if count % 4096 == 0:
                meter.update(handle.tell(), count, "replaying")
    meter.done()
    engine.maintain(at)
    result.families = snapshot(config, store, at)
    return result


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
