"""``ccmon rebuild``: recompute a deployment's Redis state from the events topic.

The horizon is the earliest instant the engine still accepts an event for (its lateness
cutoff): ``now`` minus the longest sliding window, and, with a ``today`` window, the local
midnight of every tenant time zone in the config (and UTC, the zone of tenants it does not
name). The rebuild reads every partition of the events topic from the first message whose
Kafka timestamp is at or after ``horizon - max_future_seconds`` (an event's own clock may run
that far ahead of the producer's; :meth:`KafkaConsumer.offsets_for_times`) up to the end
offsets taken when it starts, and runs the messages through the worker's own
:class:`~streams.worker.BatchProcessor`: the same splitting, engine, Redis transactions,
duplicate detection, and counting of rejections once per Kafka coordinate. Events produced
after the start are the workers' business.

Idempotent: every event id (and every rejection's Kafka coordinate) already in Redis's
``seen`` sets is a duplicate and changes nothing, so a rebuild over existing state only adds
what is missing (the last second of writes an ``appendfsync everysec`` Redis lost, say), and
may run while workers consume: whichever of the two applies an event first wins, the other
sees a conflict, recomputes its batch and counts the event as a duplicate.

``--clear`` first deletes every key of the prefix (for state that is wrong, not missing). It
refuses while the consumer group has members, because a worker's batch in flight would land
half on the old state and half on the new; ``--force`` overrides that check.

Rejected events are not sent to the dead-letter topic again (the workers did when they
first read them). Nothing is committed to the workers' consumer group.

Like the worker, it refuses to start on a Redis whose ``maxmemory-policy`` may evict keys (an
evicted ``seen`` entry makes an event count twice), unless overridden:
:mod:`streams.redis.policy`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from kpi_core.config import Config
from kpi_core.errors import CcmonError
from kpi_core.windows import local_midnight
from streams import settings as settings_module
from streams.cli import configured
from streams.cli.worker import SECURITY_FLAGS
from streams.progress import Progress, percent, wanted
from streams.settings import Settings, redact_url

if TYPE_CHECKING:
    from streams.kafka.read import PartitionPlan

log = logging.getLogger("ccmon.rebuild")

#: ``ccmon rebuild --help``'s description.
DESCRIPTION = """Recompute the KPI state in Redis from the events topic, after Redis lost it (or part of
it). Reads every partition from the start of the horizon (the earliest of now minus the
longest sliding window and the local midnight of each tenant time zone: the oldest events
the engine still accepts) up to the end offsets at the start, and runs them through the
worker's own processing into Redis. Idempotent: events Redis already holds (by event id) are
duplicates and change nothing, so it may run over partial state and while workers consume.
--clear deletes the prefix's keys first, and refuses while workers of the group are running.
Rejected events are counted, not dead-lettered again; nothing is committed to the group.
Exit status: 0 done, 2 on a bad setting or when Kafka, Redis or the topic cannot be used."""


FLAGS = (
    "kafka_bootstrap",
    "redis_url",
    "redis_cluster",
    "events_topic",
    "group_id",
    "config_path",
    "redis_prefix",
    "batch_size",
    "clock",
    "log_level",
    "log_format",
    "evicting_redis_allowed",  # refuse a Redis that may evict keys: streams/redis/policy.py
    *SECURITY_FLAGS,  # the worker's, and its customer key (docs/SECURITY.md)
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings_module.add_arguments(parser, FLAGS)
    parser.add_argument(
        "--clear",
        action="store_true",
        help="delete every key of the Redis prefix before rebuilding (refused while "
        "workers of --group are running, unless --force)",
    )
    parser.add_argument(
        "--force", action="store_true", help="with --clear: clear even though workers of the group are running"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    from streams.files import load_config

    if args.force and not args.clear:
        print("ccmon rebuild: --force only makes sense with --clear", file=sys.stderr)
        return 2
    settings = configured(args)
    config = load_config(settings.config_path)
    report = rebuild(settings, config, clear=args.clear, force=args.force, progress=wanted(args.progress))
    print_report(report, args.json, print)
    return 0


class RebuildError(CcmonError):
    """The rebuild cannot start or go on (Redis unreachable, --clear refused, Kafka failing midway...)."""


@dataclass
class RebuildReport:
    topic: str
    prefix: str
    now: float
    horizon: float
    read_from: float
    partitions: list[PartitionPlan]
    workers_running: int | None = 0  # members of the workers' consumer group; None: unknown
    cleared_keys: int = 0
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "prefix": self.prefix,
            "now": self.now,
            "horizon": self.horizon,
            "read_from": self.read_from,
            "partitions": [
                {"partition": p.partition, "start": p.start, "end": p.end, "earliest": p.earliest}
                for p in self.partitions
            ],
            "workers_running": self.workers_running,
            "cleared_keys": self.cleared_keys,
            "messages": self.messages,
            "events": self.events,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }

    def text(self) -> str:
        lines = [
            f"rebuilt Redis prefix {self.prefix!r} from topic {self.topic!r} as of {_iso(self.now)}",
            f"  horizon {_iso(self.horizon)} (messages from {_iso(self.read_from)} on)",
        ]
        for p in self.partitions:
            lines.append(f"  partition {p.partition}: offsets {p.start}..{p.end} ({p.messages} messages)")
        if self.cleared_keys:
            lines.append(f"  cleared {self.cleared_keys} keys first")
        rejected = sum(self.rejected.values())
        lines.append(
            f"  {self.messages} messages in {self.seconds:.1f} s: {self.events} events applied, "
            f"{self.duplicates} already in Redis, {rejected} rejected"
            + (" (" + ", ".join(f"{reason} {n}" for reason, n in self.rejected.most_common()) + ")" if rejected else "")
        )
        if self.workers_running:
            lines.append(f"  {self.workers_running} worker(s) of the group were consuming meanwhile")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def horizon_start(config: Config, now: float) -> float:
    """The earliest event time the engine accepts at ``now`` for any tenant (its lateness
    cutoff, :meth:`Engine.lateness_cutoff <kpi_core.engine.Engine.lateness_cutoff>`)."""
    start = now - config.longest_sliding_seconds
    if config.has_today:
        zones = {tenant.timezone for tenant in config.tenants.values()} | {"UTC"}
        start = min([start, *(local_midnight(now, ZoneInfo(zone)) for zone in zones)])
    return start


def rebuild(
    settings: Settings,
    config: Config,
    *,
    clear: bool = False,
    force: bool = False,
    progress: bool = False,
    err: TextIO = sys.stderr,
) -> RebuildReport:
    """Run the rebuild; raises :class:`RebuildError` (or :class:`~streams.kafka.read.KafkaReadError`)
    when it cannot start or go on."""
    import redis
    from kafka.errors import KafkaError

    from streams.kafka import read
    from streams.kafka.admin import group_members
    from streams.redis.policy import check_at_start
    from streams.redis.state import RedisState
    from streams.worker import BatchProcessor

    started = time.monotonic()
    clock = settings.make_clock()
    from streams.security import customer_key, redis_connection_kwargs, redis_error_hint

    state = RedisState.from_url(
        settings.redis_url,
        config,
        cluster=settings.redis_cluster,
        prefix=settings.redis_prefix,
        clock=clock,
        connection=redis_connection_kwargs(settings),
        customer_key=customer_key(settings, "ccmon rebuild"),
    )
    try:
        state.client.ping()
    except redis.RedisError as exc:
        raise RebuildError(
            f"cannot reach Redis at {redact_url(settings.redis_url)}: {type(exc).__name__}: {exc}"
            f"{redis_error_hint(exc)}"
        ) from None
    # Before anything is read or written: on an evicting Redis the rebuild itself would count twice.
    check_at_start(state.client, settings.redis_cluster, settings.evicting_redis_allowed)

    consumer = read.consumer(settings, "ccmon-rebuild")
    try:
        now = clock()
        horizon = horizon_start(config, now)
        read_from = horizon - config.max_future_seconds
        plans = read.plan(consumer, settings.events_topic, read_from)
        if not plans:
            raise RebuildError(f"topic {settings.events_topic!r} does not exist (or has no partitions) on this cluster")
        report = RebuildReport(settings.events_topic, settings.redis_prefix, now, horizon, read_from, plans)
        report.workers_running = group_members(settings, "ccmon-rebuild-admin", log)
        if report.workers_running is None:
            report.warnings.append(
                f"could not tell whether workers of consumer group {settings.group_id!r} are running"
            )
        for plan in plans:
            if plan.messages and plan.start == plan.earliest and plan.earliest > 0:
                first_ts = read.timestamp_at(consumer, settings.events_topic, plan.partition, plan.start)
                if first_ts is not None and first_ts > read_from:
                    report.warnings.append(
                        f"partition {plan.partition}: the topic no longer holds messages before offset "
                        f"{plan.start} ({_iso(first_ts)}), after the start of the horizon: the events "
                        "deleted by retention are missing from the rebuilt KPIs"
                    )
        if clear:
            if report.workers_running is None and not force:
                raise RebuildError(
                    f"--clear: cannot tell whether workers of consumer group {settings.group_id!r} are running "
                    "(see the log); add --force once they are stopped"
                )
            if report.workers_running and not force:
                raise RebuildError(
                    f"--clear: {report.workers_running} worker(s) of consumer group {settings.group_id!r} are "
                    "running; stop them first (a batch in flight would be half on the old state), or "
                    "add --force"
                )
            report.cleared_keys = clear_prefix(state.client, settings.redis_prefix)
            log.info("cleared %d keys of prefix %s", report.cleared_keys, settings.redis_prefix)

        processor = BatchProcessor(config, state, clock)
        total = sum(p.messages for p in plans)
        meter = Progress(progress, err)

        def line() -> str:
            return (
                f"rebuilding: {percent(report.messages, total)}  {report.messages:,} messages  "
                f"{report.events:,} events  {meter.rate(report.events):,.0f} events/s "
            )

        try:
            for batch in read.read(consumer, settings.events_topic, plans, settings.batch_size):
                result = processor.process(batch)
                report.messages += len(batch)
                report.events += result.accepted
                report.duplicates += result.duplicates
                report.rejected.update(dead.reason for dead in result.dead)
                meter.update(line)
        except KafkaError as exc:
            meter.done()
            raise RebuildError(
                f"Kafka failed after {report.messages} messages ({exc}); the rebuild is idempotent: run it again"
            ) from None
        meter.done(line)
        try:
            processor.maintain()  # what a worker's upkeep timer would do next
        except redis.RedisError as exc:
            report.warnings.append(f"the final upkeep failed ({exc}); a worker's upkeep will do it")
    finally:
        consumer.close()
        state.client.close()
    report.seconds = time.monotonic() - started
    return report


def clear_prefix(client: Any, prefix: str) -> int:
    """Delete every key of ``prefix`` (``prefix:*``); returns how many. ``client`` is a
    ``redis.Redis`` or a ``RedisCluster`` (which scans every primary and splits ``UNLINK``
    by slot)."""
    deleted = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def print_report(report: RebuildReport, as_json: bool, out: Callable[[str], Any]) -> None:
    out(json.dumps(report.as_dict(), sort_keys=True) if as_json else report.text())
