"""What every source shares: where events go (a JSONL file, stdout or Kafka envelopes), a
progress line for bulk imports, and the report of rows that could not be mapped (line number
and reason), so a bad row is reported and skipped, never fatal."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from kpi_core.errors import CcmonError, ConfigError
from streams.progress import Progress, wanted
from streams.settings import lookup


class RowProblem(Exception):
    """A row that cannot be mapped (every source's). The message is the reason, ``kind: detail``;
    ``kind`` (``invalid_field:state``, ``bad_timestamp``...) is what the summary counts."""


class RowSkipped(Exception):
    """A row understood but with nothing for ccmon (every source's: an event ccmon does not map, a
    state declared ``ignore``, a call that never queued). The message is the kind it is counted as."""


#: rows listed one by one on stderr before only the counts are given
MAX_LISTED_PROBLEMS = 20


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out`` / ``--kafka`` / ``--topic`` / ``--batch`` / ``--tenant`` / ``--progress``."""
    add_destination_arguments(parser)
    parser.add_argument("--tenant", default="default", help="tenant of every event (default: default)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when stderr is a terminal)",
    )


def add_destination_arguments(parser: argparse.ArgumentParser) -> None:
    """Where events go (every source's and ``ccmon simulate``'s): ``--out`` (JSONL, default
    stdout) or ``--kafka``, with ``--topic`` and ``--batch``."""
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--out", default="-", metavar="FILE.jsonl", help="JSONL output file (default: stdout)")
    out.add_argument("--kafka", metavar="BOOTSTRAP", default=None, help="send to Kafka instead, e.g. 127.0.0.1:19092")
    parser.add_argument(
        "--topic", default=lookup("events_topic")[0], help="Kafka topic (default: $CCMON_EVENTS_TOPIC or ccmon.events)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        metavar="N",
        help="events per Kafka message, a JSON-array envelope per partition (default: 100)",
    )


class DeliveryError(CcmonError):
    """Kafka did not acknowledge every message sent: what was sent since the last successful
    flush may be lost, so a source must not record progress past it."""


class _TrackedProducer:
    """A KafkaProducer that remembers the futures of its sends, so that a flush can tell
    whether every message was acknowledged (``KafkaProducer.flush`` does not raise when a
    record failed, e.g. timed out while the broker was down)."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.futures: list[Any] = []

    def partitions_for(self, topic: str) -> Any:
        return self.producer.partitions_for(topic)

    def send(self, *args: Any, **kwargs: Any) -> Any:
        future = self.producer.send(*args, **kwargs)
        self.futures.append(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout)
        futures, self.futures = self.futures, []
        failed = [future.exception for future in futures if future.failed()]
        if failed:
            raise DeliveryError(f"Kafka did not acknowledge {len(failed)} of {len(futures)} messages: {failed[0]!r}")

    def close(self, timeout: float | None = None) -> None:
        self.producer.close(timeout=timeout)


class Sink:
    """Writes canonical events (dicts) as JSONL or as Kafka envelopes keyed per entity.
    ``append``: add to an existing ``--out`` file instead of replacing it (a source resuming
    from its saved position). ``flush`` raises :class:`DeliveryError` when Kafka did not
    acknowledge everything."""

    def __init__(self, args: argparse.Namespace, prog: str, append: bool = False) -> None:
        from streams.kafka.produce import KafkaSink, dumps

        self._dumps = dumps
        self._file: IO[str] | None = None
        self._kafka: Any = None
        self.events = 0
        self.target = args.out if not args.kafka else f"kafka {args.kafka} topic {args.topic}"
        if args.kafka:
            if args.batch < 1:
                raise ConfigError("--batch", f"must be >= 1, got {args.batch}")
            from kafka import KafkaProducer
            from kafka.errors import KafkaError

            from streams.settings import kafka_client_kwargs_from_env

            security = kafka_client_kwargs_from_env()  # CCMON_KAFKA_SECURITY_PROTOCOL...: docs/SECURITY.md
            try:
                producer = KafkaProducer(
                    bootstrap_servers=args.kafka,
                    client_id=prog,
                    linger_ms=20,
                    acks="all",
                    max_block_ms=15000,
                    **security,
                )
            except KafkaError as exc:
                raise ConfigError("--kafka", f"cannot reach Kafka at {args.kafka}: {exc}") from exc
            self._kafka = KafkaSink(_TrackedProducer(producer), args.topic, args.batch)
        elif args.out == "-":
            self._file = sys.stdout
        else:
            self._file = open(args.out, "a" if append else "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, events: Iterable[dict[str, Any]]) -> None:
        if self._kafka is not None:
            batch = list(events)
            self._kafka.write(batch)
            self.events += len(batch)
            return
        assert self._file is not None
        for event in events:
            self._file.write(self._dumps(event) + "\n")
            self.events += 1

    def flush(self) -> None:
        """Everything written so far is durable (Kafka acknowledged, file flushed)."""
        if self._kafka is not None:
            self._kafka.flush()
        elif self._file is not None:
            self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._kafka is not None:
            self._kafka.producer.close()
        elif self._file is not None and self._file is not sys.stdout:
            self._file.close()

    def abort(self) -> None:
        """Close without sending what is still buffered (after a failed flush)."""
        if self._kafka is not None:
            self._kafka.producer.close(timeout=0)
        elif self._file is not None and self._file is not sys.stdout:
            self._file.close()


@dataclass
class Report:
    """Counts rows, events, skipped rows (by kind) and problems (line, reason); prints a
    progress line at most twice a second and a summary at the end, all on stderr; or, with
    ``log`` (``--log-format json``), the problems and the summary as log lines, no progress."""

    prog: str
    progress: bool = False
    stream: IO[str] = field(default_factory=lambda: sys.stderr)
    rows: int = 0
    events: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    listed: list[tuple[str, int, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    log: logging.Logger | None = None
    _meter: Progress = field(init=False)

    def __post_init__(self) -> None:
        # No progress line with --log-format json: every line on stderr is then a log line.
        self._meter = Progress(self.progress and self.log is None, self.stream)

    def problem(self, where: str, line: int, reason: str) -> None:
        """A row that could not be mapped: reported with its line number and skipped."""
        self.problems[reason.split(":", 1)[0]] += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append((where, line, reason))
            if self.log is not None:
                self.log.warning(
                    "%s: %s:%d: skipped: %s",
                    self.prog,
                    where,
                    line,
                    reason,
                    extra={"file": where, "line": line, "reason": reason},
                )
                return
            print(f"{self.prog}: {where}:{line}: skipped: {reason}", file=self.stream)

    def skip(self, kind: str) -> None:
        """A row that is understood but carries nothing for ccmon (e.g. an unknown event)."""
        self.skipped[kind] += 1

    def tick(self, force: bool = False) -> None:
        self._meter.update(self._line, force)

    def _line(self) -> str:
        return (
            f"{self.prog}: {self.rows:,} rows, {self.events:,} events, "
            f"{sum(self.problems.values()):,} bad rows ({self._meter.rate(self.rows):,.0f} rows/s)"
        )

    def summary(self, target: str) -> str:
        elapsed = time.monotonic() - self.started
        text = (
            f"{self.prog}: {self.rows:,} rows -> {self.events:,} events in {elapsed:.1f} s -> {target}; "
            f"{sum(self.problems.values()):,} rows not mapped"
        )
        if self.problems:
            text += " (" + ", ".join(f"{k}: {v:,}" for k, v in sorted(self.problems.items())) + ")"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{k}: {v:,}" for k, v in sorted(self.skipped.items()))
        return text

    def finish(self, target: str) -> None:
        if self.log is not None:
            self.log.info(
                self.summary(target),
                extra={"rows": self.rows, "events": self.events, "rows_not_mapped": sum(self.problems.values())},
            )
            return
        self._meter.done(self._line)
        print(self.summary(target), file=self.stream)


def progress_enabled(args: argparse.Namespace) -> bool:
    return wanted(args.progress)
