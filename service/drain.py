"""Graceful drain: refuse new calls with UNAVAILABLE while the in-flight ones finish.

Why not only `grpc.Server.stop(grace)`: a call that reaches the server in the
moment it shuts its listener down is reset by the transport and the client
sees CANCELLED, which a client must not retry blindly (the server might have
acted on it). Refusing explicitly first, with UNAVAILABLE ("not processed, try
another replica"), makes the outcome unambiguous, and keeps the port open
long enough for load balancers to see health NOT_SERVING. Health checks are
still answered during the drain so they can see exactly that. The port is
closed only once no new call has been refused for a short quiet period
(clients and balancers have moved away) or the grace period is spent.
"""
from __future__ import annotations

import threading
import time

import grpc

from service.auth import OPEN_PREFIXES
from service.handlers import refusing_handler


class DrainInterceptor(grpc.ServerInterceptor):
    def __init__(self) -> None:
        self._draining = threading.Event()
        self._last_call = 0.0   # monotonic time of the last refusal (or of the start of the drain)

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start(self) -> None:
        self._last_call = time.monotonic()
        self._draining.set()

    def wait_quiet(self, quiet_s: float, deadline: float) -> bool:
        """Block until no call was refused for `quiet_s`, or until `deadline`
        (monotonic); False when the deadline came first."""
        while True:
            now = time.monotonic()
            if now - self._last_call >= quiet_s:
                return True
            if now >= deadline:
                return False
            time.sleep(min(0.02, deadline - now))

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not self._draining.is_set() or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        self._last_call = time.monotonic()
        return refusing_handler(handler, grpc.StatusCode.UNAVAILABLE,
                                "server is shutting down; the call was not processed")
