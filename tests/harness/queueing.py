"""Reference models of queueing theory, written independently of ``kpi_core.erlang``, that the
tests compare ccmon's formulas and simulations with."""

from __future__ import annotations

import math

import numpy as np


def erlang_a(servers: int, lam: float, mu: float, theta: float, threshold: float) -> dict[str, float]:
    """Stationary M/M/c with exponential patience (rate ``theta``), FIFO.

    Returns ``p_abandon`` (share of arrivals who hang up), ``sl`` (share of arrivals answered
    within ``threshold``: the ``offered`` service-level formula) and ``asa`` (mean wait of the
    answered, zero waits included).

    The number in system is a birth-death chain: births ``lam``, deaths
    ``min(n, c) mu + max(n - c, 0) theta``. An arrival that finds ``k`` callers queued ahead
    (PASTA) moves up at rate ``a_j = c mu + j theta`` while ``j`` are ahead (a service ends,
    or someone ahead gives up) and is answered from ``j = 0`` at rate ``c mu``; its own
    patience runs out at rate ``theta`` throughout. So, exactly:
    ``P(answered | k) = prod_j a_j / (a_j + theta)``, and given it is answered the wait is a
    sum of independent ``Exp(a_j + theta)`` stages. The within-threshold probability of that
    (sub-)distribution comes from uniformising the small absorbing chain.
    """
    c = servers
    # Stationary distribution, truncated where it is negligible.
    weights = [1.0]
    while True:
        n = len(weights)
        death = min(n, c) * mu + max(n - c, 0) * theta
        weights.append(weights[-1] * lam / death)
        if n > c and weights[-1] < 1e-16 * sum(weights):
            break
    pi = np.array(weights) / sum(weights)
    queue_probs = pi[c:]  # arrival finds k = n - c ahead
    k_max = len(queue_probs) - 1
    a = np.array([c * mu + j * theta for j in range(k_max + 1)])  # move-up rates
    r = a + theta
    p_answered_k = np.cumprod(a / r)  # P(answered | k) for k = 0..k_max
    mean_wait_k = np.cumsum(1.0 / r)  # E[wait | answered, k]
    p_answered = pi[:c].sum() + float((queue_probs * p_answered_k).sum())
    asa = float((queue_probs * p_answered_k * mean_wait_k).sum()) / p_answered

    # P(answered within t | k): uniformise the chain over positions 0..k_max plus "answered"
    # (the own-abandonment rate theta leaks out of every position).
    size = k_max + 2
    q = np.zeros((size, size))
    for j in range(k_max + 1):
        q[j, j] = -r[j]
        if j > 0:
            q[j, j - 1] = a[j]
        else:
            q[0, size - 1] = a[0]
    rate = float(r.max())
    step = np.eye(size) + q / rate
    vector = np.zeros(size)
    vector[: k_max + 1] = queue_probs
    lam_t = rate * threshold
    term = math.exp(-lam_t)
    answered_within = 0.0
    n = 0
    while True:
        answered_within += term * vector[-1]
        n += 1
        term *= lam_t / n
        vector = vector @ step
        if n > lam_t and term < 1e-15:
            break
    sl = float(pi[:c].sum()) + answered_within
    return {"p_abandon": float(1.0 - p_answered), "sl": float(sl), "asa": float(asa)}
