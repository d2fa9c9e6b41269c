"""Where ``make bench`` writes its section (bench/run_all.py ``write_section``): a full run becomes
docs/BENCHMARKS.md's "Latest full run", the run it replaces moves verbatim to the top of
docs/BENCHMARKS_HISTORY.md, the subject sections stay; a quick run goes to the history only."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.paths import REPO

sys.path.insert(0, str(REPO / "bench"))
import run_all

PAGE = """# Benchmarks

Intro.

## Latest full run

### Benchmark suite — 2026-11-23 12:28 UTC

Old run's table.

## The current word on each subject

### The scrape — 2026-12-07

Figures.

### Soak — 2026-11-23 09:32 UTC

Soak table.
"""

HISTORY = """# Benchmark history

Intro.

### Benchmark suite — 2026-11-23 10:42 UTC

Older run.
"""


def suite(stamp: str, body: str, quick: bool = False) -> str:
    heading = f"### Benchmark suite — {stamp}" + (
        " (quick mode: small sizes, proves the scripts; not a measurement)" if quick else ""
    )
    return f"{heading}\n\n{body}\n"


def test_a_full_run_replaces_the_latest_and_moves_it_to_the_history(tmp_path: Path) -> None:
    page, history = tmp_path / "BENCHMARKS.md", tmp_path / "BENCHMARKS_HISTORY.md"
    page.write_text(PAGE)
    history.write_text(HISTORY)
    assert run_all.write_section(suite("2026-12-08 09:00 UTC", "New run's table."), page, history) == page
    assert page.read_text() == PAGE.replace(
        "2026-11-23 12:28 UTC\n\nOld run's table.", "2026-12-08 09:00 UTC\n\nNew run's table."
    )
    assert history.read_text() == HISTORY.replace(
        "### Benchmark suite — 2026-11-23 10:42 UTC",
        "### Benchmark suite — 2026-11-23 12:28 UTC\n\nOld run's table.\n\n### Benchmark suite — 2026-11-23 10:42 UTC",
    )
    # --render of the same suite replaces its own section, and moves nothing
    run_all.write_section(suite("2026-12-08 09:00 UTC", "Re-rendered."), page, history)
    assert "Re-rendered." in page.read_text() and "New run's table." not in page.read_text()
    assert page.read_text().count("### Benchmark suite") == 1
    assert history.read_text().count("2026-11-23 12:28 UTC") == 1


def test_a_quick_run_goes_to_the_history_and_leaves_the_latest_full_run(tmp_path: Path) -> None:
    page, history = tmp_path / "BENCHMARKS.md", tmp_path / "BENCHMARKS_HISTORY.md"
    page.write_text(PAGE)
    assert run_all.write_section(suite("2026-12-08 09:00 UTC", "Small sizes.", quick=True), page, history) == history
    assert page.read_text() == PAGE
    text = history.read_text()
    assert text.startswith("# Benchmark history\n\n### Benchmark suite — 2026-12-08 09:00 UTC (quick mode")
    assert text.endswith("Small sizes.\n\n")


def test_the_first_run_on_a_page_without_the_heading(tmp_path: Path) -> None:
    page, history = tmp_path / "BENCHMARKS.md", tmp_path / "BENCHMARKS_HISTORY.md"
    page.write_text("# Benchmarks\n\nIntro.\n\n### Soak — 2026-11-23 09:32 UTC\n\nSoak table.\n")
    run_all.write_section(suite("2026-12-08 09:00 UTC", "First."), page, history)
    assert page.read_text() == (
        "# Benchmarks\n\nIntro.\n\n## Latest full run\n\n### Benchmark suite — 2026-12-08 09:00 UTC"
        "\n\nFirst.\n\n### Soak — 2026-11-23 09:32 UTC\n\nSoak table.\n"
    )
    assert not history.exists()


def test_the_repository_page_has_its_latest_full_run_and_history() -> None:
    text = (REPO / "docs" / "BENCHMARKS.md").read_text()
    lines = text.splitlines()
    at = lines.index(run_all.LATEST)
    assert lines[at + 2].startswith("### Benchmark suite — ") and "quick mode" not in lines[at + 2]
    assert "(BENCHMARKS_HISTORY.md)" in text
    assert (REPO / "docs" / "BENCHMARKS_HISTORY.md").read_text().startswith("# Benchmark history\n")
