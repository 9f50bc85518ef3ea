"""Transport security from configured PEM files: TLS, or mutual TLS when a
client CA is configured (then a client without a certificate signed by that CA
cannot even complete the handshake, before any token is looked at)."""
from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from recsys.errors import ConfigError
from service.config import ServiceConfig


def check_tls_files(config: ServiceConfig) -> None:
    """Parse the PEM files with the stdlib so a wrong or mismatched key fails at
    start-up with a message, not as handshake errors on every call later."""
    if not config.tls_enabled:
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"config keys tls_cert/tls_key: {config.tls_cert} and {config.tls_key} are not a "
                          f"matching PEM certificate chain and private key ({exc})") from None
    if config.tls_client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(config.tls_client_ca))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"config key tls_client_ca: {config.tls_client_ca} is not a PEM CA bundle "
                              f"({exc})") from None


def server_credentials(config: ServiceConfig) -> grpc.ServerCredentials | None:
    """TLS from the configured PEM files; mutual TLS when a client CA is set."""
    if not config.tls_enabled:
        return None
    assert config.tls_cert is not None and config.tls_key is not None
    check_tls_files(config)
    key, chain = Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes()
    if config.tls_client_ca is None:
        return grpc.ssl_server_credentials([(key, chain)])
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=Path(config.tls_client_ca).read_bytes(),
                                       require_client_auth=True)
