import grpc
import pytest
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from service.config import ServiceConfig
from service.server import create_server, load_app


@pytest.fixture()
def server(artifact_root, tmp_path):
    """A real in-process server on an ephemeral port."""
    cfg = ServiceConfig(host="127.0.0.1", port=0, artifacts=artifact_root, audit_log=tmp_path / "audit.db",
                        device="cpu", max_workers=4)
    app = load_app(cfg)
    srv, port = create_server(cfg, app)
    srv.start()
    yield app, f"127.0.0.1:{port}"
    srv.stop(0).wait()
    app.close()


@pytest.fixture()
def stub(server):
    _, target = server
    with grpc.insecure_channel(target) as ch:
        yield pb_grpc.RecommenderStub(ch)
