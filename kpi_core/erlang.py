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
    the probability of being answered within the threshold comes from uniformising that
    absorbing chain (Poisson weights in log space: no underflow for long thresholds).
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
    rate at which it moves up from ``j`` ahead (``N μ + j θ``), ``theta`` its own rate of
    hanging up. Uniformises that absorbing chain (Poisson weights in log space)."""
    import numpy as np

    # Uniformised chain over positions 0..K plus "answered": from position j, rate a_j to
    # j - 1 (or to answered from 0), rate θ out (the caller hangs up).
    rate = float(a[-1] + theta)
    stay = 1.0 - (a + theta) / rate
    move = a / rate
    lam_t = rate * threshold
    # The Poisson weights first: where they end fixes the last step, and so how many
    # positions can still reach the front in the steps left (mass moves one position a
    # step); the positions beyond are left out, step by step, without changing a bit of
    # what reaches the front.
    terms: list[float] = []
    step = 0
    while True:
        term = math.exp(-lam_t + step * math.log(lam_t) - math.lgamma(step + 1)) if lam_t > 0 else float(step == 0)
        terms.append(term)
        if lam_t == 0 or (step > lam_t and term < 1e-15):
            break
        step += 1
    last = len(terms) - 1  # the front is read at steps 0 .. last - 1
    vector = queued[: max(1, min(len(queued), last))].copy()
    answered = within = 0.0
    for step, term in enumerate(terms):
        within += term * answered
        if step == last:
            break
        answered += float(vector[0] * move[0])
        keep, held = max(1, last - step - 1), len(vector)  # positions read from the next step on
        if keep < held:  # each kept position's inflow is held
            vector = vector[:keep] * stay[:keep] + vector[1 : keep + 1] * move[1 : keep + 1]
        else:  # the chain's own last position: nothing flows into it
            shifted = np.zeros_like(vector)
            shifted[:-1] = vector[1:] * move[1:held]
            vector = vector * stay[:held] + shifted
    return within
