"""``promtool check metrics`` (Prometheus's own linter) on the text ccmon really serves: a
simulated day with every event type, replayed through the engine and rendered by
:func:`kpi_core.exposition.render`, as ``/metrics`` serves it. The one finding kept on purpose
is the spec's ``ccmon_wait_seconds_quantile`` gauge (docs/METRICS.md); any other naming
problem fails here."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from kpi_core.config import config_from_dict
from kpi_core.exposition import render
from streams.cli.replay import replay
from streams.sim import SimParams, Simulator, default_queues, parse_start

#: promtool's advice that docs/METRICS.md keeps on purpose.
KEPT = {("ccmon_wait_seconds_quantile", 'non-summary metrics should not have "quantile" label')}


def _findings(text: str) -> set[tuple[str, str]]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by deploy/local/install-test-tools.sh (Debian: prometheus)"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    out = set()
    for line in (done.stdout + done.stderr).splitlines():
        name, _, problem = line.strip().partition(" ")
        if name:
            out.add((name, problem))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> str:
    start = parse_start("2026-11-20T07:00:00Z")
    params = SimParams(start=start, hours=2.0, queues=default_queues(6, None), seed=3, tenant="acme")
    path = tmp_path_factory.mktemp("lint") / "day.jsonl"
    with path.open("w") as handle:
        for _t, record in Simulator(params).stream():
            handle.write(record if isinstance(record, str) else json.dumps(record))
            handle.write("\n")
    result = replay(str(path), config_from_dict({}), at=start + 2 * 3600)
    assert result.accepted > 2000
    return render(result.families)


def test_promtool_finds_nothing_but_the_spec_quantile_gauge(served: str) -> None:
    assert "ccmon_knowledge_base_transfer_ratio" in served and "ccmon_waits{" in served
    assert _findings(served) == KEPT


def test_promtool_lint_is_not_vacuous() -> None:
    bad = "# HELP ccmon_wait_count x\n# TYPE ccmon_wait_count gauge\nccmon_wait_count 1\n"
    assert ("ccmon_wait_count", 'non-histogram and non-summary metrics should not have "_count" suffix') in _findings(
        bad
    )
