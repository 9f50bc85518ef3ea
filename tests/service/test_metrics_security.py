"""/metrics: loopback by default, HTTPS with the gRPC certificate when TLS is on, the bearer tokens when auth
is on (service/metrics_http.py)."""
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest

from recsys.errors import ConfigError
from service.config import ServiceConfig, load_config
from tests.service.support import config, free_port, running
from tests.service.test_tls import pki  # noqa: F401 - fixture

TOKEN = "metrics-test-token-0123456789"


def _get(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_bind_loopback_by_default():
    assert ServiceConfig().metrics_host == "127.0.0.1"
    assert load_config(env={"ETHICREC_HOST": "0.0.0.0"}).metrics_host == "127.0.0.1"
    assert load_config(env={"ETHICREC_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


def test_metrics_bound_address_is_loopback_even_when_grpc_is_not(artifact_root, tmp_path):
    port = free_port()
    with running(config(artifact_root, tmp_path, metrics_port=port)) as (app, _):
        assert app.start_metrics() == port
        assert app.metrics._http.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize("key,value", [("metrics_tls", "on"), ("metrics_auth", "on"), ("metrics_tls", "maybe")])
def test_metrics_security_needs_what_it_uses(key, value):
    with pytest.raises(ConfigError, match=key):
        ServiceConfig(**{key: value})


def test_metrics_over_tls_with_a_token(artifact_root, tmp_path, pki):   # noqa: F811
    port = free_port()
    cfg = config(artifact_root, tmp_path, metrics_port=port, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                 auth_tokens=(TOKEN,))
    assert cfg.metrics_tls_enabled and cfg.metrics_auth_enabled
    with running(cfg) as (app, _):
        assert app.start_metrics() == port
        trusted = ssl.create_default_context(cafile=str(pki["ca"]))
        status, body = _get(f"https://localhost:{port}/metrics", TOKEN, trusted)
        assert status == 200 and "ethicrec_rpc_lane_room" in body
        assert _get(f"https://localhost:{port}/metrics", None, trusted)[0] == 401
        assert _get(f"https://localhost:{port}/metrics", "wrong-token", trusted)[0] == 401
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            _get(f"http://127.0.0.1:{port}/metrics", TOKEN)            # plain HTTP is not spoken
        with pytest.raises(urllib.error.URLError):
            _get(f"https://localhost:{port}/metrics", TOKEN, ssl.create_default_context())   # untrusted CA
        # A client that connects and never starts its handshake does not stop other scrapes.
        with socket.create_connection(("127.0.0.1", port)):
            t0 = time.monotonic()
            assert _get(f"https://localhost:{port}/metrics", TOKEN, trusted)[0] == 200
            assert time.monotonic() - t0 < 5


def test_metrics_with_mutual_tls_need_a_client_certificate(artifact_root, tmp_path, pki):   # noqa: F811
    port = free_port()
    cfg = config(artifact_root, tmp_path, metrics_port=port, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                 tls_client_ca=pki["ca"])
    with running(cfg) as (app, _):
        app.start_metrics()
        trusted = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            _get(f"https://localhost:{port}/metrics", None, trusted)
        trusted.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
        assert _get(f"https://localhost:{port}/metrics", None, trusted)[0] == 200


def test_plain_metrics_stay_plain_without_tls_or_tokens(artifact_root, tmp_path):
    port = free_port()
    with running(config(artifact_root, tmp_path, metrics_port=port)) as (app, _):
        app.start_metrics()
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
