"""The OpenAPI document against the real servers: the real ``ccmon exporter`` over the golden
day's state in the real Redis (listening on loopback: customer ids shown; on all addresses:
masked) and the real ``ccmon demo``. Every documented path is fetched with and without its
documented query parameters, and each real body is validated against the document's schema
for its status. The document itself, and that every routed /api/ path is in it:
tests/unit/streams/web/test_openapi.py."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
from harness.pipeline import cli_args
from harness.processes import free_port, stop
from harness.processes import http_answer as get
from harness.redis_servers import delete_prefix

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_line
from streams.redis.state import RedisState
from streams.web.openapi import openapi_document

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Sample values of the documented query parameters (golden day: tenant default, queue support).
PARAMETER_VALUES = {"tenant": "default", "queue": "support", "limit": "1"}


def response_validator(document: dict[str, Any], path: str, status: str = "200") -> jsonschema.Draft202012Validator:
    """A validator of the JSON body ``path`` answers with ``status``, by the document's schema."""
    schema = document["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"]
    wrapper = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document["components"],
        **schema,
    }
    return jsonschema.Draft202012Validator(wrapper)


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def wait_until(ready: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"not ready within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def exporters(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, golden_lines: list[bytes], golden_at: float
) -> Iterator[dict[str, str]]:
    """Two real exporters over the golden day in Redis: ``loopback`` (127.0.0.1) and ``all``
    (0.0.0.0, no basic auth: customer ids masked)."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    state = RedisState(client, Config(), prefix=prefix, clock=lambda: golden_at)
    engine = Engine(Config(), state)
    with state.batch():
        for line in golden_lines:
            engine.handle(parse_line(line), golden_at)
    tmp = tmp_path_factory.mktemp("exporters")
    procs, bases = [], {}
    try:
        for name, host in (("loopback", "127.0.0.1"), ("all", "0.0.0.0")):
            port = free_port()
            log = tmp / f"{name}.log"
            args = cli_args("exporter", host=host, port=port, redis=redis_url, redis_prefix=prefix, at=golden_at)
            proc = start(args, log)
            procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda base=base: get(base + "/healthz")[0] == 200, proc, log, timeout=30)
            bases[name] = base
        yield bases
    finally:
        for proc in procs:
            stop(proc, signal.SIGINT, timeout=30)
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    proc = start(
        [
            "demo",
            "--port",
            str(port),
            "--seed",
            "3",
            "--start",
            "2026-11-20T10:40:00Z",
            "--speed",
            "60",
            "--pause-after",
            "2",
        ],
        log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: json.loads(get(base + "/api/kpis")[2])["info"].get("paused"), proc, log)
        yield base
    finally:
        stop(proc, signal.SIGINT, timeout=30)


def json_paths(document: dict[str, Any]) -> set[str]:
    """The documented paths that answer JSON (not /api/stream's event stream: stream_document)."""
    return {
        path
        for path, item in document["paths"].items()
        if "application/json" in item["get"]["responses"]["200"]["content"]
    }


def stream_document(base: str) -> dict[str, Any]:
    """The first document ``/api/stream`` pushes, validated against ``/api/kpis``'s schema."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/api/stream")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/event-stream")
        event = ""
        while True:
            line = response.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "kpis":
                doc: dict[str, Any] = json.loads(line[len("data: ") :])
                response_validator(openapi_document(), "/api/kpis").validate(doc)
                return doc
    finally:
        conn.close()


def fetch_documented(base: str, *, served: set[str] | None = None) -> dict[tuple[str, str], tuple[int, Any]]:
    """Every documented JSON path (``served``: these only), bare and with each documented query
    parameter, each body validated against the document's schema for its status."""
    document = openapi_document()
    seen: dict[tuple[str, str], tuple[int, Any]] = {}
    for path, item in document["paths"].items():
        if (served is not None and path not in served) or path not in json_paths(document):
            continue
        operation = item["get"]
        names = []
        url_path = path
        for parameter in operation.get("parameters", []):
            if "$ref" in parameter:
                parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
            if parameter["in"] == "path":  # /api/queues/{queue}/waiting
                url_path = url_path.replace("{" + parameter["name"] + "}", PARAMETER_VALUES[parameter["name"]])
                continue
            assert parameter["in"] == "query"
            names.append(parameter["name"])
        queries = [
            "",
            *(f"{n}={PARAMETER_VALUES[n]}" for n in names),
            "&".join(f"{n}={PARAMETER_VALUES[n]}" for n in names),
        ]
        for query in dict.fromkeys(queries):
            status, content_type, body = get(f"{base}{url_path}" + (f"?{query}" if query else ""))
            assert str(status) in operation["responses"], (path, query, status, body[:300])
            assert content_type.startswith("application/json"), (path, query, content_type)
            doc = json.loads(body)
            response_validator(document, path, str(status)).validate(doc)
            seen[(path, query)] = (status, doc)
    return seen


def test_exporter_responses_match_the_document(exporters: dict[str, str]) -> None:
    seen = fetch_documented(exporters["loopback"])
    assert {path for path, _query in seen} == json_paths(openapi_document())  # the exporter serves them all
    assert (
        stream_document(exporters["loopback"])["tenants"]["default"]["queues"]["support"]["windows"]["1h"][
            "calls_offered"
        ]
        == 10
    )
    assert all(status == 200 for status, _doc in seen.values())
    kpis = seen[("/api/kpis", "")][1]
    assert kpis["tenants"]["default"]["queues"]["support"]["windows"]["1h"]["calls_offered"] == 10
    callbacks = seen[("/api/callbacks/pending", "")][1]
    assert callbacks["customer_ids"] == "shown" and callbacks["count"] == 1
    assert "customer_id" in callbacks["callbacks"][0] and "customer_id_masked" not in callbacks["callbacks"][0]
    assert seen[("/api/samples", "tenant=default&queue=support")][1]["samples"]
    assert seen[("/api/openapi.json", "")][1] == openapi_document()

    # Off loopback without basic auth: masked ids, also as documented.
    masked = fetch_documented(exporters["all"], served={"/api/callbacks/pending"})
    callbacks = masked[("/api/callbacks/pending", "")][1]
    assert callbacks["customer_ids"] == "masked" and callbacks["callbacks"][0]["customer_id_masked"] is True

    # The documented 400.
    status, _, body = get(exporters["loopback"] + "/api/callbacks/pending?limit=-1")
    assert status == 400
    response_validator(openapi_document(), "/api/callbacks/pending", "400").validate(json.loads(body))


def test_demo_responses_match_the_document(demo: str) -> None:
    document = openapi_document()
    exporter_only = {path for path, item in document["paths"].items() if "exporter only" in item["get"]["summary"]}
    assert exporter_only == {"/api/samples"}
    seen = fetch_documented(demo, served=set(document["paths"]) - exporter_only)
    assert all(status == 200 for status, _doc in seen.values())
    kpis = seen[("/api/kpis", "")][1]
    assert kpis["info"]["paused"] is True and kpis["tenants"]["default"]["history"]["series"]
    assert stream_document(demo)["at"] == kpis["at"]  # paused: the same instant, pushed
    assert seen[("/api/callbacks/pending", "")][1]["callbacks"], "the demo's morning has callbacks due"
    assert get(demo + "/api/samples")[0] == 404


def test_real_responses_missing_a_required_field_fail(exporters: dict[str, str]) -> None:
    document = openapi_document()
    for path, required in (("/api/kpis", "at_iso"), ("/api/callbacks/pending", "count"), ("/api/samples", "samples")):
        body = json.loads(get(exporters["loopback"] + path)[2])
        validator = response_validator(document, path)
        validator.validate(body)
        bad = copy.deepcopy(body)
        del bad[required]
        assert not validator.is_valid(bad), path
    body = json.loads(get(exporters["all"] + "/api/callbacks/pending")[2])
    validator = response_validator(document, "/api/callbacks/pending")
    for field in ("due", "customer_id_masked", "overdue"):
        bad = copy.deepcopy(body)
        del bad["callbacks"][0][field]
        assert not validator.is_valid(bad), field
