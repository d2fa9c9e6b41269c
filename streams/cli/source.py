"""Import events from the systems a contact center already runs: an Asterisk queue_log
(live or bulk), call-detail records through a declared column mapping, and help-desk ticket
event logs. Every source writes canonical events (docs/EVENTS.md) to a JSONL file or
to Kafka, reports rows it could not map with their line numbers, and never stops on a bad row.
See docs/SOURCES.md."""

from __future__ import annotations

import argparse
import importlib

#: source -> (module, one-line help); each module has add_arguments(parser) and run(args)
SOURCES: dict[str, tuple[str, str]] = {
    "asterisk": ("streams.sources.asterisk", "an Asterisk queue_log: the live file (--follow) or a table export (CSV)"),
    "cdr": ("streams.sources.cdr", "call-detail records (CSV/TSV) through a declared column mapping"),
    "tickets": (
        "streams.sources.tickets",
        "help-desk ticket event logs (CSV, or a zip of one) through a declared mapping",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", title="sources", required=True)
    for name, (module_name, help_text) in SOURCES.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(command)
        command.set_defaults(_source_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._source_run(args) or 0)
