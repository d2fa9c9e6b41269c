"""ccmon's WSGI apps called in this process, without a server (:func:`wsgi_call`,
:func:`wsgi_get`), and their answers checked against the OpenAPI document
(:func:`response_validator`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema


def wsgi_call(app: Any, path: str, method: str = "GET", **environ: str) -> tuple[str, dict[str, str], bytes]:
    """``(status, headers, body)`` of ``app`` asked ``method path``; a ``?query`` in ``path``
    becomes ``QUERY_STRING``; ``environ``: more WSGI variables (``HTTP_AUTHORIZATION``...)."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: Iterable[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    if "?" in path:
        path, _, environ["QUERY_STRING"] = path.partition("?")
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": method, **environ}, start_response))
    return seen["status"], seen["headers"], body


def wsgi_get(app: Any, path: str, query: str = "") -> tuple[str, bytes]:
    """``(status, body)`` of ``GET path?query``."""
    status, _headers, body = wsgi_call(app, path, QUERY_STRING=query)
    return status, body


def response_validator(document: dict[str, Any], path: str, status: str = "200") -> jsonschema.Draft202012Validator:
    """A validator of the JSON body ``path`` answers with ``status``, by the document's schema
    (its ``#/components/...`` references resolved in the document)."""
    schema = document["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"]
    wrapper = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document["components"],
        **schema,
    }
    jsonschema.Draft202012Validator.check_schema(wrapper)
    return jsonschema.Draft202012Validator(wrapper)
