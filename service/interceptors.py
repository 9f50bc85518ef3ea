"""The one place domain errors become gRPC status codes.

InvalidRequest -> INVALID_ARGUMENT with a google.rpc.BadRequest field
violation; AuditFailure -> the policy's failure status (INTERNAL or UNAVAILABLE)
naming the audit (fail-closed); anything
else -> INTERNAL with a generic message (details go to the server log only).
"""
from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from recsys.errors import AuditFailure, InvalidRequest

log = logging.getLogger("ethicrec.service")


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, InvalidRequest):
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.description)]))
        status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc), details=[detail])
        context.abort_with_status(rpc_status.to_status(status))
    if isinstance(exc, AuditFailure):
        log.error("audit failure: %s", exc, exc_info=exc.__cause__)
        code = grpc.StatusCode.UNAVAILABLE if exc.status == "UNAVAILABLE" else grpc.StatusCode.INTERNAL
        context.abort(code, str(exc))
    log.exception("unhandled error", exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _already_aborted(context: grpc.ServicerContext) -> bool:
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


def _call_over(exc: BaseException, context: grpc.ServicerContext) -> bool:
    """A stream's request iterator raising because the call already ended (the client cancelled, the
    deadline passed, the server closed it): not an error of ours, and the client has its status, so
    re-raise it untouched (gRPC recognises its own error and logs nothing) instead of logging a traceback."""
    return isinstance(exc, grpc.RpcError) and not context.is_active()


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary_unary(request, context):
                try:
                    return inner(request, context)
                except Exception as exc:
                    if _already_aborted(context):
                        raise
                    _abort(context, exc)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            def stream_stream(request_iterator, context):
                try:
                    yield from inner_ss(request_iterator, context)
                except Exception as exc:
                    if _already_aborted(context) or _call_over(exc, context):
                        raise
                    _abort(context, exc)

            return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer,
                                                         handler.response_serializer)
        return handler
