"""A small threaded HTTP server for a WSGI app (standard library only).

Good for the demo and for an exporter scraped by a few Prometheus servers; put a real WSGI
server in front for anything busier.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from streams.web.app import WSGIApp


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server:
    """A running server: ``url``, ``port``, and :meth:`stop`."""

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        self._httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ccmon-http", daemon=True)

    @property
    def url(self) -> str:
        shown = self.host
        if shown in ("0.0.0.0", "::", ""):
            shown = "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/"

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> Server:
    """Start serving ``app`` on a background thread (``port`` 0 picks a free port)."""
    return Server(app, host, port).start()
