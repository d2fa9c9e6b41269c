"""Write the KPI tables of ``docs/METRICS.md`` from the KPI catalog (``make docs``).

The tables sit between two marker lines (:data:`BEGIN`, :data:`END`); everything outside them
(the pipeline-health metrics, the command line) is written by hand. ``python -m
streams.cli.docs`` rewrites the file in place; ``--check`` exits 1 when it is stale
(``tests/unit/kpi_core/test_catalog.py`` fails then too), naming the command that fixes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kpi_core.catalog import metrics_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "METRICS.md"
BEGIN = "<!-- BEGIN KPI tables: generated from kpi_core/catalog.py by `make docs`; do not edit by hand -->"
END = "<!-- END KPI tables -->"
FIX = "make docs (python3 -m streams.cli.docs)"


def regenerated(text: str) -> str:
    """``text`` (docs/METRICS.md) with the KPI tables between the markers generated anew.
    Raises ValueError when the markers are missing or out of order."""
    head, begin, rest = text.partition(BEGIN + "\n")
    _old, end, tail = rest.partition(END + "\n")
    if not begin or not end:
        raise ValueError(f"docs/METRICS.md needs the marker lines {BEGIN!r} and then {END!r}")
    return f"{head}{BEGIN}\n\n{metrics_markdown()}\n{END}\n{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.cli.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale, write nothing")
    parser.add_argument("--path", type=Path, default=DOC, help="the file (default: docs/METRICS.md)")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    new = regenerated(text)
    if args.check:
        if new != text:
            print(f"{args.path} is stale: run {FIX}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
