"""Interval reports: per tenant and queue (and per agent with --per-agent), one row per
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

from __future__ import annotations

import argparse
import os
import sys
import time

from kpi_core.errors import InvalidEventError
from kpi_core.events import parse_instant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="EVENTS.jsonl", nargs="?", help="one event per line (or --kafka)")
    parser.add_argument("--from", dest="start", required=True, metavar="T1",
                        help="start of the first interval, RFC 3339 with an offset or epoch seconds")
    parser.add_argument("--to", dest="end", required=True, metavar="T2", help="end of the last interval")
    parser.add_argument("--interval", required=True, metavar="15m|30m|1h|1d", help="interval length")
    parser.add_argument("--config", default=os.environ.get("CCMON_CONFIG"),
                        help="TOML config (default: $CCMON_CONFIG, else built-in defaults)")
    parser.add_argument("--format", default="csv", metavar="csv|json|html",
                        help="csv (default), json, or a self-contained html page with charts")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report there (default: stdout)")
    parser.add_argument("--per-agent", action="store_true",
                        help="add a row per interval, queue and agent (calls answered and handled, ASA, AHT, "
                        "missed rings, callbacks attempted)")
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="read the events topic of these Kafka servers instead of a file")
    parser.add_argument("--topic", default=os.environ.get("CCMON_EVENTS_TOPIC", "ccmon.events"),
                        help="with --kafka: the events topic (default: $CCMON_EVENTS_TOPIC, else ccmon.events)")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="show progress on stderr (default: when stderr is a terminal)")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")


def _fail(message: str) -> int:
    print(f"ccmon report: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from kpi_core.config import load_config
    from streams import report as report_module
    from streams.replay import Progress

    instants = {}
    for flag, text in (("--from", args.start), ("--to", args.end)):
        try:
            instants[flag] = parse_instant(text)
        except InvalidEventError as exc:
            return _fail(f"{flag}: {exc.message}")
    if args.format not in report_module.FORMATS:
        return _fail(f"--format: must be one of {', '.join(report_module.FORMATS)}, got {args.format!r}")
    if (args.file is None) == (args.kafka is None):
        return _fail("give either EVENTS.jsonl or --kafka BOOTSTRAP" if args.file is None
                     else f"give either EVENTS.jsonl ({args.file}) or --kafka ({args.kafka}), not both")  # fmt: skip
    try:
        plan = report_module.make_plan(instants["--from"], instants["--to"], args.interval)
    except report_module.ReportError as exc:
        return _fail(str(exc))
    config = load_config(args.config)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    notes: list[str] = []
    if args.kafka is not None:
        from streams.security import kafka_client_kwargs_from_env

        margin = report_module.lateness_seconds(config) + config.max_future_seconds
        meter = Progress(1, sys.stderr, show)

        def told(done: int, total: int) -> None:
            meter.total = max(total, 1)
            meter.update(done, done, f"reading {args.topic}")

        items = report_module.kafka_events(args.kafka, args.topic, plan.start - margin, plan.end + margin, progress=told,
                                           client_kwargs=kafka_client_kwargs_from_env(), notes=notes)  # fmt: skip
    else:
        try:
            meter = Progress(report_module.file_size(args.file), sys.stderr, show)
        except OSError as exc:
            print(f"ccmon report: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        items = report_module.file_items(args.file, meter)
    # Then the intervals: each one's events applied and its rows read.
    intervals = Progress(len(plan.ends), sys.stderr, show)

    def applying(done: int, total: int, events: int) -> None:
        if done == 1:
            meter.done()
            intervals.started = time.monotonic()
        intervals.update(done, events, "intervals")

    try:
        result = report_module.build_report(items, config, plan, per_agent=args.per_agent, progress=applying)
    except report_module.ReportError as exc:
        meter.done()
        return _fail(str(exc))
    except OSError as exc:
        meter.done()
        print(f"ccmon report: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    intervals.done()
    render = report_module.RENDERERS[args.format]
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
