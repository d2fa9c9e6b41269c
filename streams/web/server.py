"""A small threaded HTTP server for a WSGI app (standard library only).

Good for the demo and for an exporter scraped by a few Prometheus servers; put a real WSGI
server in front for anything busier. With an ``ssl_context`` it serves HTTPS: each connection's
TLS handshake happens in that connection's own thread (a client that never completes one holds
up nobody else, and is dropped after :data:`TLS_HANDSHAKE_TIMEOUT_SECONDS`).

Each request's environ carries the address listened on (:data:`~streams.web.api.LISTEN_HOST_ENVIRON`):
off loopback, the callback worklist masks customer ids unless basic auth let the request in.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from streams.security import AUTH_USER_ENVIRON
from streams.web.api import LISTEN_HOST_ENVIRON
from streams.web.app import WSGIApp

#: How long an HTTPS client may take to send its request (handshake included).
TLS_HANDSHAKE_TIMEOUT_SECONDS = 30.0


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TlsHandler(_QuietHandler):
    timeout = TLS_HANDSHAKE_TIMEOUT_SECONDS


def _tls(server_class: type[_ThreadingWSGIServer], context: ssl.SSLContext) -> type[_ThreadingWSGIServer]:
    class _TlsServer(server_class):  # type: ignore[valid-type,misc]
        def get_request(self) -> tuple[Any, Any]:
            sock, address = self.socket.accept()
            # The handshake runs on the first read, in the request's thread.
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A failed handshake (plain HTTP, an untrusting client) or a dropped connection
            # is that client's problem: no traceback on our stderr.
            import sys

            if not isinstance(sys.exc_info()[1], (ssl.SSLError, OSError)):
                super().handle_error(request, client_address)

    return _TlsServer


def _listening_on(host: str, app: WSGIApp) -> WSGIApp:
    def bound(environ: dict[str, Any], start_response: Any) -> Any:
        environ[LISTEN_HOST_ENVIRON] = host
        environ.pop(AUTH_USER_ENVIRON, None)  # only basic auth sets it (wsgiref copies os.environ in)
        return app(environ, start_response)

    return bound


class Server:
    """A running server: ``url``, ``port``, and :meth:`stop`."""

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        server_class: type[_ThreadingWSGIServer] = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        handler_class: type[_QuietHandler] = _QuietHandler
        if ssl_context is not None:
            server_class, handler_class = _tls(server_class, ssl_context), _TlsHandler
        self._httpd = make_server(host, port, _listening_on(host, app), server_class=server_class, handler_class=handler_class)
        self.scheme = "https" if ssl_context is not None else "http"
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
        return f"{self.scheme}://{shown}:{self.port}/"

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(app: WSGIApp, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> Server:
    """Start serving ``app`` on a background thread (``port`` 0 picks a free port); HTTPS with
    ``ssl_context``."""
    return Server(app, host, port, ssl_context).start()
