"""The job the peers do (bench/bench_peers.py): per queue, over the 15 minutes before the end
instant, the service level (KPIS.md default: answered within 20 s / (answered + abandoned -
short abandoned), short = wait < 5 s) and the average wait (answered, abandoned, timeout and
voicemail calls), from each call outcome event's ``queue`` and ``wait_seconds``.

Why outcome events alone are enough (and where that rests on the input): ccmon attributes a
call *leg* (one per offer) to the window holding its first terminal event and takes
``wait_seconds`` when the event carries it. In the simulator's events every outcome
(``call.answered``, ``call.abandoned``, ``call.timeout``, ``call.voicemail``) carries
``queue`` and ``wait_seconds``, and each leg has at most one of them (a transfer ends a leg
and the next offer starts a new one), so summing outcome events is the same computation.
Transfers carry no answer and add nothing to either KPI. Other events are read and skipped.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

OUTCOMES = ("call.answered", "call.abandoned", "call.timeout", "call.voicemail")
SL_THRESHOLD = 20.0
SHORT_ABANDON = 5.0
WINDOW = 900.0
#: answered, answered within threshold, abandoned, short abandoned, waits counted, wait sum
ZERO = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def ts_seconds(value: Any) -> float:
    """An event's ``ts``: RFC 3339 (the simulator writes ``...Z`` with milliseconds) or epoch."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(value).timestamp()


def contribution(event: dict[str, Any]) -> tuple[float, ...] | None:
    """The six components an event adds, or None for an event that adds nothing."""
    kind = event.get("type")
    if kind not in OUTCOMES:
        return None
    wait = float(event["wait_seconds"])
    if kind == "call.answered":
        return (1.0, 1.0 if wait <= SL_THRESHOLD else 0.0, 0.0, 0.0, 1.0, wait)
    if kind == "call.abandoned":
        return (0.0, 0.0, 1.0, 1.0 if wait < SHORT_ABANDON else 0.0, 1.0, wait)
    return (0.0, 0.0, 0.0, 0.0, 1.0, wait)


def add(a: Any, b: Any) -> list[float]:
    a = a or ZERO
    return [x + y for x, y in zip(a, b, strict=True)]


def kpis(components: Any) -> dict[str, float | None]:
    """``{"sl": ..., "avg_wait": ...}``; None where the denominator is empty (as ccmon: absent)."""
    answered, within, abandoned, short, wait_n, wait_sum = components or ZERO
    denominator = answered + abandoned - short
    return {
        "sl": within / denominator if denominator > 0 else None,
        "avg_wait": wait_sum / wait_n if wait_n > 0 else None,
    }


def write_result(path: str, **document: Any) -> None:
    # perf_counter is CLOCK_MONOTONIC (system-wide on Linux): bench_peers.py places the
    # peer's first-to-last interval (written_at - seconds, written_at) on its own CPU samples.
    document.setdefault("written_at", time.perf_counter())
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
    tmp.rename(path)
