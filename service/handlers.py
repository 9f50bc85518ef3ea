"""Build a method handler that answers a call with a status and nothing else,
in the same call shape (unary/stream) as the handler it replaces; used by the
interceptors that refuse calls before they reach a servicer (auth, drain)."""
from __future__ import annotations

import grpc


def refusing_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def refuse(_request, context):
        context.abort(code, message)

    args = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, *args)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, *args)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, *args)
    return grpc.stream_stream_rpc_method_handler(refuse, *args)
