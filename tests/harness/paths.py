"""Where things are: the repository and its tests, for tests at any depth under tests/."""

from __future__ import annotations

from pathlib import Path

#: the repository's root (pyproject.toml, kpi_core/, streams/, docs/...)
REPO = Path(__file__).resolve().parents[2]
#: tests/ (golden/, data/, harness/, unit/, integration/, deploy/)
TESTS = REPO / "tests"
