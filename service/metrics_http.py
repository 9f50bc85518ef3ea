"""Serving /metrics: on loopback unless configured otherwise, over TLS with the gRPC server's certificate
when that is on, and behind the gRPC bearer tokens when those are on.

Why not prometheus_client's `start_http_server` as it is: it has no token check, and with TLS it wraps the
listening socket, so the TLS handshake runs in `accept()` on the one serving thread: a client that
connects and never sends its hello stops every scrape. Here the WSGI app from prometheus_client is wrapped
in a token check, and each connection is accepted plainly and wrapped (handshake included, with a timeout)
on its own thread.
"""
from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

#: Seconds a scrape connection may take for its TLS handshake and its request.
CONNECTION_TIMEOUT_S = 10.0


class _QuietHandler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 - the base class's name
        """No access log on stderr."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request, client_address) -> None:
        """On the connection's own thread: the TLS handshake (bounded by the timeout), then the request."""
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CONNECTION_TIMEOUT_S)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return   # a failed or abandoned handshake: drop the connection
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def _family(host: str, port: int) -> tuple[int, str]:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = info[0]
    return family, sockaddr[0]


def _with_token(app: Callable, accepts: Callable[[str], bool]) -> Callable:
    def guarded(environ, start_response):
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not accepts(token.strip()):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Bearer realm="ethicrec metrics"')])
            return [b"401 Unauthorized: /metrics needs 'Authorization: Bearer <token>' (one of the gRPC tokens)\n"]
        return app(environ, start_response)

    return guarded


def serve_metrics(registry: CollectorRegistry, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                  accepts: Callable[[str], bool] | None = None) -> tuple[_Server, int]:
    """Start serving `registry` on host:port in a daemon thread; returns the server and the bound port."""
    class Server(_Server):
        pass

    Server.address_family, addr = _family(host, port)
    Server.ssl_context = ssl_context
    app = make_wsgi_app(registry)
    if accepts is not None:
        app = _with_token(app, accepts)
    httpd = make_server(addr, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="ethicrec-metrics", daemon=True).start()
    return httpd, httpd.server_address[1]


def server_ssl_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """The gRPC server's TLS for /metrics: its certificate chain and key, and when mutual TLS is on, client
    certificates signed by the same CA required here too."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
