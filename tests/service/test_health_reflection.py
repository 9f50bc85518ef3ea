import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from service.config import ServiceConfig
from service.server import SERVICE_NAME


def test_health_serving(server):
    _, target = server
    with grpc.insecure_channel(target) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE_NAME):
            assert h.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING


def test_graceful_shutdown_flips_health(server):
    app, target = server
    app.health.enter_graceful_shutdown()
    with grpc.insecure_channel(target) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        assert h.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING


def test_reflection_lists_the_service_on_localhost(server):
    _, target = server
    with grpc.insecure_channel(target) as ch:
        services = ProtoReflectionDescriptorDatabase(ch).get_services()
    assert SERVICE_NAME == "ethicrec.v1.Recommender"
    assert SERVICE_NAME in services and "grpc.health.v1.Health" in services


def test_reflection_default_follows_the_bind_address():
    assert ServiceConfig(host="127.0.0.1").reflection_enabled
    assert ServiceConfig(host="localhost").reflection_enabled
    assert not ServiceConfig(host="0.0.0.0").reflection_enabled
    assert ServiceConfig(host="0.0.0.0", reflection="on").reflection_enabled
    assert not ServiceConfig(host="127.0.0.1", reflection="off").reflection_enabled
