"""Erlang B and C: queueing formulas for staffing and wait estimates (pure, no I/O).

One queue served by ``N`` interchangeable agents, Poisson arrivals at rate λ, exponential
handle times of mean AHT (so an offered load ``A = λ x AHT`` Erlangs), FIFO, callers who never
hang up: the M/M/N queue of Erlang C. ``kpi_core.kpis`` uses it for the live staffing
families (``ccmon_staffing_agents_required``, ``ccmon_staffing_service_level_forecast``,
docs/KPIS.md "Staffing and estimated wait"), and the simulator (``streams.sim``) sizes
its default staffing with it and is validated against it (``tests/unit/kpi_core/test_erlang.py``).

Numerics. Nothing here computes ``A^N`` or ``N!``: the blocking probability comes from the
recursion ``B(0) = 1, B(k) = A B(k-1) / (k + A B(k-1))`` (every term in [0, 1], no overflow
for any N or A), and ``C = N B / (N - A (1 - B))`` for ``N > A``. The search for the
required agents continues the same recursion one agent at a time, so it costs O(N) in all,
not O(N²).
"""

from __future__ import annotations

import math
from typing import Any

#: The required-agents search gives up (returns None) beyond this many agents: far more than
#: any queue has, and it bounds the work of a corrupt load.
MAX_AGENTS = 1_000_000


