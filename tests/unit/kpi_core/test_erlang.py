"""The simulator plus the KPI engine against queueing theory.

A single queue with stationary load (flat profile, fixed agents, exponential talk times, no
ring time, no after-call work) is an M/M/c queue (Erlang C) when callers never hang up, and
an M/M/c+M queue (Erlang A, Palm's model) with exponential patience. Its events go through
the real pipeline (``parse_event`` -> ``Engine`` over ``MemoryState`` -> ``snapshot``) and
the service level at 20 s, the ASA and the abandon rate are read from the exported metrics.

Why these tolerances
--------------------
Finite-sample noise. Waits are strongly autocorrelated (one long busy period delays many
callers), so an estimate over N calls is much noisier than 1/sqrt(N) of independent ones:

* Erlang C, 400 simulated hours, about 20,500 calls: run-to-run spread (standard deviation)
  about 0.7 points of service level and 5 % of ASA. Over 300 seeds of 480 hours the mean
  matched the formulas within 0.05 points and 0.3 %: the model has no measurable bias.
* Erlang A, 120 hours, about 10,000 calls (abandonment shortens busy periods, so it
  converges faster): about 1.0 point of service level, 0.6 points of abandon rate, 4 % ASA;
  over 16 seeds of 480 hours the means matched within 1.5 standard errors.

The assertions allow +-3 points of service level, +-15 % of ASA and +-2 points of abandon
rate: at least three standard deviations, so they hold for practically any seed, while a
modelling error of a few percent (a wrong patience clock, a non-FIFO queue, an idle agent
while calls wait) fails them. Together the two runs take about 12 s.

The timescale is compressed (70-second calls) to keep waits short relative to the run;
what the formulas depend on is the load and threshold / handle time, both realistic here.
"""

from __future__ import annotations

import numpy as np
import pytest
from harness.queueing import erlang_a

from kpi_core.config import Config, QueueConfig, Window
from kpi_core.engine import Engine
from kpi_core.erlang import (
    agents_for_service_level,
    erlang_b,
    erlang_c,
    erlang_c_asa,
    erlang_c_service_level,
)
from kpi_core.events import parse_event
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.sim import QueueSpec, SimParams, Simulator

START = 1_795_132_800.0  # 2026-11-20T00:00:00Z
THRESHOLD = 20.0


# -- the simulated queue through the engine ----------------------------------------------------
def stationary_queue(*, agents: int, calls_per_hour: float, talk_seconds: float, patience: float | None) -> QueueSpec:
    return QueueSpec(
        "erlang",
        calls_per_hour=calls_per_hour,
        agents=agents,
        talk_seconds=talk_seconds,
        talk_distribution="exponential",
        hold_share=0.0,
        acw_seconds=0.0,
        ring_seconds=0.0,
        rona_share=0.0,
        patience_seconds=patience,
        max_wait_seconds=None,
        voicemail_share=0.0,
        callback_share=0.0,
        transfer_share=0.0,
        anonymous_share=1.0,  # no customer ids: no callbacks, no redials
        redial_share=0.0,
        survey_share=0.0,
        profile="flat",
        open_hours=None,
    )


def measure(spec: QueueSpec, seed: int, hours: float) -> dict[str, float]:
    """Simulate, run every event through the engine, read the lifetime counters."""
    sim = Simulator(
        SimParams(start=START, hours=hours, queues=(spec,), seed=seed, shifts=False, kb_sessions_per_hour=0.0)
    )
    # The 'offered' formula (answered within / (answered + abandoned)) is what Erlang A
    # predicts; with no abandonment it equals the default. Short windows keep the engine's
    # per-entity state small; the lifetime counters hold the whole run.
    config = Config(
        windows=(Window("5m", 300),),
        defaults=QueueConfig(sl_threshold_seconds=THRESHOLD, sl_formula="offered", short_abandon_seconds=0.0),
    )
    store = MemoryState()
    engine = Engine(config, store)
    outcomes: dict[str, int] = {}
    for emit_at, record in sim.stream():
        assert isinstance(record, dict)
        outcome = engine.handle(parse_event(record), emit_at)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert set(outcomes) == {"accepted"}, outcomes
    metrics = flatten(snapshot(config, store, START + hours * 3600))
    labels = (("tenant", "default"), ("queue", "erlang"))
    answered_hist = (*labels, ("outcome", "answered"))

    def get(name: str, extra: tuple[tuple[str, str], ...] = labels) -> float:
        return metrics[(name, extra)]

    answered = get("ccmon_calls_answered_total")
    abandoned = get("ccmon_calls_abandoned_total")
    return {
        "answered": answered,
        "sl": get("ccmon_service_level_numerator_total") / get("ccmon_service_level_denominator_total"),
        "asa": get("ccmon_call_wait_seconds_sum", answered_hist) / get("ccmon_call_wait_seconds_count", answered_hist),
        "abandon_rate": abandoned / (answered + abandoned),
    }


