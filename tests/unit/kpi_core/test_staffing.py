"""Live staffing (Erlang C) and the estimated wait: ``kpi_core.erlang`` and the families
``ccmon_staffing_agents_required``, ``ccmon_staffing_service_level_forecast`` and
``ccmon_estimated_wait_seconds`` (docs/KPIS.md, "Staffing and estimated wait").

Published values the formulas must reproduce:

* Call Centre Helper, "Erlang C Formula - Made Simple With an Easy Worked Example"
  (https://www.callcentrehelper.com/erlang-c-formula-example-121281.htm): 100 calls in 30
  minutes, AHT 180 s (A = 10 Erlangs), target 80 % answered in 20 s. With 11 agents the
  probability of waiting is 68.21 %, the ASA 122.8 s and the service level 39.0 %; the target
  needs 14 agents (13 give 79.6 %, 14 give 88.8 %).
* Mitan / Westbay Engineers, "The Erlang-C formula" (the worked example of
  https://www.mitan.co.uk/erlang/elgcmath.htm): 360 calls per half hour, 240 s calls, 55
  agents, 15 s answer target: A = 48 Erlangs, occupancy 87.3 %, probability of waiting 23.9 %
  (0.2387), ASA 8.2 s, service level 84.6 %.
* M/M/1 and M/M/2 in closed form: C(1, A) = A; C(2, A) = A^2 / (2 + A).

Erlang A (M/M/N+M) is checked against tests/unit/kpi_core/test_erlang.py's independent implementation,
which that module validates against the simulator through the engine.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from harness.queueing import erlang_a as reference_erlang_a

from kpi_core.config import Config, QueueConfig, Window
from kpi_core.engine import Engine
from kpi_core.erlang import (
    MAX_AGENTS,
    agents_required,
    answered_within,
    erlang_a,
    erlang_b,
    erlang_c,
    erlang_c_asa,
    queue_wait,
    service_level,
)
from kpi_core.events import parse_event
from kpi_core.kpis import QueueOutlook, flatten, queue_outlook, snapshot
from kpi_core.state import MemoryState

START = 1_795_132_800.0  # 2026-11-20T00:00:00Z
AT = START + 3600.0


def log_erlang_c(servers: int, load: float) -> float:
    """Erlang C from its textbook closed form, in log space (an independent reference)."""
    log_terms = [k * math.log(load) - math.lgamma(k + 1) for k in range(servers)]
    log_top = servers * math.log(load) - math.lgamma(servers + 1) + math.log(servers / (servers - load))
    peak = max(*log_terms, log_top)
    total = sum(math.exp(t - peak) for t in log_terms) + math.exp(log_top - peak)
    return math.exp(log_top - peak) / total


# -- the formulas against published values -------------------------------------------------------
def test_call_centre_helper_worked_example() -> None:
    load, aht, threshold = 100 * 180 / 1800, 180.0, 20.0
    assert load == 10.0
    assert erlang_c(11, load) == pytest.approx(0.6821, abs=5e-5)
    assert erlang_c_asa(11, load / aht, aht) == pytest.approx(122.8, abs=0.05)
    assert service_level(11, load, aht, threshold) == pytest.approx(0.390, abs=5e-4)
    assert service_level(13, load, aht, threshold) == pytest.approx(0.796, abs=5e-4)
    assert service_level(14, load, aht, threshold) == pytest.approx(0.888, abs=1e-3)
    assert agents_required(load, aht, threshold, 0.8) == 14


def test_mitan_worked_example() -> None:
    load, aht = 360 * 240 / 1800, 240.0
    assert load == 48.0
    assert load / 55 == pytest.approx(0.873, abs=5e-4)
    assert erlang_c(55, load) == pytest.approx(0.2387, abs=5e-5)
    assert erlang_c_asa(55, load / aht, aht) == pytest.approx(8.2, abs=0.05)
    assert service_level(55, load, aht, 15.0) == pytest.approx(0.846, abs=5e-4)
    # 55 agents is also the least that reaches 80 % in 15 s (54 give 79.0 %).
    assert service_level(54, load, aht, 15.0) < 0.8 <= service_level(55, load, aht, 15.0)
    assert agents_required(load, aht, 15.0, 0.8) == 55


def test_closed_forms() -> None:
    for load in (0.1, 0.5, 0.9):
        assert erlang_c(1, load) == pytest.approx(load)
        assert erlang_c(2, 2 * load) == pytest.approx((2 * load) ** 2 / (2 + 2 * load))
    assert erlang_b(1, 1.0) == pytest.approx(0.5)


# -- numerics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("servers", "load"), [(200, 180.0), (1_000, 975.0), (5_000, 4_900.0)])
def test_large_systems_match_the_closed_form_without_overflow(servers: int, load: float) -> None:
    # load ** servers / servers! overflows a float from about 171! on: the recursion does not.
    with pytest.raises(OverflowError):
        float(math.factorial(servers))
    assert erlang_c(servers, load) == pytest.approx(log_erlang_c(servers, load), rel=1e-9)


def test_required_agents_is_the_least_that_reaches_the_target_even_at_large_loads() -> None:
    for load, aht, threshold, target in (
        (0.3, 300.0, 20.0, 0.8),
        (10.0, 180.0, 20.0, 0.8),
        (480.0, 240.0, 15.0, 0.9),
        (20_000.0, 200.0, 20.0, 0.8),
        (20_000.0, 200.0, 0.0, 0.999),
    ):
        started = time.perf_counter()
        n = agents_required(load, aht, threshold, target)
        assert time.perf_counter() - started < 1.0  # one pass of the recursion, not one per candidate
        assert n is not None and n > load
        assert service_level(n, load, aht, threshold) >= target
        assert n - 1 <= load or service_level(n - 1, load, aht, threshold) < target
    # Square-root staffing: at 20,000 Erlangs 80 %/20 s needs only a few hundred agents over A.
    assert 20_000 < agents_required(20_000.0, 200.0, 20.0, 0.8) < 20_000 + 3 * math.sqrt(20_000)  # type: ignore[operator]


def test_edges() -> None:
    assert service_level(10, 10.0, 180.0, 20.0) == 0.0  # N <= A: the queue never empties
    assert service_level(9, 10.0, 180.0, 20.0) == 0.0
    assert agents_required(0.0, 180.0, 20.0, 0.8) == 1
    assert agents_required(10.0, 180.0, 20.0, 0.0) == 11  # the least N > A, whatever the target
    assert agents_required(10.0, 180.0, 0.0, 1.0) is not None  # SL reaches 1.0 in floating point
    assert agents_required(MAX_AGENTS + 5.0, 180.0, 20.0, 0.8) is None
    with pytest.raises(ValueError, match=r"target within 0\.\.1, got 1\.5"):
        agents_required(10.0, 180.0, 20.0, 1.5)
    with pytest.raises(ValueError, match=r"aht_seconds > 0 and threshold >= 0, got 0\.0, 20\.0"):
        service_level(12, 10.0, 0.0, 20.0)
    with pytest.raises(ValueError, match="finite load >= 0, got 0, nan"):
        agents_required(math.nan, 180.0, 20.0, 0.8)
    assert queue_wait(2, 3, 10, 180.0) == 0.0  # an agent is left free for the caller
    assert queue_wait(3, 3, 10, 180.0) == pytest.approx(18.0)  # the next of 10 agents to finish
    assert queue_wait(5, 0, 10, 180.0) == pytest.approx(108.0)
    assert queue_wait(5, 0, 0, 180.0) is None


# -- the families, through the engine -------------------------------------------------------------
def ev(kind: str, ts: float, **fields: object) -> dict[str, object]:
    ev.n += 1  # type: ignore[attr-defined]
    return {"event_id": f"e{ev.n}", "type": kind, "ts": ts, "tenant": "acme", **fields}  # type: ignore[attr-defined]


ev.n = 0  # type: ignore[attr-defined]


def run(
    events: list[dict[str, object]],
    config: Config,
    at: float = AT,
    names: tuple[str, ...] = (
        "ccmon_staffing_agents_required",
        "ccmon_staffing_service_level_forecast",
        "ccmon_estimated_wait_seconds",
    ),
) -> dict[tuple[str, str], float]:
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    for event in sorted(events, key=lambda e: float(e["ts"])):  # type: ignore[arg-type]
        assert engine.handle(parse_event(event), float(event["ts"])) == "accepted"  # type: ignore[arg-type]
    return {
        (name, dict(labels)["queue"]): value
        for (name, labels), value in flatten(snapshot(config, store, at)).items()
        if name in names
    }


def busy_queue(
    *, offered: int = 90, aht: float = 100.0, staffed: dict[str, int], waiting: int = 0
) -> list[dict[str, object]]:
    """Queue ``support``: ``offered`` calls answered in the last 15 minutes, each ended with a
    handle time of ``aht``; agents in the given states; ``waiting`` calls waiting now; and an
    older hour of calls (outside the window) that must not count."""
    events: list[dict[str, object]] = []
    for i in range(40):  # an hour earlier, much longer calls: outside the 15-minute window
        t = AT - 3000 + i
        events += [
            ev("call.offered", t, queue="support", call_id=f"old{i}"),
            ev("call.answered", t + 1, queue="support", call_id=f"old{i}", agent_id="x"),
            ev("call.ended", t + 2, queue="support", call_id=f"old{i}", talk_seconds=999.0),
        ]
    for i in range(offered):
        t = AT - 890 + i * 880 / offered
        events += [
            ev("call.offered", t, queue="support", call_id=f"c{i}"),
            ev("call.answered", t + 2, queue="support", call_id=f"c{i}", agent_id="a0"),
            ev(
                "call.ended",
                t + 5,
                queue="support",
                call_id=f"c{i}",
                talk_seconds=aht - 30,
                hold_seconds=10.0,
                acw_seconds=20.0,
            ),
        ]
    agent = 0
    for state, count in staffed.items():
        for _ in range(count):
            events.append(ev("agent.state", AT - 1000, agent_id=f"ag{agent}", state=state, queues=["support"]))
            agent += 1
    for i in range(waiting):
        events.append(ev("call.offered", AT - 60 + i, queue="support", call_id=f"w{i}"))
    return events


def test_families_follow_the_definitions() -> None:
    config = Config()
    staffed = {"available": 2, "on_call": 9, "acw": 1, "away": 3, "offline": 4}
    got = run(busy_queue(staffed=staffed, waiting=4), config)
    # lambda = (90 answered + 4 waiting) / 900 s, AHT 100 s (talk + hold + acw): 10.4 Erlangs
    load, aht = 94 / 900 * 100.0, 100.0
    assert got[("ccmon_staffing_agents_required", "support")] == agents_required(load, aht, 20.0, 0.8) == 14
    assert got[("ccmon_staffing_service_level_forecast", "support")] == pytest.approx(
        service_level(12, load, aht, 20.0)
    )
    # 4 waiting, 2 free: the caller is third in line for the 12 staffed agents.
    assert got[("ccmon_estimated_wait_seconds", "support")] == pytest.approx(3 * 100.0 / 12)
    # One queue: the tenant's figures are the queue's.
    assert {name: value for (name, queue), value in got.items() if queue == "_all"} == {
        name: value for (name, queue), value in got.items() if queue == "support"
    }


def test_tenant_totals_sum_the_required_agents_and_weight_by_arrivals() -> None:
    events = busy_queue(staffed={"on_call": 12}, waiting=3)  # support: 93 offered, 12 agents
    for i in range(30):  # sales: 30 calls of 60 s, 1 agent on a call, nobody waiting
        t = AT - 800 + i * 20
        events += [
            ev("call.offered", t, queue="sales", call_id=f"s{i}"),
            ev("call.answered", t + 1, queue="sales", call_id=f"s{i}", agent_id="b"),
            ev("call.ended", t + 5, queue="sales", call_id=f"s{i}", talk_seconds=60.0),
        ]
    events.append(ev("agent.state", AT - 1000, agent_id="sales1", state="available", queues=["sales"]))
    events.append(ev("agent.state", AT - 1000, agent_id="sales2", state="on_call", queues=["sales"]))
    got = run(events, Config())
    sup, sal = 93 / 900, 30 / 900
    assert got[("ccmon_staffing_agents_required", "sales")] == agents_required(sal * 60, 60.0, 20.0, 0.8)
    assert got[("ccmon_staffing_agents_required", "_all")] == (
        got[("ccmon_staffing_agents_required", "support")] + got[("ccmon_staffing_agents_required", "sales")]
    )
    for name in ("ccmon_staffing_service_level_forecast", "ccmon_estimated_wait_seconds"):
        assert got[(name, "_all")] == pytest.approx(
            (sup * got[(name, "support")] + sal * got[(name, "sales")]) / (sup + sal)
        )
    assert got[("ccmon_estimated_wait_seconds", "sales")] == 0.0  # an agent is free
    assert got[("ccmon_estimated_wait_seconds", "support")] == pytest.approx(4 * 100.0 / 12)


def test_target_and_threshold_come_from_the_queue() -> None:
    config = Config(defaults=QueueConfig(sl_threshold_seconds=10.0, targets={"service_level": 0.95}))
    got = run(busy_queue(staffed={"on_call": 8}), config)
    assert got[("ccmon_staffing_agents_required", "support")] == agents_required(10.0, 100.0, 10.0, 0.95) == 16
    assert got[("ccmon_staffing_service_level_forecast", "support")] == 0.0  # 8 agents for 10 Erlangs
    # No target: no required agents, still a forecast.
    got = run(busy_queue(staffed={"on_call": 12}), Config(defaults=QueueConfig(targets={})))
    assert ("ccmon_staffing_agents_required", "support") not in got
    assert got[("ccmon_staffing_service_level_forecast", "support")] == pytest.approx(
        service_level(12, 10.0, 100.0, 20.0)
    )


def test_absent_without_arrivals_or_handle_time() -> None:
    config = Config()
    # Calls offered and waiting but none ended in the window: no AHT.
    events = [ev("call.offered", AT - 100 + i, queue="support", call_id=f"n{i}") for i in range(5)]
    events.append(ev("agent.state", AT - 500, agent_id="a", state="on_call", queues=["support"]))
    got = run(events, config)
    assert ("ccmon_staffing_agents_required", "support") not in got
    assert ("ccmon_staffing_service_level_forecast", "support") not in got
    assert ("ccmon_estimated_wait_seconds", "support") not in got
    # Nothing in the last 15 minutes (lambda = 0), an agent free: no staffing, a wait of 0
    # (and no tenant total: it weights by arrivals).
    got = run([ev("agent.state", AT - 500, agent_id="a", state="available", queues=["support"])], config)
    assert got == {("ccmon_estimated_wait_seconds", "support"): 0.0}


def test_staffing_window_is_read_when_no_15m_window_is_configured() -> None:
    config = Config(windows=(Window("5m", 300), Window("1h", 3600)))
    got = run(busy_queue(staffed={"on_call": 12}), config)
    assert got[("ccmon_staffing_agents_required", "support")] == 13


def test_call_records_only_fall_back_on_the_recent_answer_delay() -> None:
    """No agent state at all (a CDR import): the estimated wait is the mean wait of the calls
    answered in the last 15 minutes; the forecast with no staffed agent is 0."""
    events = busy_queue(staffed={}, waiting=2)
    got = run(events, Config())
    assert got[("ccmon_estimated_wait_seconds", "support")] == pytest.approx(2.0)  # every call answered after 2 s
    assert got[("ccmon_staffing_service_level_forecast", "support")] == 0.0
    assert got[("ccmon_staffing_agents_required", "support")] == agents_required(92 / 9, 100.0, 20.0, 0.8)


def test_queue_outlook_is_the_pure_core() -> None:
    comps = {"offered": 90.0, "handled": 90.0, "handle_sum": 9000.0, "answered": 90.0}
    outlook = queue_outlook(comps, {"available": 0, "on_call": 14}, 0, QueueConfig())
    sl = service_level(14, 10.0, 100.0, 20.0)
    assert outlook == QueueOutlook(0.1, 100.0, 14, 13, sl, 100.0 / 14, sl)  # nobody hung up: Erlang A is Erlang C
    # 8 agents for 10 Erlangs: Erlang C's queue never empties, but callers who hang up (12
    # abandons over 2,400 s of waiting: a mean patience of 200 s) keep Erlang A's finite.
    comps |= {"abandoned": 12.0, "wait_sum": 2400.0}
    outlook = queue_outlook(comps, {"on_call": 8}, 0, QueueConfig())
    assert outlook.service_level_forecast == 0.0
    assert outlook.service_level_forecast_erlang_a == erlang_a(8, 10.0, 100.0, 200.0, 20.0)[0]
    assert 0.05 < outlook.service_level_forecast_erlang_a < 0.6


@pytest.mark.parametrize(
    ("servers", "lam", "aht", "patience", "threshold"),
    [
        (2, 1 / 43.75, 70.0, 90.0, 20.0),
        (10, 10 / 180, 180.0, 120.0, 20.0),
        (5, 0.06, 100.0, 60.0, 30.0),
        (3, 0.2, 60.0, 30.0, 20.0),
        (3, 0.05, 60.0, 30.0, 0.0),
    ],
)
def test_erlang_a_matches_the_reference_the_simulator_validates(
    servers: int, lam: float, aht: float, patience: float, threshold: float
) -> None:
    """tests/unit/kpi_core/test_erlang.py's Erlang A is checked against the simulator through the engine
    (abandon rate, service level, ASA); the exported one must agree with it."""
    reference = reference_erlang_a(servers, lam, 1 / aht, 1 / patience, threshold)
    sl, abandoned = erlang_a(servers, lam * aht, aht, patience, threshold)
    assert sl == pytest.approx(reference["sl"], abs=1e-9)
    assert abandoned == pytest.approx(reference["p_abandon"], abs=1e-9)


def test_erlang_a_at_scale_and_its_limits() -> None:
    # Very patient callers: Erlang C.
    assert erlang_a(12, 10.0, 180.0, 1e7, 20.0)[0] == pytest.approx(service_level(12, 10.0, 180.0, 20.0), abs=1e-4)
    # Large and overloaded (N < A): finite, abandonment absorbs the excess; no overflow.
    started = time.perf_counter()
    sl, abandoned = erlang_a(2_000, 2_100.0, 300.0, 120.0, 20.0)
    assert time.perf_counter() - started < 1.0
    assert 0.0 < sl < 1.0 and abandoned == pytest.approx((2_100 - 2_000) / 2_100, abs=0.02)
    assert erlang_a(0, 5.0, 180.0, 60.0, 20.0) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"finite patience_seconds > 0 and threshold >= 0, got 180\.0, inf, 20\.0"):
        erlang_a(10, 5.0, 180.0, math.inf, 20.0)


def whole_chain_answered_within(queued: Any, a: Any, theta: float, threshold: float) -> float:
    """The uniformised walk over every position of the chain, each step: the reference for
    kpi_core.erlang.answered_within's closed form."""
    rate = float(a[-1] + theta)
    stay, move = 1.0 - (a + theta) / rate, a / rate
    lam_t = rate * threshold
    vector = queued.copy()
    answered = within = 0.0
    step = 0
    while True:
        term = math.exp(-lam_t + step * math.log(lam_t) - math.lgamma(step + 1)) if lam_t > 0 else float(step == 0)
        within += term * answered
        if lam_t == 0 or (step > lam_t and term < 1e-15):
            return within
        answered += float(vector[0] * move[0])
        shifted = np.zeros_like(vector)
        shifted[:-1] = vector[1:] * move[1:]
        vector = vector * stay + shifted
        step += 1


