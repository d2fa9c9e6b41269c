"""The OpenAPI document (streams/static/openapi.json): a valid OpenAPI 3.1 document, served at
/api/openapi.json, documenting every path under /api/ the apps route (so it cannot go stale),
with schemas strict enough that a response missing a required field fails. The real responses
of the exporter and the demo are validated in tests/integration/test_openapi_live.py."""

from __future__ import annotations

import ast
import copy
import json
import re
import tomllib
from typing import Any

import pytest
from harness.paths import REPO
from harness.web import response_validator
from harness.web import wsgi_get as call
from openapi_spec_validator import validate as validate_openapi

from kpi_core.config import Config
from kpi_core.state import MemoryState
from streams.web import make_store_app
from streams.web.openapi import OPENAPI_PATH, openapi_document, openapi_json

ROOT = REPO
API_PATH = re.compile(r"/api/[A-Za-z0-9_./{}-]+")  # {name}: a path parameter


def routed_api_paths() -> set[str]:
    """Every string constant in streams/ that is a path under /api/ (what a router compares
    ``PATH_INFO`` with), and every /api/ path the wallboard page fetches."""
    found = set()
    for source in (ROOT / "streams").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and API_PATH.fullmatch(node.value):
                found.add(node.value)
    page = (ROOT / "streams" / "static" / "wallboard.html").read_text()
    found.update("/" + match for match in re.findall(r"\bapi/[A-Za-z0-9_./{}-]+", page))
    return found


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate_openapi(document)  # raises on an invalid document
    assert document["openapi"].startswith("3.1.")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert document["info"]["version"] == version
    for path, item in document["paths"].items():
        assert set(item) == {"get"}, path  # the apps answer GET and HEAD only
        for status in item["get"]["responses"]:
            content = document["paths"][path]["get"]["responses"][status].get("content", {})
            if "application/json" in content:
                response_validator(document, path, status)  # every schema is a valid 2020-12 schema


def test_every_routed_api_path_is_documented() -> None:
    routed = routed_api_paths()
    assert {"/api/kpis", "/api/callbacks/pending", "/api/samples", OPENAPI_PATH} <= routed  # the scan finds them
    assert routed == set(openapi_document()["paths"])


def test_served_at_api_openapi_json() -> None:
    app = make_store_app(Config(), MemoryState(), clock=lambda: 1795168800.0)
    status, body = call(app, OPENAPI_PATH)
    assert status == "200 OK"
    assert body == openapi_json()
    assert json.loads(body) == openapi_document()
    response_validator(openapi_document(), OPENAPI_PATH).validate(json.loads(body))


def test_a_response_missing_a_required_field_fails() -> None:
    document = openapi_document()
    kpis = response_validator(document, "/api/kpis")
    callbacks = response_validator(document, "/api/callbacks/pending")
    samples = response_validator(document, "/api/samples")
    at = 1795168800.0
    good_kpis = {
        "at": at,
        "at_iso": "2026-11-20T10:00:00.000Z",
        "info": {"ready": True},
        "pipeline": {},
        "tenants": {
            "t": {
                "queues": {
                    "q": {
                        "live": {"calls_waiting": 1.0},
                        "agents": {"available": 2.0},
                        "targets": {},
                        "windows": {"1h": {"wait_seconds_quantile": {"0.5": 4.1}}},
                    }
                }
            }
        },
    }
    item = {
        "tenant": "t",
        "queue": "q",
        "customer_id": "+4915112345678",
        "due": at - 60,
        "due_iso": "2026-11-20T09:59:00.000Z",
        "age_seconds": 60.0,
        "overdue": False,
    }
    good_callbacks = {"at": at, "count": 1, "callbacks": [item], "customer_ids": "shown"}
    masked = {
        **good_callbacks,
        "customer_ids": "masked",
        "callbacks": [{**item, "customer_id": "***78", "customer_id_masked": True}],
    }
    good_samples = {"at": at, "samples": [{"name": "ccmon_calls_waiting", "labels": {"queue": "q"}, "value": 1.0}]}
    for validator, good in (
        (kpis, good_kpis),
        (callbacks, good_callbacks),
        (callbacks, masked),
        (samples, good_samples),
    ):
        validator.validate(good)

    def broken(good: dict[str, Any], *keys: Any) -> dict[str, Any]:
        bad = copy.deepcopy(good)
        target = bad
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
        return bad

    for validator, bad in [
        (kpis, broken(good_kpis, "at")),
        (kpis, broken(good_kpis, "tenants", "t", "queues", "q", "agents")),
        (callbacks, broken(good_callbacks, "customer_ids")),
        (callbacks, broken(good_callbacks, "callbacks", 0, "due")),
        (callbacks, broken(good_callbacks, "callbacks", 0, "customer_id")),  # neither customer nor callback id
        (callbacks, broken(masked, "callbacks", 0, "customer_id_masked")),
        (samples, broken(good_samples, "samples", 0, "value")),
    ]:
        assert not validator.is_valid(bad), bad
    # Wrong, not missing: an id left unmasked in a masked list; a masked mark on a shown list.
    assert not callbacks.is_valid({**masked, "callbacks": [{**item, "customer_id_masked": True}]})
    assert not callbacks.is_valid({**good_callbacks, "callbacks": masked["callbacks"]})
    assert not kpis.is_valid({**good_kpis, "at": "now"})


@pytest.mark.parametrize("query", ["limit=-1", "limit=x"])
def test_bad_limit_answers_the_documented_error(query: str) -> None:
    app = make_store_app(Config(), MemoryState(), clock=lambda: 1795168800.0)
    status, body = call(app, "/api/callbacks/pending", query)
    assert status == "400 Bad Request"
    response_validator(openapi_document(), "/api/callbacks/pending", "400").validate(json.loads(body))
