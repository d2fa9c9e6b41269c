"""The golden file (tests/golden/basic.jsonl): hand-computed KPIs, reproduced exactly, in
process (``streams.cli.replay.replay``) and through the ``ccmon replay`` command line."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness.paths import REPO
from prometheus_client.parser import text_string_to_metric_families

from kpi_core.config import Config
from kpi_core.events import parse_ts
from kpi_core.kpis import flatten
from streams.cli.replay import replay

GOLDEN = REPO / "tests" / "golden" / "basic.jsonl"
EXPECTED = REPO / "tests" / "golden" / "basic.expected.json"

pytestmark = pytest.mark.skipif(not GOLDEN.exists(), reason=f"no golden file at {GOLDEN}")

Labels = tuple[tuple[str, str], ...]


def golden_expected() -> tuple[str, dict[str, dict[str, float]]]:
    doc = json.loads(EXPECTED.read_text())
    return doc["at"], doc["kpis"]


def golden_key(key: str, queue: str, tenant: str = "default") -> tuple[str, Labels]:
    """``metric|window(|channel)`` -> a ``flatten`` key."""
    metric, window, *rest = key.split("|")
    labels: list[tuple[str, str]] = [("tenant", tenant), ("queue", queue)]
    if window:
        labels.append(("window", window))
    if rest:
        labels.append(("channel", rest[0]))
    return metric, tuple(labels)


def golden_cases() -> list[tuple[str, str, float]]:
    if not EXPECTED.exists():
        return []
    _at, kpis = golden_expected()
    return [(queue, key, value) for queue, values in kpis.items() for key, value in values.items()]


@pytest.fixture(scope="module")
def golden_flat() -> dict[tuple[str, Labels], float]:
    at, _kpis = golden_expected()
    result = replay(str(GOLDEN), Config(), parse_ts(at))
    assert not result.rejected, result.rejected
    return flatten(result.families)


@pytest.mark.parametrize(("queue", "key", "value"), golden_cases(), ids=lambda v: str(v))
def test_golden_kpi(golden_flat: dict[tuple[str, Labels], float], queue: str, key: str, value: float) -> None:
    got = golden_flat.get(golden_key(key, queue))
    assert got is not None, f"{key} absent for queue {queue}"
    assert math.isclose(got, value, rel_tol=0, abs_tol=1e-9), f"{key}: got {got}, want {value}"


@pytest.mark.parametrize(("queue", "key", "value"), golden_cases(), ids=lambda v: str(v))
def test_golden_kpi_for_all_queues_total(
    golden_flat: dict[tuple[str, Labels], float], queue: str, key: str, value: float
) -> None:
    """The golden file has a single queue, so the tenant total equals it."""
    got = golden_flat.get(golden_key(key, "_all"))
    assert got is not None, f"{key} absent for queue _all"
    assert math.isclose(got, value, rel_tol=0, abs_tol=1e-9), f"{key}: got {got}, want {value}"


def test_golden_has_only_the_expected_queues(golden_flat: dict[tuple[str, Labels], float]) -> None:
    queues = {dict(labels).get("queue") for _name, labels in golden_flat} - {None}
    assert queues == {"support", "_all"}
    tenants = {dict(labels).get("tenant") for _name, labels in golden_flat} - {None}
    assert tenants == {"default"}


def test_golden_every_support_series_equals_all(golden_flat: dict[tuple[str, Labels], float]) -> None:
    """Beyond the golden keys: with one queue, every queue series equals its ``_all`` twin
    (except the per-queue configuration gauges, which ``_all`` does not have)."""
    for (name, labels), value in golden_flat.items():
        d = dict(labels)
        if d.get("queue") != "support" or name == "ccmon_service_level_threshold_seconds":
            continue
        twin = tuple((k, "_all" if k == "queue" else v) for k, v in labels)
        assert golden_flat.get((name, twin)) == pytest.approx(value, abs=1e-9), (name, labels)


def ccmon_command() -> list[str]:
    exe = shutil.which("ccmon")
    if exe is not None:
        return [exe]
    return [sys.executable, "-c", "import sys; from streams.cli import main; sys.exit(main())"]


def parse_exposition(text: str) -> dict[tuple[str, Labels], float]:
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def canonical(flat: dict[tuple[str, Any], float]) -> dict[tuple[str, Labels], float]:
    return {(name, tuple(sorted(labels))): value for (name, labels), value in flat.items()}


def test_cli_replay_prints_the_same_numbers(golden_flat: dict[tuple[str, Labels], float]) -> None:
    at, kpis = golden_expected()
    proc = subprocess.run(
        [*ccmon_command(), "replay", str(GOLDEN), "--at", at],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    printed = canonical(parse_exposition(proc.stdout))
    for queue in ("support", "_all"):
        for key, value in kpis["support"].items():
            name, labels = golden_key(key, queue)
            got = printed.get((name, tuple(sorted(labels))))
            assert got is not None, f"{key} ({queue}) not printed"
            assert math.isclose(got, value, rel_tol=0, abs_tol=1e-9), (key, queue, got, value)
    # every printed series is what the in-process replay computed, and nothing is missing
    # (the lag gauge depends on nothing but `at` and the newest event, so it matches too)
    assert printed.keys() == canonical(golden_flat).keys()
    for key, value in canonical(golden_flat).items():
        assert printed[key] == pytest.approx(value, abs=1e-9, rel=1e-12), key


def test_cli_replay_default_at_is_newest_event(tmp_path: Path) -> None:
    """Without --at, ``at`` is the newest event time; the newest event itself (ts == at) is
    left out."""
    proc = subprocess.run(
        [*ccmon_command(), "replay", str(GOLDEN)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    printed = parse_exposition(proc.stdout)
    newest = max(json.loads(line)["ts"] for line in GOLDEN.read_text().splitlines() if line.strip())
    assert printed[("ccmon_event_lag_seconds", ())] >= 0
    assert printed[("ccmon_last_event_timestamp_seconds", ())] < newest
    assert "1 at or after --at left out" in proc.stderr


def test_cli_replay_unreadable_file_is_an_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*ccmon_command(), "replay", str(tmp_path / "missing.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert proc.stdout == ""