@pytest.mark.parametrize("length", [1, 2, 3, 5, 41, 300, 1000])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 20.0, 120.0])
@pytest.mark.parametrize(
    ("servers", "aht", "patience"), [(1, 60.0, 30.0), (12, 250.0, 190.0), (300, 180.0, 900.0), (5, 100.0, 10.0)]
)
def test_erlang_a_closed_form_is_the_uniformised_walk(
    length: int, threshold: float, servers: int, aht: float, patience: float
) -> None:
    """The closed form (a regularised incomplete beta function a position) equals the walk of
    the whole chain: short chains and long ones, thresholds of no step, a few and hundreds,
    patience far shorter and far longer than the threshold."""
    rng = np.random.default_rng(length * 1000 + servers)
    queued = rng.random(length)
    queued /= queued.sum() * 1.5
    theta = 1 / patience
    a = servers / aht + np.arange(length) * theta
    got = answered_within(queued, a, theta, threshold)
    assert got == pytest.approx(whole_chain_answered_within(queued, a, theta, threshold), rel=0, abs=1e-12)
    assert (got > 0) == (threshold > 0)


def test_erlang_a_family_uses_the_patience_of_the_last_15_minutes() -> None:
    events = busy_queue(staffed={"on_call": 9})  # 90 calls answered after 2 s, AHT 100 s
    for i in range(10):  # 10 callers who hung up after 40 s
        t = AT - 600 + i * 30
        events += [
            ev("call.offered", t, queue="support", call_id=f"ab{i}"),
            ev("call.abandoned", t + 40, queue="support", call_id=f"ab{i}", wait_seconds=40.0),
        ]
    store_names = ("ccmon_staffing_service_level_forecast", "ccmon_staffing_service_level_forecast_erlang_a")
    got = run(events, Config(), names=store_names)
    load = 100 / 900 * 100.0  # 100 offered
    patience = (90 * 2.0 + 10 * 40.0) / 10  # every caller's wait / abandons
    assert got[("ccmon_staffing_service_level_forecast", "support")] == 0.0  # 9 agents, 11.1 Erlangs
    assert got[("ccmon_staffing_service_level_forecast_erlang_a", "support")] == pytest.approx(
        erlang_a(9, load, 100.0, patience, 20.0)[0]
    )
    assert got[("ccmon_staffing_service_level_forecast_erlang_a", "_all")] == pytest.approx(
        got[("ccmon_staffing_service_level_forecast_erlang_a", "support")]
    )
