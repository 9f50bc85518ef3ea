"""TLS and mutual TLS from configured PEM files, with certificates made here."""
import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.errors import ConfigError
from service.tls import check_tls_files
from tests.service.support import config, rank_request, running, stub

OVERRIDE = (("grpc.ssl_target_name_override", "localhost"),)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer_name, issuer_key, *, ca=False, server=False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ethicrec test CA")])
    ca = _cert("ethicrec test CA", ca_key, ca_name, ca_key, ca=True)
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        (d / f"{name}.key").write_bytes(_pem_key(key))
        (d / f"{name}.pem").write_bytes(_cert(name, key, ca_name, ca_key, server=server)
                                        .public_bytes(serialization.Encoding.PEM))
        out[f"{name}_key"], out[f"{name}_cert"] = d / f"{name}.key", d / f"{name}.pem"
    return out


def _creds(pki, client_cert: bool) -> grpc.ChannelCredentials:
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
    return grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes(),
                                        private_key=pki["client_key"].read_bytes(),
                                        certificate_chain=pki["client_cert"].read_bytes())


def test_tls(artifact_root, tmp_path, pki, known_items):
    cfg = config(artifact_root, tmp_path, tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    with running(cfg) as (_, target):
        with grpc.secure_channel(target, _creds(pki, client_cert=False), options=OVERRIDE) as ch:
            assert len(stub(ch).Rank(rank_request(known_items[:5]), timeout=30).items) == 5
        with grpc.insecure_channel(target) as ch, pytest.raises(grpc.RpcError) as info:
            stub(ch).Rank(rank_request(known_items[:5]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(artifact_root, tmp_path, pki, known_items):
    cfg = config(artifact_root, tmp_path, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                 tls_client_ca=pki["ca"])
    with running(cfg) as (_, target):
        with grpc.secure_channel(target, _creds(pki, client_cert=False), options=OVERRIDE) as ch:
            with pytest.raises(grpc.RpcError) as info:
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE   # the handshake itself fails
        with grpc.secure_channel(target, _creds(pki, client_cert=True), options=OVERRIDE) as ch:
            assert len(stub(ch).Rank(rank_request(known_items[:5]), timeout=30).items) == 5


def test_mismatched_key_fails_at_start_up(artifact_root, tmp_path, pki):
    cfg = config(artifact_root, tmp_path, tls_cert=pki["server_cert"], tls_key=pki["client_key"])
    with pytest.raises(ConfigError, match="tls_cert/tls_key"):
        check_tls_files(cfg)


def test_half_configured_tls_is_rejected(artifact_root, tmp_path, pki):
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        config(artifact_root, tmp_path, tls_cert=pki["server_cert"])
    with pytest.raises(ConfigError, match="tls_client_ca"):
        config(artifact_root, tmp_path, tls_client_ca=pki["ca"])
