"""Crash consistency over several trials: two workers in one consumer group on four
partitions while events flow; in each trial a worker is killed with SIGKILL at seeded random
points (twice) and restarted after a random pause. After every trial the KPIs in Redis equal
``ccmon replay`` of the same events: nothing lost (offsets are committed only after the Redis
transaction of their batch), nothing counted twice (a redelivered batch finds its event ids in
Redis's ``seen`` sets, written in the same transaction as its counts).

So that the second half cannot pass vacuously, every kill waits, after its random delay, until
the victim has applied batches past its last commit (its own /metrics: messages acknowledged
since the committed offsets last changed; the worker acknowledges a message only once its batch
is in Redis), and each trial asserts that redelivered events were recognised as duplicates
(the simulated day has none of its own).

Seed: ``CCMON_CRASH_SEED`` (default 20261120), printed with every kill, so a failing trial
can be run again with the same kill schedule (the instant a SIGKILL lands inside a batch
still depends on the machine). Takes about 45 s per trial on 2 cores (the 30 s flow, which
outlasts both kills and the 6 s session timeout that hands a killed worker's partitions over).

The helpers it shares with the rebuild and outage tests (``kpi_samples``, ``produce_timed``,
``replay_samples``, ``wait_for_kpis``, ``diff``) are in ``tests/harness/``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import Flow, assigned, create_topics
from harness.pipeline import Pipeline
from harness.processes import free_port
from harness.samples import (
    Samples,
    diff,
    events_total,
    kpi_samples,
    metrics_text,
    samples_of,
    simulated_day,
    wait_for_kpis,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = int(os.environ.get("CCMON_CRASH_SEED", "20261120"))
TRIALS = 3
KILLS_PER_TRIAL = 2
#: Seconds over which a trial's events are produced (in time order, chunk by chunk): long enough
#: that the second kill (after a session timeout and a rebalance) still lands while events flow.
FLOW_SECONDS = 30.0
SETTLE_TIMEOUT = 120.0


# -- the trials -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes], float, Samples]:
    return simulated_day(tmp_path_factory.mktemp("crash"))


@pytest.fixture
def pipeline(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    create_topics(kafka_bootstrap, p.topic, p.dlq)
    try:
        yield p
    finally:
        p.close()


def _partitions(p: Pipeline, name: str) -> str:
    return assigned(p.logs[name], p.topic) or ""


def worker_progress(web_port: int, topic: str) -> tuple[dict[int, float], float]:
    """From a worker's own /metrics (Faust's Prometheus sensor): the offsets it last committed,
    per partition of ``topic``, and the messages it has acknowledged (received minus still
    active: the worker acknowledges a message only after its batch's Redis transaction)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as response:
        samples = samples_of(response.read().decode())
    commits = {
        int(dict(labels)["partition"]): value
        for (name, labels), value in samples.items()
        if name == "ccmon_worker_topic_partition_offset_commited"  # sic: Faust's spelling
        and dict(labels).get("topic") == topic
    }
    acked = samples[("ccmon_worker_messages_received_total", ())] - samples[("ccmon_worker_active_messages", ())]
    return commits, acked


def await_applied_past_commit(
    web_port: int, topic: str, process: subprocess.Popen[bytes], logs: Any, timeout: float = 60.0
) -> float:
    """Until the worker has acknowledged (so applied in Redis) messages after its last commit;
    how many. The acknowledged count is read when the committed offsets are first seen with
    their current values, which is no earlier than that commit: so messages acknowledged since
    that reading are past the committed offsets, and a SIGKILL now leaves them to be read again."""
    deadline = time.monotonic() + timeout
    seen: tuple[dict[int, float], float] | None = None
    while True:
        assert process.poll() is None, f"the worker exited:\n{logs()}"
        assert time.monotonic() < deadline, (
            f"the worker applied nothing past its last commit in {timeout:.0f} s (last seen: {seen}):\n{logs()}"
        )
        try:
            commits, acked = worker_progress(web_port, topic)
        except (OSError, KeyError):  # web server not up yet, or no message received yet
            time.sleep(0.1)
            continue
        if commits:
            if seen is None or commits != seen[0]:
                seen = (commits, acked)
            elif acked > seen[1]:
                return acked - seen[1]
        time.sleep(0.02)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_random_points_loses_and_doubles_nothing(
    trial: int, pipeline: Pipeline, day: tuple[Path, list[bytes], float, Samples], redis_url: str
) -> None:
    p = pipeline
    _path, lines, at, want = day
    rng = random.Random(SEED * 100 + trial)
    # Any duplicate counted below comes from redelivery: the simulated day has none of its own.
    assert len({json.loads(line)["event_id"] for line in lines}) == len(lines)
    worker_args = p.worker_args(at=at, batch_size=5, batch_within="0.1", session_timeout=6)
    web_ports: dict[str, int] = {}

    def start(name: str) -> subprocess.Popen[bytes]:
        web_ports[name] = free_port()
        return p.start(name, *worker_args, "--web-port", str(web_ports[name]))

    live = {name: start(name) for name in ("w0", "w1")}

    def stable(timeout: float = 90) -> None:
        """Until every live worker holds partitions of the topic."""
        deadline = time.monotonic() + timeout
        while not all(_partitions(p, name) for name in live):
            assert time.monotonic() < deadline, f"the group did not settle:\n{p.log_tail()}"
            assert all(proc.poll() is None for proc in live.values()), f"a worker exited:\n{p.log_tail()}"
            time.sleep(0.2)

    stable()
    flow = Flow(p.kafka, p.topic, lines, FLOW_SECONDS)
    flow.start()
    flow_started = time.monotonic()
    time.sleep(rng.uniform(0.5, 2.5))
    kills = []
    for k in range(KILLS_PER_TRIAL):
        if k:
            stable()
            time.sleep(rng.uniform(0.0, 1.5))
        holders = sorted(name for name in live if _partitions(p, name))
        victim = rng.choice(holders)
        past_commit = await_applied_past_commit(web_ports[victim], p.topic, live[victim], p.log_tail)
        live[victim].send_signal(signal.SIGKILL)
        live[victim].wait(10)
        counted = events_total(kpi_samples(redis_url, p.prefix, at))
        kills.append(
            f"{victim} holding {_partitions(p, victim)} at {time.monotonic() - flow_started:.1f} s with "
            f"{past_commit:.0f} messages applied past its last commit, "
            f"{counted:.0f} events counted"
        )
        assert counted < events_total(want), "the kill came after every event was processed"
        del live[victim]
        time.sleep(rng.uniform(0.0, 1.5))
        name = f"{victim}-{k + 1}"
        live[name] = start(name)
    flow.finish()

    got = wait_for_kpis(
        lambda: kpi_samples(redis_url, p.prefix, at), want, SETTLE_TIMEOUT, list(live.values()), p.log_tail
    )
    duplicates = sum(
        v
        for (name, _), v in samples_of(metrics_text(redis_url, p.prefix, at)).items()
        if name == "ccmon_events_duplicate_total"
    )
    print(
        f"trial {trial} (seed {SEED}): {events_total(want):.0f} events; killed {'; '.join(kills)}; "
        f"redelivered and recognised as duplicates: {duplicates:.0f}"
    )
    problems = diff(got, want)
    assert not problems, problems
    # Redelivery happened: the batches applied past the victims' commits were read again.
    assert duplicates > 0, "no event was redelivered: the kills did not land between a batch and its commit"
