"""Bearer-token authentication and TLS credentials.

Tokens are opaque shared secrets (`authorization: Bearer <token>` metadata),
not JWTs: the callers are a handful of frontends we deploy ourselves, so a
rotated file of random strings is enough and needs no key infrastructure.
Health checks stay open so load balancers and orchestrators can probe without
a secret; everything else (Recommender, reflection) needs a token.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable

import grpc

from service.config import ServiceConfig, read_tokens_file
from service.handlers import refusing_handler

log = logging.getLogger("ethicrec.service")

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps compare_digest from leaking the token length.
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenSet:
    """An immutable set of accepted tokens; replaced whole on reload."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = tuple(_digest(t) for t in tokens)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, presented: str) -> bool:
        d = _digest(presented)
        ok = False
        for known in self._digests:  # no early exit: the time taken does not say which token matched
            ok |= hmac.compare_digest(d, known)
        return ok


def load_tokens(config: ServiceConfig) -> TokenSet:
    tokens = list(config.auth_tokens)
    if config.auth_tokens_file is not None:
        tokens.extend(read_tokens_file(config.auth_tokens_file))
    return TokenSet(tokens)


def _bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """UNAUTHENTICATED unless the call carries an accepted bearer token.

    The check runs before the handler is scheduled, so a rejected call never
    reaches the pipeline. `tokens` may be swapped at any time (SIGHUP reload).
    """

    def __init__(self, tokens: TokenSet) -> None:
        self.tokens = tokens

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        if token is None:
            return refusing_handler(handler, grpc.StatusCode.UNAUTHENTICATED,
                                    "missing bearer token (metadata 'authorization: Bearer <token>')")
        if not self.tokens.accepts(token):
            return refusing_handler(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        return handler

