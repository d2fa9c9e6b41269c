"""Run the events of a JSONL file through the KPI engine, in the file's order, and print
every KPI metric at AT in Prometheus text format on stdout. Events at or after AT are left
out. Open tickets, pending callbacks and agents' states are carried however old (up to a
year): a file spanning days shows the backlog the live system holds at AT. Without --at, AT is the newest event time in the file, ignoring mis-stamped outliers:
event times later than the fence Q3 + 10 x (Q3 - Q1) + engine.max_future_seconds (Q1, Q3: the
quartiles of the file's event times) are left out, and a line on stderr says how many, their
range and the fence. Rejected lines are counted and summarised on stderr; the exit code is 0
even then, and non-zero only when the file or the config cannot be read."""

from __future__ import annotations

import argparse
import os
import sys

from kpi_core.config import load_config
from kpi_core.errors import InvalidEventError
from kpi_core.events import parse_instant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.jsonl", help="one event per line")
    parser.add_argument("--config", default=os.environ.get("CCMON_CONFIG"),
                        help="TOML config (default: $CCMON_CONFIG, else built-in defaults)")
    parser.add_argument("--at", help="evaluation instant, RFC 3339 with an offset or epoch seconds "
                        "(default: the newest event time in the file, leaving out event times beyond "
                        "Q3 + 10 x IQR + engine.max_future_seconds of the file's event times, as mis-stamped)")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="show progress on stderr (default: when stderr is a terminal)")
    parser.add_argument("--quiet", action="store_true",
                        help="no summary on stderr (what the default --at left out is still said)")


def run(args: argparse.Namespace) -> int:
    from streams.replay import exclusion_note, replay, summary

    config = load_config(args.config)
    at = None
    if args.at is not None:
        try:
            at = parse_instant(args.at)
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
    note = exclusion_note(result.choice) if result.choice is not None else None
    if note is not None:
        print(f"ccmon replay: {note}", file=sys.stderr)
    if not args.quiet:
        print(summary(result), file=sys.stderr)
    return 0
