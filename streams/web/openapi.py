"""The OpenAPI 3.1 document of the JSON API (every ``/api/*`` path of the exporter and the demo),
served at ``/api/openapi.json``.

It is package data written by hand, ``streams/static/openapi.json``: a path, a parameter or a
response field added to :mod:`streams.web.app` or :mod:`streams.exporter` goes there too.
tests/integration/test_openapi_live.py validates the real responses of both servers against it, and
tests/unit/streams/web/test_openapi.py fails when a path under ``/api/`` is routed but not documented.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

#: Where the document is served.
OPENAPI_PATH = "/api/openapi.json"


@functools.cache
def openapi_json() -> bytes:
    """The document's bytes, read once from the package."""
    return resources.files("streams").joinpath("static/openapi.json").read_bytes()


def openapi_document() -> dict[str, Any]:
    """The document, parsed (a fresh copy each call)."""
    document: dict[str, Any] = json.loads(openapi_json())
    return document
