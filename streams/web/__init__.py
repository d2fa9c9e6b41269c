"""ccmon's HTTP face: the live wallboard, ``/metrics``, the JSON API and the health checks
(``/livez``, ``/readyz``, ``/healthz``) as one WSGI app that any KPI source can mount (the demo
over memory, the exporter over Redis).

* :func:`make_wsgi_app` - from ``get_families`` / ``get_pending_callbacks`` callables;
* :func:`make_store_app` - the same over any :class:`~kpi_core.state.StateStore`;
* :func:`serve` - the server for it (aiohttp's, the app in a bounded pool: :mod:`streams.web.server`);
* :mod:`streams.web.api` - the JSON documents, the callback worklist, the SL history;
* :mod:`streams.web.push` - the board's document pushed to open pages (``/api/stream``).

The page itself is package data: ``streams/static/wallboard.html``.
"""

from streams.web.api import RedisSlHistory, SlHistory, kpis_document, pending_callbacks
from streams.web.app import make_store_app, make_wsgi_app, wallboard_html
from streams.web.push import Publisher
from streams.web.server import Server, serve

__all__ = [
    "Publisher",
    "RedisSlHistory",
    "Server",
    "SlHistory",
    "kpis_document",
    "make_store_app",
    "make_wsgi_app",
    "pending_callbacks",
    "serve",
    "wallboard_html",
]
