"""The employee pulse (``esat``, ``enps`` answered by agents): parsing, configuration, the
KPIs, and the batch release that keeps any single agent's answer from being read off the
exported figures (kpi_core.engine.surveys ``_pulse``; docs/KPI_ENGINE.md, "Employee pulse")."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest
from harness.reference import run_engine, series

from kpi_core.config import Config, TenantConfig, config_from_dict
from kpi_core.errors import ConfigError, InvalidEventError
from kpi_core.events import parse_event, parse_ts

AT = parse_ts("2026-11-20T16:00:00Z")
WINDOWS = ("5m", "15m", "1h", "today")


def answer(
    agent: str, ago: float, score: float, survey: str = "esat", queue: str = "q", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "survey.response",
        "survey": survey,
        "agent_id": agent,
        "queue": queue,
        "score": score,
        "ts": AT - ago,
        **extra,
    }


def esat(flat: dict[Any, float], window: str = "today", queue: str = "q") -> tuple[float | None, float | None]:
    """(answers counted, ESAT ratio) of a window (a queue with nothing counted but held-back
    answers has no series at all: 0 counted)."""
    return (
        series(flat, "ccmon_esat_responses", queue=queue, window=window) or 0.0,
        series(flat, "ccmon_esat_ratio", queue=queue, window=window),
    )


# --------------------------------------------------------------------------- events


def test_pulse_surveys_parse_with_their_scales() -> None:
    ev = parse_event({"event_id": "e", **answer("a1", 0, 4)})
    assert (ev.survey, ev.score, ev.scale_max, ev.agent_id) == ("esat", 4.0, 5, "a1")
    assert parse_event({"event_id": "e", **answer("a1", 0, 10, scale_max=10)}).scale_max == 10
    assert parse_event({"event_id": "e", **answer("a1", 0, 0, survey="enps")}).score == 0.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"agent_id": None}, "missing_field:agent_id"),
        ({"score": 6}, "score_out_of_range"),
        ({"survey": "enps", "score": 11}, "score_out_of_range"),
        ({"scale_max": 4}, "invalid_field:scale_max"),
        ({"queue": None}, "missing_field:queue"),
    ],
)
def test_bad_pulse_answers_are_rejected(raw: dict[str, Any], reason: str) -> None:
    event = {"event_id": "e", **answer("a1", 0, 4), **raw}
    event = {k: v for k, v in event.items() if v is not None}
    with pytest.raises(InvalidEventError) as info:
        parse_event(event)
    assert info.value.reason == reason


# --------------------------------------------------------------------------- configuration


def test_pulse_minimum_from_engine_and_per_tenant() -> None:
    assert Config().pulse_minimum("x") == 5
    config = config_from_dict({"engine": {"pulse_min_responses": 8}, "tenants": {"acme": {"pulse_min_responses": 3}}})
    assert (config.pulse_minimum("acme"), config.pulse_minimum("other")) == (3, 8)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"engine": {"pulse_min_responses": 2}},
            "config field 'engine.pulse_min_responses': must be a whole number in [3, 10000], got 2",
        ),
        (
            {"tenants": {"acme": {"pulse_min_responses": 4.5}}},
            "config field 'tenants.acme.pulse_min_responses': must be a whole number in [3, 10000], got 4.5",
        ),
        (
            {"tenants": {"acme": {"pulse_min_responses": True}}},
            "config field 'tenants.acme.pulse_min_responses': must be a whole number in [3, 10000], got True",
        ),
    ],
)
def test_a_bad_pulse_minimum_names_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert str(info.value) == message


# --------------------------------------------------------------------------- KPIs


def test_nothing_is_shown_below_the_minimum_of_agents() -> None:
    events = [answer(f"a{i}", 600 + i, 5) for i in range(4)]
    flat, _ = run_engine(Config(), events, AT)
    for window in WINDOWS:
        assert esat(flat, window) == (0.0, None)
        assert esat(flat, window, "_all") == (0.0, None)


def test_the_minimum_counts_different_agents_not_answers() -> None:
    events = [answer("a1", 600 + i, 1) for i in range(9)]
    flat, _ = run_engine(Config(), events, AT)
    assert esat(flat) == (0.0, None)


def test_esat_and_enps_from_whole_batches() -> None:
    # ESAT: 5 agents, scores 5, 4, 3, 2, 1 -> top two points (4-5 of 1-5): 2 of 5.
    events = [answer(f"a{i}", 1000 - i, 5 - i) for i in range(5)]
    # eNPS: 6 agents; the batch closes at the 5th (2 promoters, 1 passive, 2 detractors):
    # (2 - 2) / 5; the 6th answer waits for four more agents.
    scores = [10, 9, 8, 0, 6, 10]
    events += [answer(f"b{i}", 900 - i, s, survey="enps") for i, s in enumerate(scores)]
    flat, _ = run_engine(Config(), events, AT)
    assert esat(flat) == (5.0, 0.4)
    assert series(flat, "ccmon_enps_responses", window="today") == 5.0
    assert series(flat, "ccmon_enps_score", window="today") == 0.0
    # The 1h window holds both batches (at 1000 - 4 s and 900 - 4 s before AT), 5m neither.
    assert esat(flat, "1h") == (5.0, 0.4)
    assert esat(flat, "5m") == (0.0, None)


def test_the_figures_change_only_by_whole_batches_between_scrapes() -> None:
    """Answers arrive one by one; at every instant between them the exported figures hold the
    answers of whole batches, so the difference between two scrapes is never one agent."""
    config = Config()
    events = [answer(f"a{i}", 3000 - 60 * i, 5 if i % 3 else 1) for i in range(12)]
    counts = []
    for k in range(len(events) + 1):
        flat, _ = run_engine(config, events[:k], AT)
        counts.append(esat(flat))
    assert [c for c, _r in counts] == [0.0] * 5 + [5.0] * 5 + [10.0] * 3
    changes = {counts[k + 1] for k in range(len(counts) - 1) if counts[k + 1] != counts[k]}
    assert changes == {(5.0, 0.6), (10.0, 0.6)}  # scores 1 at answers 0, 3, 6, 9


def test_windows_and_queues_differ_by_whole_batches_only() -> None:
    """Differencing two windows, or a queue and the tenant's total, never isolates fewer
    answers than a batch: a queue below the minimum is left out of _all too."""
    events = [answer(f"a{i}", 7000 - 300 * i, 4) for i in range(15)]
    events += [answer(f"s{i}", 600 + i, 1, queue="small") for i in range(3)]
    flat, _ = run_engine(Config(), events, AT)
    counts = [esat(flat, window)[0] for window in WINDOWS]
    assert all(count is not None and count % 5 == 0 for count in counts), counts
    for a, b in itertools.combinations(counts, 2):
        assert a is not None and b is not None and abs(a - b) in (0.0, 5.0, 10.0, 15.0)
    assert esat(flat, queue="small") == (0.0, None)
    assert esat(flat, queue="_all") == esat(flat, queue="q") == (15.0, 1.0)


def test_the_tenant_minimum_applies() -> None:
    config = replace(Config(), tenants=MappingProxyType({"default": TenantConfig(pulse_min_responses=3)}))
    flat, _ = run_engine(config, [answer(f"a{i}", 600 + i, 5) for i in range(3)], AT)
    assert esat(flat) == (3.0, 1.0)


def test_arrival_order_does_not_matter() -> None:
    events = [answer(f"a{i % 7}", 5000 - 97 * i, (i * 3) % 5 + 1) for i in range(23)]
    events += [answer(f"b{i % 6}", 4000 - 89 * i, (i * 7) % 11, survey="enps") for i in range(17)]
    parsed = [parse_event({"event_id": f"e{i:03d}", **raw}) for i, raw in enumerate(events)]
    expected, _ = run_engine(Config(), parsed, AT)
    pulse = {k: v for k, v in expected.items() if "esat" in k[0] or "enps" in k[0]}
    assert series(expected, "ccmon_esat_responses", window="today") == 20.0  # 4 batches of 5 agents
    rng = random.Random(18)
    for _ in range(5):
        shuffled = parsed[:]
        rng.shuffle(shuffled)
        flat, _ = run_engine(Config(), shuffled + shuffled[:4], AT)  # and some duplicates
        assert {k: v for k, v in flat.items() if "esat" in k[0] or "enps" in k[0]} == pulse


def test_pulse_answers_leave_customer_surveys_alone() -> None:
    events = [answer(f"a{i}", 600 + i, 5) for i in range(5)]
    events.append({"type": "survey.response", "survey": "csat", "queue": "q", "score": 5, "ts": AT - 60})
    flat, _ = run_engine(Config(), events, AT)
    assert series(flat, "ccmon_csat_ratio", window="today") == 1.0
    assert esat(flat) == (5.0, 1.0)
    assert series(flat, "ccmon_survey_responses_total") == 1.0
    assert not any("agent" in dict(labels) for name, labels in flat if "esat" in name or "enps" in name)
