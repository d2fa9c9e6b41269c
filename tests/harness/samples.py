"""What the tests compare: Prometheus text as ``(name, sorted labels) -> value``, and the KPIs
among it (without the series that describe the pipeline's own history and health), from
``/metrics``, from Redis read in this process, or from ``ccmon replay``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[Sample, float]

#: Series that describe the pipeline's own history and health, not the KPIs: a replayed batch
#: shows up as duplicates, and the exporter adds its own (lag, Redis's eviction policy,
#: partitions a watchdog found stuck). Replay/golden comparisons leave them out.
NOT_KPIS = {
    "ccmon_events_duplicate_total",
    "ccmon_event_lag_seconds",
    "ccmon_last_event_timestamp_seconds",
    "ccmon_consumer_lag",
    "ccmon_redis_eviction_safe",
    "ccmon_stuck_partition_timestamp_seconds",
}


def samples_of(text: str) -> Samples:
    """Prometheus text as ``(name, sorted labels) -> value``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics_text(redis_url: str, prefix: str, at: float) -> str:
    """What the exporter's /metrics would serve at ``at`` (same collector, same rendering),
    read in this process."""
    from kpi_core.exposition import render
    from streams.exporter import KpiCollector
    from streams.files import load_config
    from streams.redis.state import RedisState

    config = load_config(None)
    state = RedisState.from_url(redis_url, config, prefix=prefix, clock=lambda: at)
    try:
        return render(KpiCollector(config, state, lambda: at).families())
    finally:
        state.client.close()


def kpi_samples(redis_url: str, prefix: str, at: float) -> Samples:
    """:func:`metrics_text` without the series that describe the pipeline's own history."""
    return kpis_only(samples_of(metrics_text(redis_url, prefix, at)))


def kpis_only(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0] not in NOT_KPIS and not k[0].startswith("ccmon_exporter_")}


def replay_samples(path: Path, at: float) -> Samples:
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", str(path), "--at", str(at), "--quiet"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return kpis_only(samples_of(out.stdout.decode()))


def events_total(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "ccmon_events_total")


def diff(got: Samples, want: Samples) -> str:
    """Empty when equal (to 1e-9 relative); else the first differences, for the assertion."""
    missing = {k: v for k, v in want.items() if k not in got}
    extra = {k: v for k, v in got.items() if k not in want}
    wrong = {k: (got[k], v) for k, v in want.items() if k in got and abs(got[k] - v) > 1e-9 * max(1.0, abs(v))}
    if not missing and not extra and not wrong:
        return ""
    return (
        f"missing {len(missing)}: {list(missing.items())[:5]}\nextra {len(extra)}: {list(extra.items())[:5]}\n"
        f"wrong {len(wrong)} (got, want): {list(wrong.items())[:10]}"
    )


def wait_for_kpis(
    read: Any, want: Samples, timeout: float, processes: Sequence[subprocess.Popen[bytes]], logs: Any
) -> Samples:
    """Poll ``read()`` until it holds every event ``want`` counts and two reads agree."""
    deadline = time.monotonic() + timeout
    want_events = events_total(want)
    previous: Samples | None = None
    got: Samples = {}
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, f"a process exited ({process.args!r}):\n{logs()}"
        try:
            got = read()
        except OSError:
            time.sleep(0.5)
            continue
        if events_total(got) >= want_events and got == previous:
            return got
        previous = got
        time.sleep(1.0)
    pytest.fail(
        f"the KPIs did not settle within {timeout:.0f} s ({events_total(got):.0f} of {want_events:.0f} "
        f"events):\n{logs()}"
    )


def simulated_day(directory: Path) -> tuple[Path, list[bytes], float, Samples]:
    """:func:`~harness.kafka_topics.simulate`'s day in ``directory/day.jsonl``: the path, its
    lines, the instant after its last event (the next whole minute, plus one) and the KPIs
    ``ccmon replay`` gives at that instant."""
    import math

    from harness.kafka_topics import simulate
    from kpi_core.events import parse_line

    path = directory / "day.jsonl"
    lines = simulate(path)
    at = math.ceil(max(parse_line(line).ts for line in lines) / 60) * 60 + 60
    return path, lines, at, replay_samples(path, at)
