"""Run the events of a JSONL file through the KPI engine, in the file's order, and print
every KPI metric at AT in Prometheus text format on stdout. Events at or after AT are left
out. Rejected lines are counted and summarised on stderr; the exit code is 0 even then, and
non-zero only when the file or the config cannot be read."""

from __future__ import annotations

import argparse
import os
import sys

from kpi_core.config import load_config
from kpi_core.errors import InvalidEventError
from kpi_core.events import parse_ts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.jsonl", help="one event per line")
    parser.add_argument("--config", default=os.environ.get("CCMON_CONFIG"),
                        help="TOML config (default: $CCMON_CONFIG, else built-in defaults)")
    parser.add_argument("--at", help="evaluation instant, RFC 3339 or epoch seconds "
                        "(default: the newest event time in the file)")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="show progress on stderr (default: when stderr is a terminal)")
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")


def run(args: argparse.Namespace) -> int:
    from streams.replay import replay, summary

    config = load_config(args.config)
    at = None
    if args.at is not None:
        raw = args.at
        try:
            at = parse_ts(float(raw) if raw.replace(".", "", 1).isdigit() else raw)
        except InvalidEventError as exc:
            print(f"ccmon replay: --at: {exc.message}", file=sys.stderr)
            return 2
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        result = replay(args.file, config, at, progress=progress)
    except OSError as exc:
        print(f"ccmon replay: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sys.stdout.write(result.text)
    if not args.quiet:
        print(summary(result), file=sys.stderr)
    return 0