def _check(servers: int, load: float) -> None:
    if servers < 0 or not load >= 0 or math.isinf(load):
        raise ValueError(f"Erlang formulas need servers >= 0 and a finite load >= 0, got {servers}, {load}")


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of M/M/c/c with ``load`` = λ/μ Erlangs (stable recursion)."""
    _check(servers, load)
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def _c_from_b(servers: int, load: float, b: float) -> float:
    return servers * b / (servers - load * (1 - b))


def erlang_c(servers: int, load: float) -> float:
    """Probability that a call waits in M/M/c (Erlang C); 1.0 when ``load >= servers``."""
    if load >= servers:
        _check(servers, load)
        return 1.0
    return _c_from_b(servers, load, erlang_b(servers, load))


def _sl(servers: int, load: float, c: float, aht_seconds: float, threshold: float) -> float:
    return 1.0 - c * math.exp(-(servers - load) * threshold / aht_seconds)


def service_level(servers: int, load: float, aht_seconds: float, threshold: float) -> float:
    """SL(N) = 1 - C(N, A) x exp(-(N - A) x T / AHT): the share of calls answered within
    ``threshold`` seconds with ``servers`` agents and ``load`` Erlangs; 0 when N <= A (the
    queue grows without bound)."""
    if aht_seconds <= 0 or threshold < 0:
        raise ValueError(f"service_level needs aht_seconds > 0 and threshold >= 0, got {aht_seconds}, {threshold}")
    if servers <= load:
        _check(servers, load)
        return 0.0
    return _sl(servers, load, erlang_c(servers, load), aht_seconds, threshold)


def agents_required(load: float, aht_seconds: float, threshold: float, target: float) -> int | None:
    """The least N > A with SL(N) >= ``target`` (a share, 0..1); None when no N up to
    :data:`MAX_AGENTS` reaches it. O(N): the Erlang B recursion continues from N - 1."""
    if aht_seconds <= 0 or threshold < 0:
        raise ValueError(f"agents_required needs aht_seconds > 0 and threshold >= 0, got {aht_seconds}, {threshold}")
    if not 0 <= target <= 1:
        raise ValueError(f"agents_required needs a target within 0..1, got {target}")
    _check(0, load)
    first = math.floor(load) + 1
    if first > MAX_AGENTS:
        return None
    b = erlang_b(first - 1, load)
    for n in range(first, MAX_AGENTS + 1):
        b = load * b / (n + load * b)
        sl = _sl(n, load, _c_from_b(n, load, b), aht_seconds, threshold)
        if sl >= target or sl >= 1.0:  # (SL reaches 1.0 in floating point once C underflows)
            return n
    return None


def erlang_c_service_level(servers: int, arrivals_per_second: float, aht_seconds: float, threshold: float) -> float:
    """Share of calls answered within ``threshold`` seconds in M/M/c (FIFO, no abandonment)."""
    return service_level(servers, arrivals_per_second * aht_seconds, aht_seconds, threshold)


def erlang_c_asa(servers: int, arrivals_per_second: float, aht_seconds: float) -> float:
    """Average speed of answer (mean wait of all calls) in M/M/c, seconds."""
    load = arrivals_per_second * aht_seconds
    if load >= servers:
        return math.inf
    return erlang_c(servers, load) * aht_seconds / (servers - load)


def agents_for_service_level(
    arrivals_per_second: float, aht_seconds: float, target: float = 0.8, threshold: float = 20.0
) -> int:
    """Fewest agents (at least 1) that reach ``target`` service level within ``threshold``
    (Erlang C)."""
    needed = agents_required(arrivals_per_second * aht_seconds, aht_seconds, threshold, target)
    if needed is None:
        raise ValueError(
            f"no staffing up to {MAX_AGENTS} agents reaches {target} for a load of "
            f"{arrivals_per_second * aht_seconds} Erlangs"
        )
    return max(1, needed)


def queue_wait(ahead: int, free: int, staffed: int, aht_seconds: float) -> float | None:
    """Expected wait of a caller who joins now behind ``ahead`` waiting calls, with ``free``
    of the ``staffed`` agents idle: 0 when a free agent is left for the caller, else the
    time for ``ahead - free + 1`` agents to come free, ``(ahead - free + 1) x AHT / N`` (in
    M/M/N, while all N agents are busy, calls end at rate N / AHT whatever happened before:
    the queue-length predictor of Whitt, "Predicting queueing delays", Management Science
    45(6), 1999). None without staffed agents or an AHT."""
    if ahead < free:
        return 0.0
    if staffed <= 0 or not aht_seconds > 0:
        return None
    return (ahead - free + 1) * aht_seconds / staffed


def erlang_a(
    servers: int, load: float, aht_seconds: float, patience_seconds: float, threshold: float
) -> tuple[float, float]:
    """M/M/N+M (Erlang A, Palm's model): Erlang C's queue whose callers hang up after an
    exponential patience of mean ``patience_seconds``. Returns ``(service level, share
    abandoned)``: the share of arrivals answered within ``threshold`` seconds (the ``offered``
    service-level formula) and the share who hang up.

    Exact for the model: the number in system is a birth-death chain (births λ, deaths
    ``min(n, N) μ + max(n - N, 0) θ``) whose stationary weights are summed in log space
    (no overflow at any N) and truncated where they fall under 1e-16 of the total; an arrival
    that finds ``k`` callers queued (PASTA) moves up at ``a_j = N μ + j θ`` while ``j`` are
    ahead and is answered from ``j = 0``, its own patience running out at rate θ throughout;
    the probability of being answered within the threshold is in closed form
    (:func:`answered_within`).
    """
    if aht_seconds <= 0 or threshold < 0 or not patience_seconds > 0 or math.isinf(patience_seconds):
        raise ValueError(
            f"erlang_a needs aht_seconds > 0, a finite patience_seconds > 0 and threshold >= 0, "
            f"got {aht_seconds}, {patience_seconds}, {threshold}"
        )
    _check(servers, load)
    if servers == 0:
        return 0.0, 1.0
    if load == 0:
        return 1.0, 0.0
    import numpy as np  # on first use: importing kpi_core loads the standard library only

    mu, theta = 1.0 / aht_seconds, 1.0 / patience_seconds
    lam = load * mu
    # Queue positions until the chain's weights are negligible: past the drift point
    # (N μ + j θ > λ) they fall at least geometrically.
    drift = max(0.0, (lam - servers * mu) / theta)
    ahead = int(drift + 40 + 12 * math.sqrt(drift + 1))
    while True:
        n = np.arange(1, servers + ahead + 1, dtype=float)
        deaths = np.minimum(n, servers) * mu + np.maximum(n - servers, 0) * theta
        log_w = np.concatenate(([0.0], np.cumsum(np.log(lam / deaths))))
        peak = log_w.max()
        weights = np.exp(log_w - peak)
        weights /= weights.sum()
        if weights[-1] < 1e-16:
            break
        ahead *= 2
    queued = weights[servers:]  # an arrival finds k = n - N callers ahead
    a = servers * mu + np.arange(len(queued)) * theta
    p_answered = np.cumprod(a / (a + theta))  # P(answered | k ahead)
    abandoned = float((queued * (1.0 - p_answered)).sum())
    within = answered_within(queued, a, theta, threshold)
    return float(weights[:servers].sum()) + within, abandoned


def answered_within(queued: Any, a: Any, theta: float, threshold: float) -> float:
    """Erlang A's share of arrivals answered within ``threshold`` seconds after waiting:
    ``queued[k]`` is the probability that an arrival finds ``k`` callers ahead, ``a[j]`` the
    rate at which it moves up from ``j`` ahead (``a[j] = N μ + j θ``), ``theta`` its own rate
    of hanging up.

    In closed form. From ``j`` ahead the caller leaves after an ``Exp(a_j + θ)`` time, moving up
    with probability ``a_j / (a_j + θ)`` whatever that time was (competing exponentials). So
    with ``k`` ahead it is answered with probability ``P_k = prod_{j <= k} a_j / (a_j + θ)``,
    after ``T = sum_{j <= k} Exp(θ (m + j + 1))``, ``m = N μ / θ``. Those rates step by θ:
    ``exp(-θ T)`` is a product of ``Beta(m + j + 1, 1)`` variables, which is
    ``Beta(m + 1, k + 1)``, so ``P(T <= t) = I_x(k + 1, m + 1)``, the regularised incomplete
    beta function at ``x = 1 - exp(-θ t)`` (for a whole ``m``: the ``k+1``-th of ``m + k + 1``
    exponential clocks has rung, Rényi's representation). The answer is
    ``sum_k queued[k] P_k I_x(k + 1, m + 1)``, the ``I`` from ``I_x(1, m + 1) = 1 - (1 - x)^(m+1)``
    down the recurrence ``I_x(k + 2, b) = I_x(k + 1, b) - t_k``,
    ``t_k = C(k + m + 1, k + 1) x^(k+1) (1 - x)^(m+1)``, whose ratios
    ``t_(k+1) / t_k = x (k + m + 2) / (k + 2)`` are summed in log space (no overflow for long
    queues or thresholds). Each ``I`` is off by at most ~1e-16 per step down; the uniformised
    walk of the chain gives the same to 1e-12 (tests/unit/kpi_core/test_staffing.py)."""
    import numpy as np

    if not threshold > 0:
        return 0.0
    answered = np.cumprod(a / (a + theta))  # P_k
    m = float(a[0]) / theta
    theta_t = theta * threshold
    log_x = math.log(-math.expm1(-theta_t))
    first = -math.expm1(-(m + 1) * theta_t)  # I_x(1, m + 1)
    k = np.arange(max(len(queued) - 2, 0), dtype=float)
    log_t = math.log(m + 1) + log_x - (m + 1) * theta_t  # t_0, then t_1 .. t_(K-2) by their ratios
    steps = np.exp(log_t + np.concatenate(([0.0], np.cumsum(np.log((k + m + 2) / (k + 2)) + log_x))))
    within = np.concatenate(([first], first - np.cumsum(steps)))[: len(queued)]  # I_x(k + 1, m + 1)
    return float((queued * answered * np.clip(within, 0.0, 1.0)).sum())
