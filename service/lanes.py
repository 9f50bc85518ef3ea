"""Lanes: each kind of call runs on its own threads and has its own room, so no number of idle or slow
calls of one kind can starve another.

Why: in gRPC's synchronous server every call holds a worker thread from the moment it is scheduled until
it ends, including the time spent waiting for the client's next message. With one shared pool, a few
`RankStream`s that send one request and then stay silent (a stuck frontend, or anyone with a token) held
every worker, and each later `Rank` *and* `Health/Check` timed out until those streams ended.

    lane     what                                      threads                room (calls at once)
    unary    Rank (and any other unary method)         max_workers (shared)   max_workers + max_queue
    stream   RankStream, reflection: any streaming      max_streams            max_streams
    health   grpc.health.v1.Health/Check               HEALTH_THREADS         HEALTH_ROOM
    watch    grpc.health.v1.Health/Watch (non-blocking:  HEALTH_THREADS (brief) WATCH_ROOM
             costs a thread only while it is started)

A call is admitted to its lane when it arrives (`LaneInterceptor`, outermost, on gRPC's serving thread)
or answered RESOURCE_EXHAUSTED at once; the answer is sent from a small pool of its own without reading
the request, so a refusal never waits behind a busy lane or a slow client. A lane slot is given back when
the call's handler returns, or, for a call whose handler never runs (the client went away first), when
gRPC drops it (the slot's `__del__`: CPython frees it at once).

Idle calls: a call waiting for the client (the request of a unary call, the next request on a stream, a
response the client does not take) is ended by the server after `request_read_timeout_s` (unary) or
`stream_idle_timeout_s` (streams) with UNAVAILABLE and a message saying why, so a stuck client gives its
slot back. To read the one request of a unary method with that timeout, unary methods are served in the
request-streaming form (the same bytes on the wire; gRPC's own unary read has no timeout); like gRPC's,
the read takes the first message and answers UNIMPLEMENTED when there is none.

What this does not do: a lane's room can still be filled by calls of that same kind. An idle unary call
holds a `Rank` worker for up to `request_read_timeout_s`, so a client sending max_workers + max_queue such
calls every few seconds keeps `Rank` refused (never health, never streams); with tokens on it needs a
token. An asyncio server, where an idle call holds no thread, would remove that bound; it is a larger change
(bench/README.md, "Idle streams").
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger("ethicrec.service")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
HEALTH_THREADS = 2
HEALTH_ROOM = 16
WATCH_ROOM = 32
REFUSAL_THREADS = 2
#: Beyond the lanes' rooms, how many calls gRPC itself lets in before refusing without any Python code (the
#: calls being refused count as active until their status is sent).
REFUSAL_ROOM = 64


class Lane:
    """A kind of call: its own threads (`pool`; None = the server's pool) and at most `room` at once."""

    def __init__(self, name: str, room: int, pool: ThreadPoolExecutor | None) -> None:
        self.name = name
        self.room = room
        self.pool = pool
        self.in_use = 0
        self.refused = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.in_use >= self.room:
                self.refused += 1
                return False
            self.in_use += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_use -= 1


class _Slot:
    """One admitted call's place in its lane, given back exactly once: by the handler when it is done, or,
    for a handler gRPC drops without running it (the client went away first), when the handler's closure
    is freed (`__del__`: CPython frees it the moment gRPC lets go). A non-blocking handler (Health/Watch)
    returns at once while its call goes on: it marks the slot `handed` and gives it back at the call's end.
    No lock: the handler's `finally` and `__del__` cannot run at the same time (`__del__` runs only once
    nothing, the running handler included, refers to the slot), and a call's end callback runs once."""

    __slots__ = ("lane", "held", "handed")

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.held = True
        self.handed = False

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lane.leave()

    def __del__(self) -> None:
        if self.held and not self.handed:
            self.held = False
            self.lane.leave()


class _Watchdog:
    """Ends calls that wait for their client too long: one thread for the server, polling the armed
    tickets `period` apart (at most the lanes' rooms of them, so a scan is cheap). On the request path a
    ticket costs a dict insert and delete (atomic under the GIL, no lock) and two attribute writes."""

    def __init__(self, period: float, on_idle: Callable[[str], None] | None = None) -> None:
        self._tickets: dict[_Ticket, None] = {}
        self._stop = threading.Event()
        self._on_idle = on_idle
        self._period = period
        self._thread = threading.Thread(target=self._run, name="ethicrec-idle-watchdog", daemon=True)
        self._thread.start()

    def ticket(self, context: grpc.ServicerContext, timeout: float, what: str) -> _Ticket:
        t = _Ticket(self, context, timeout, what)
        self._tickets[t] = None
        return t

    def forget(self, t: _Ticket) -> None:
        self._tickets.pop(t, None)

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            now = time.monotonic()
            due = [t for t in list(self._tickets) if t.deadline is not None and t.deadline <= now]
            for t in due:
                if t.fire() and self._on_idle is not None:
                    self._on_idle(t.what)


def _cancel_with_status(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End the call now with `code` and `details` from a thread other than its handler's. The public
    `context.cancel()` only says CANCELLED; gRPC core's cancel-with-status (what `cancel` calls, without the
    status) sends ours. `_rpc_event` is private, hence the fallback; tests/service/test_idle_streams.py
    checks the status the client sees, so a gRPC upgrade that changes it shows up there."""
    context.set_code(code)
    context.set_details(details)
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        from grpc._cython import cygrpc

        call.cancel(getattr(cygrpc.StatusCode, code.name.lower()), details)
    except Exception:  # noqa: BLE001 - private API gone or changed: the public cancel still ends the call
        context.cancel()


class _Ticket:
    __slots__ = ("watchdog", "context", "timeout", "what", "deadline", "fired")

    def __init__(self, watchdog: _Watchdog, context: grpc.ServicerContext, timeout: float, what: str) -> None:
        self.watchdog = watchdog
        self.context = context
        self.timeout = timeout
        self.what = what
        self.deadline: float | None = None
        self.fired = False

    def arm(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def disarm(self) -> None:
        self.deadline = None

    def close(self) -> None:
        self.deadline = None
        self.watchdog.forget(self)

    def fire(self) -> bool:
        if self.fired or self.deadline is None:
            return False
        self.fired = True
        self.deadline = None
        limit = f"{self.timeout:g} s"
        if self.what == "stream":
            msg = (f"stream closed by the server after {limit} without progress (no request arrived and no response "
                   f"was taken; stream_idle_timeout_s): open a new stream to send more")
        else:
            msg = f"no request message arrived within {limit} of the call's start (request_read_timeout_s)"
        log.info("ending an idle %s call: %s", self.what, msg)
        _cancel_with_status(self.context, grpc.StatusCode.UNAVAILABLE, msg)
        return True

    def requests(self, iterator: Iterator[Any]) -> Iterator[Any]:
        """The client's messages, each awaited with the ticket armed; ends quietly once the ticket fired
        (the call is already over; the client has its status)."""
        while True:
            self.arm()
            try:
                request = next(iterator)
            except StopIteration:
                return
            except Exception:
                if self.fired:
                    return
                raise
            finally:
                self.disarm()
            yield request


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str,
             pool: ThreadPoolExecutor) -> grpc.RpcMethodHandler:
    """A handler answering `code` without reading the request (request-streaming form, whatever the
    method's: for a unary method gRPC would otherwise wait for its message first), on `pool`."""
    def refuse(_request_iterator, context, *_):
        context.abort(code, message)

    refuse.experimental_thread_pool = pool   # type: ignore[attr-defined]
    args = (handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, *args)
    return grpc.stream_unary_rpc_method_handler(refuse, *args)


def _already_over(context: grpc.ServicerContext) -> bool:
    return not context.is_active()


@dataclass(frozen=True)
class LaneConfig:
    unary_threads: int
    unary_room: int
    max_streams: int
    stream_idle_timeout_s: float
    request_read_timeout_s: float


class LaneInterceptor(grpc.ServerInterceptor):
    """Admits each call to its lane and runs it on the lane's threads (module docstring). Install it first
    (outermost): the handler it returns is the one gRPC schedules."""

    def __init__(self, cfg: LaneConfig, *, on_refused: Callable[[str], None] | None = None,
                 on_idle: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        health_pool = ThreadPoolExecutor(HEALTH_THREADS, thread_name_prefix="ethicrec-health")
        self.lanes = {
            "unary": Lane("unary", cfg.unary_room, None),
            "stream": Lane("stream", cfg.max_streams,
                           ThreadPoolExecutor(cfg.max_streams, thread_name_prefix="ethicrec-stream")),
            "health": Lane("health", HEALTH_ROOM, health_pool),
            "watch": Lane("watch", WATCH_ROOM, health_pool),
        }
        self._refusals = ThreadPoolExecutor(REFUSAL_THREADS, thread_name_prefix="ethicrec-refuse")
        # Polled a few times per timeout: a call is ended between 1 and 1.125 timeouts after it went idle.
        period = max(0.02, min(1.0, min(cfg.stream_idle_timeout_s, cfg.request_read_timeout_s) / 8))
        self._watchdog = _Watchdog(period, on_idle)
        self._on_refused = on_refused

    @property
    def total_room(self) -> int:
        """Every lane's room plus REFUSAL_ROOM: gRPC's own limit on calls at once (maximum_concurrent_rpcs)."""
        return sum(lane.room for name, lane in self.lanes.items()) + REFUSAL_ROOM

    def close(self) -> None:
        self._watchdog.close()
        for pool in {id(p): p for p in (*(lane.pool for lane in self.lanes.values()), self._refusals)
                     if p is not None}.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def lane_for(self, method: str, handler: grpc.RpcMethodHandler) -> Lane:
        if method.startswith(HEALTH_PREFIX):
            return self.lanes["watch" if handler.response_streaming else "health"]
        if handler.request_streaming or handler.response_streaming:
            return self.lanes["stream"]
        return self.lanes["unary"]

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        lane = self.lane_for(handler_call_details.method, handler)
        if not lane.enter():
            if self._on_refused is not None:
                self._on_refused(lane.name)
            what = {"stream": f"open streams (max_streams = {lane.room}); close idle ones, or use Rank",
                    "unary": f"calls running or waiting (max_workers + max_queue = {lane.room})",
                    "health": f"health checks in flight ({lane.room})",
                    "watch": f"health watches open ({lane.room})"}[lane.name]
            return _refusal(handler, grpc.StatusCode.RESOURCE_EXHAUSTED, f"server busy: too many {what}",
                            self._refusals)
        try:
            return self._wrap(handler, lane)
        except BaseException:
            lane.leave()
            raise

    def _wrap(self, handler: grpc.RpcMethodHandler, lane: Lane) -> grpc.RpcMethodHandler:
        args = (handler.request_deserializer, handler.response_serializer)
        watchdog, cfg = self._watchdog, self.cfg
        slot = _Slot(lane)
        release = slot.release

        if handler.request_streaming and handler.response_streaming:
            inner_ss = handler.stream_stream

            def stream_stream(request_iterator, context):
                ticket = watchdog.ticket(context, cfg.stream_idle_timeout_s, "stream")
                responses = None
                try:
                    responses = inner_ss(ticket.requests(request_iterator), context)
                    for response in responses:
                        ticket.arm()       # the client has to take this one
                        yield response
                        ticket.disarm()
                finally:
                    ticket.close()
                    close = getattr(responses, "close", None)
                    if close is not None:
                        close()
                    release()

            behavior, new = stream_stream, grpc.stream_stream_rpc_method_handler(stream_stream, *args)
        elif handler.request_streaming:   # stream-unary: none here; same idle rule as streams
            inner_su = handler.stream_unary

            def stream_unary(request_iterator, context):
                ticket = watchdog.ticket(context, cfg.stream_idle_timeout_s, "stream")
                try:
                    return inner_su(ticket.requests(request_iterator), context)
                finally:
                    ticket.close()
                    release()

            behavior, new = stream_unary, grpc.stream_unary_rpc_method_handler(stream_unary, *args)
        else:
            # Unary request: served in the request-streaming form, reading the one message with a timeout.
            inner = handler.unary_unary or handler.unary_stream
            non_blocking = bool(getattr(inner, "experimental_non_blocking", False))
            streaming_out = handler.response_streaming
            method_name = "unary"

            def one_request(request_iterator, context):
                """The call's one message. When the call ends first (client gone, or no message in time) this
                aborts (a no-op for the client, who has its status) so that gRPC neither serialises a
                missing response nor logs a traceback."""
                ticket = watchdog.ticket(context, cfg.request_read_timeout_s, method_name)
                ticket.arm()
                try:
                    return next(request_iterator)
                except StopIteration:
                    context.abort(grpc.StatusCode.UNIMPLEMENTED, "the method requires exactly one request message")
                except Exception:
                    if ticket.fired or _already_over(context):
                        context.abort(grpc.StatusCode.CANCELLED, "the call ended before its request arrived")
                    raise
                finally:
                    ticket.close()

            if non_blocking:   # Health/Watch: returns at once, answers later from the health servicer's callbacks
                def watch(request_iterator, context, send_response_callback=None):
                    slot.handed = True
                    if not context.add_callback(release):
                        release()
                    return inner(one_request(request_iterator, context), context, send_response_callback)

                watch.experimental_non_blocking = True   # type: ignore[attr-defined]
                behavior, new = watch, grpc.stream_stream_rpc_method_handler(watch, *args)
            elif streaming_out:
                def unary_stream(request_iterator, context):
                    try:
                        yield from inner(one_request(request_iterator, context), context)
                    finally:
                        release()

                behavior, new = unary_stream, grpc.stream_stream_rpc_method_handler(unary_stream, *args)
            else:
                def unary_unary(request_iterator, context):
                    try:
                        return inner(one_request(request_iterator, context), context)
                    finally:
                        release()

                behavior, new = unary_unary, grpc.stream_unary_rpc_method_handler(unary_unary, *args)
        if lane.pool is not None:
            behavior.experimental_thread_pool = lane.pool   # type: ignore[attr-defined]
        return new