# -- the formulas themselves ----------------------------------------------------------------------
def test_erlang_formulas_known_values() -> None:
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # A textbook case: 10 agents, 8 Erlangs -> P(wait) ~ 40.9 %.
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=1e-4)
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c_asa(2, 1 / 70, 70) == pytest.approx(70 / 3)
    assert erlang_c_service_level(2, 1 / 70, 70, 0.0) == pytest.approx(2 / 3)
    assert agents_for_service_level(100 / 3600, 180, 0.8, 20) == 8


def test_erlang_a_reduces_to_erlang_c_and_balances_flows() -> None:
    lam, mu = 1 / 70, 1 / 70
    nearly_patient = erlang_a(2, lam, mu, 1e-9, THRESHOLD)
    assert nearly_patient["sl"] == pytest.approx(erlang_c_service_level(2, lam, 70, THRESHOLD), abs=1e-6)
    assert nearly_patient["asa"] == pytest.approx(erlang_c_asa(2, lam, 70), rel=1e-5)
    # Abandonment flow balance: theta * E[queue length] = lam * P(abandon).
    theta = 1 / 90
    result = erlang_a(2, 1 / 43.75, mu, theta, THRESHOLD)
    weights = [1.0]
    for n in range(1, 400):
        weights.append(weights[-1] * (1 / 43.75) / (min(n, 2) * mu + max(n - 2, 0) * theta))
    pi = np.array(weights) / sum(weights)
    expected_queue = sum(max(n - 2, 0) * p for n, p in enumerate(pi))
    assert result["p_abandon"] == pytest.approx(theta * expected_queue * 43.75, rel=1e-9)


# -- simulation against theory --------------------------------------------------------------------
@pytest.mark.slow
def test_erlang_c_service_level_and_asa() -> None:
    """2 agents, 70 s calls, 51.4 calls/h (load 1 Erlang, 50 % occupancy): Erlang C gives
    P(wait) 1/3, SL(20 s) 74.95 %, ASA 23.3 s."""
    agents, talk, calls_per_hour = 2, 70.0, 3600 / 70
    lam = calls_per_hour / 3600
    expected_sl = erlang_c_service_level(agents, lam, talk, THRESHOLD)
    expected_asa = erlang_c_asa(agents, lam, talk)
    got = measure(
        stationary_queue(agents=agents, calls_per_hour=calls_per_hour, talk_seconds=talk, patience=None),
        seed=11,
        hours=400,
    )
    assert got["answered"] > 19_000
    assert got["abandon_rate"] == 0.0
    assert got["sl"] == pytest.approx(expected_sl, abs=0.03), (got, expected_sl)
    assert got["asa"] == pytest.approx(expected_asa, rel=0.15), (got, expected_asa)


@pytest.mark.slow
def test_erlang_a_abandonment_service_level_and_asa() -> None:
    """2 agents, 70 s calls, 82 calls/h (occupancy would be 80 % without abandonment) and
    callers who hang up after 90 s on average (exponential patience)."""
    agents, talk, calls_per_hour, patience = 2, 70.0, 3600 / 43.75, 90.0
    expected = erlang_a(agents, calls_per_hour / 3600, 1 / talk, 1 / patience, THRESHOLD)
    assert 0.05 < expected["p_abandon"] < 0.25  # a regime where abandonment matters
    got = measure(
        stationary_queue(agents=agents, calls_per_hour=calls_per_hour, talk_seconds=talk, patience=patience),
        seed=12,
        hours=120,
    )
    assert got["answered"] > 7_000
    assert got["abandon_rate"] == pytest.approx(expected["p_abandon"], abs=0.02), (got, expected)
    assert got["sl"] == pytest.approx(expected["sl"], abs=0.03), (got, expected)
    assert got["asa"] == pytest.approx(expected["asa"], rel=0.15), (got, expected)
