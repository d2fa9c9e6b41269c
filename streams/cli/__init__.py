"""``ccmon``: the command line.

Each command lives in its own module of this package, ``streams.cli.<command>``, exposing
``add_arguments(parser)`` and ``run(args) -> int`` (and the command's own logic, unless a
package owns its concept); its ``--help`` description is its ``DESCRIPTION`` when it has one,
else its docstring. Heavy imports (faust, redis, kafka) happen inside ``run`` so ``ccmon
--help`` and ``ccmon replay`` start fast. ``python -m streams.cli`` runs it too (``__main__``).
:mod:`streams.cli.docs` is no command: ``make docs`` runs it to write docs/METRICS.md's KPI
tables. The progress line the long commands show is :mod:`streams.progress`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kpi_core.errors import CcmonError

if TYPE_CHECKING:
    from streams.settings import Settings

#: command -> one-line help; the command's module is ``streams.cli.<command>`` (``-`` read as ``_``)
COMMANDS: dict[str, str] = {
    "replay": "run a JSONL file through the engine and print the KPIs",
    "worker": "consume events from Kafka and keep KPI state in Redis",
    "exporter": "serve /metrics (and the JSON API) from Redis",
    "simulate": "generate realistic contact-center traffic",
    "demo": "live wallboard on simulated traffic, no services needed",
    "source": "import events from a PBX queue_log, call records or tickets",
    "rebuild": "recompute the KPI state in Redis from the events topic",
    "alertmanager-config": "render alertmanager.yml with webhook, Slack, Teams and e-mail receivers from CCMON_AM_*",
    "report": "interval reports (15m to 1d) per queue from a file or Kafka, as CSV/JSON/HTML",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccmon",
        description="ccmon: a streaming, real-time call-center monitor (Kafka -> Faust -> Redis -> Prometheus).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(command_module(name))
        # A command's --help describes it (DESCRIPTION, where the module's docstring is its design).
        command = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", module.__doc__))
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def command_module(name: str) -> str:
    """The module of command ``name``: ``alertmanager-config`` -> ``streams.cli.alertmanager_config``."""
    return f"{__name__}.{name.replace('-', '_')}"


def configured(args: argparse.Namespace) -> Settings:
    """The settings of a command's flags (else the environment, else the defaults), validated,
    with logging set up as they say."""
    from streams import settings

    configured_settings = settings.from_args(args)
    settings.setup_logging(configured_settings)
    return configured_settings


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"ccmon {version('ccmon')}"
    except Exception:  # not installed (running from a checkout)
        return "ccmon (development)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CcmonError as exc:
        from streams.logs import say  # a JSON log line when the logs are JSON (--log-format json)

        say(logging.getLogger("ccmon"), f"ccmon {args.command}: {exc}", sys.stderr, logging.ERROR)
        return 2
    except KeyboardInterrupt:
        return 130
