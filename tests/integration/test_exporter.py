"""The exporter over the real Redis: /metrics says what kpi_core.exposition says for the same
state; the JSON API and health check."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from harness.pipeline import serve_golden
from harness.processes import http_answer as get
from harness.samples import samples_of as samples

from kpi_core.config import Config
from kpi_core.exposition import render
from kpi_core.kpis import snapshot
from streams.exporter import build_app
from streams.redis.state import RedisState
from streams.web import serve

pytestmark = pytest.mark.integration

CONFIG = Config()


@pytest.fixture
def served(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float
) -> Iterator[tuple[str, RedisState]]:
    server, state = serve_golden(redis_client, redis_prefix, golden_lines, golden_at)
    try:
        yield f"http://127.0.0.1:{server.port}", state
    finally:
        server.stop()


def test_metrics_equal_kpi_core_exposition(
    served: tuple[str, RedisState], golden_at: float, golden_expected: dict[Any, float]
) -> None:
    base, state = served
    status, content_type, body = get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    got = samples(body.decode())
    want = samples(render(snapshot(CONFIG, state, golden_at)))
    scrape = [key for key in got if key[0] == "ccmon_exporter_scrape_seconds"]
    assert len(scrape) == 1
    del got[scrape[0]]
    assert got == want  # no ccmon_consumer_lag: no worker measured it
    assert len(got) > 400
    for (name, labels), value in golden_expected.items():
        assert got[(name, tuple(sorted(labels)))] == pytest.approx(value)


def test_json_api(served: tuple[str, RedisState], golden_at: float) -> None:
    base, _state = served
    status, _, body = get(base + "/api/samples?tenant=default&queue=support")
    assert status == 200
    doc = json.loads(body)
    assert doc["at"] == golden_at
    assert doc["samples"] and all(s["labels"]["queue"] == "support" for s in doc["samples"])
    offered = [s for s in doc["samples"] if s["name"] == "ccmon_calls_offered" and s["labels"]["window"] == "1h"]
    assert [s["value"] for s in offered] == [10]
    _, _, body = get(base + "/api/samples?tenant=nobody")
    assert json.loads(body)["samples"] == []

    # The wallboard's document (streams.web, shared with the demo).
    status, _, body = get(base + "/api/kpis")
    assert status == 200
    queue = json.loads(body)["tenants"]["default"]["queues"]["support"]
    assert queue["windows"]["1h"]["calls_offered"] == 10
    assert queue["live"]["calls_waiting"] == 1

    status, _, body = get(base + "/api/callbacks/pending")
    assert status == 200
    rows = json.loads(body)["callbacks"]
    assert len(rows) == 1  # basic.expected.json: ccmon_callbacks_pending 1, oldest 3100 s
    assert rows[0]["tenant"] == "default" and rows[0]["queue"] == "support"
    assert rows[0]["age_seconds"] == 3100 and rows[0]["overdue"] is False
    assert rows[0]["due"] == golden_at - 3100

    assert get(base + "/healthz")[0] == 200
    assert get(base + "/")[0] == 200  # the wallboard
    assert get(base + "/nope")[0] == 404


def test_redis_down_answers_503(golden_at: float) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    state = RedisState(dead, CONFIG, prefix="x", clock=lambda: golden_at)
    server = serve(build_app(CONFIG, state, lambda: golden_at, dead.ping))
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get(base + "/metrics")[0] == 503
        assert get(base + "/api/samples")[0] == 503
        assert get(base + "/healthz")[0] == 503
    finally:
        server.stop()
