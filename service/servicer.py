"""Recommender servicer: convert, call the pipeline, convert back.

Each request takes the serving snapshot once (see service/reload.py) and
tells the pipeline to stop between stages once the caller has gone away or
its deadline has passed, so abandoned calls do not keep burning CPU.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import grpc
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from recsys.errors import InvalidRequest
from recsys.pipeline import RankContext, RequestStopped
from service.convert import request_from_proto, response_to_proto, wire_field_error
from service.decode import RateLimitedWarning, RequestDecoder, Undecodable
from service.metrics import Metrics
from service.reload import Current

log = logging.getLogger("ethicrec.service")


def stop_check(context: grpc.ServicerContext) -> Callable[[], bool]:
    """True once the call is cancelled or its deadline has passed (whichever the
    server notices first: the deadline is checked directly, not only via the
    cancellation event the transport delivers).

    Polled before every stage, so it is made cheap: the call's end is learnt from one
    termination callback and the deadline is a monotonic-clock time taken once, instead
    of two locked calls into the context per poll. Make one per call (a stream shares one).
    """
    ended: list[bool] = []
    if not context.add_callback(lambda: ended.append(True)):
        return lambda: True   # the call has already ended
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    monotonic = time.monotonic

    def should_stop() -> bool:
        return bool(ended) or (deadline is not None and monotonic() >= deadline)

    return should_stop


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, current: Current, metrics: Metrics | None = None) -> None:
        self.current = current
        self.metrics = metrics

    def _rank(self, request: pb.RankRequest, context: grpc.ServicerContext,
              should_stop: Callable[[], bool]) -> pb.RankResponse:
        if type(request) is Undecodable:   # bytes the deserializer could not parse (service/decode.py)
            raise InvalidRequest(request.field, request.description)
        t0 = time.perf_counter()
        with self.current.use() as snap:
            try:
                ctx: RankContext = snap.pipeline.run(request_from_proto(request), should_stop=should_stop)
            except InvalidRequest as exc:
                if request.candidate_ids:
                    raise wire_field_error(exc, request) from None
                raise
            except RequestStopped as exc:
                if self.metrics is not None:
                    self.metrics.stopped.labels(exc.stage).inc()
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                log.info("rank abandoned before stage %s (%s)", exc.stage, "deadline" if expired else "cancelled",
                         extra={"request_id": request.request_id or None, "stopped_before": exc.stage})
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED, str(exc))
        resp = ctx.response
        assert resp is not None
        audit = resp.audit
        if self.metrics is not None:
            self.metrics.observe_rank(ctx.timings, audit.verdict.value, [f.code for f in audit.findings])
        log.info("rank %s -> %d items, audit %s %s", resp.request_id, len(resp.items), audit.audit_id,
                 audit.verdict.value, extra={
                     "request_id": resp.request_id, "audit_id": audit.audit_id, "verdict": audit.verdict.value,
                     "model_version": resp.model_version, "policy_version": audit.policy_version,
                     "candidates": len(request.candidates) + len(request.candidate_ids),
                     "returned": len(resp.items),
                     "removed": len(resp.removed), "duration_ms": round((time.perf_counter() - t0) * 1000, 2)})
        return response_to_proto(resp)

    def Rank(self, request: pb.RankRequest, context: grpc.ServicerContext) -> pb.RankResponse:
        return self._rank(request, context, stop_check(context))

    def RankStream(self, request_iterator: Iterator[pb.RankRequest],
                   context: grpc.ServicerContext) -> Iterator[pb.RankResponse]:
        should_stop = stop_check(context)
        for i, request in enumerate(request_iterator):
            try:
                yield self._rank(request, context, should_stop)
            except InvalidRequest as exc:
                path = f"requests[{i}].{exc.field}" if exc.field else f"requests[{i}]"
                raise InvalidRequest(path, exc.description) from None


SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


def add_to_server(servicer: RecommenderServicer, server: grpc.Server, metrics: Metrics | None = None) -> None:
    """Register the servicer as the generated `add_RecommenderServicer_to_server` does, but with a
    request deserializer that never raises (service/decode.py): bytes that are not a RankRequest reach
    the handler as `Undecodable` and are answered INVALID_ARGUMENT instead of gRPC's INTERNAL."""
    warn = RateLimitedWarning()   # one WARNING line per interval for the server, whichever method

    def decoder(method: str) -> Callable[[bytes], object]:
        count = None if metrics is None else (lambda reason: metrics.child(metrics.undecodable, method, reason).inc())
        return RequestDecoder(pb.RankRequest, method, count, warn).decode

    handlers = {
        "Rank": grpc.unary_unary_rpc_method_handler(
            servicer.Rank, request_deserializer=decoder("Rank"), response_serializer=pb.RankResponse.SerializeToString),
        "RankStream": grpc.stream_stream_rpc_method_handler(
            servicer.RankStream, request_deserializer=decoder("RankStream"),
            response_serializer=pb.RankResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
