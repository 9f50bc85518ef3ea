"""Helpers shared by the service tests: run a real in-process server from a
config, build requests, find a free port, scrape /metrics."""
from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
from collections.abc import Iterator

import grpc
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc

from service.config import ServiceConfig
from service.server import App, create_server, load_app


def config(artifact_root, tmp_path, **kw) -> ServiceConfig:
    kw.setdefault("max_workers", 4)
    return ServiceConfig(host="127.0.0.1", port=0, artifacts=artifact_root, audit_log=tmp_path / "audit.db",
                         device="cpu", **kw)


@contextlib.contextmanager
def running(cfg: ServiceConfig, app: App | None = None) -> Iterator[tuple[App, str]]:
    """A started server (and its App unless one is given); stopped and closed after."""
    own = app is None
    app = load_app(cfg) if own else app
    try:
        srv, port = create_server(cfg, app)
        srv.start()
        try:
            yield app, f"127.0.0.1:{port}"
        finally:
            srv.stop(0).wait()
    finally:
        if own:
            app.close()


def stub(channel: grpc.Channel) -> pb_grpc.RecommenderStub:
    return pb_grpc.RecommenderStub(channel)


def rank_request(items, user_id: str = "1", **kw) -> pb.RankRequest:
    return pb.RankRequest(user=pb.User(user_id=user_id), candidates=[pb.Candidate(item_id=i) for i in items], **kw)


def held_rank(channel: grpc.Channel, request: pb.RankRequest, release: threading.Event, timeout: float = 90):
    """A `Rank` call whose request message the client holds back until `release` is set (sent with the
    request-streaming API: the same bytes on the wire, only later). Until then the call sits in the server's
    unary lane waiting for its message, on a worker thread if one is free: a deterministic way to keep
    `Rank` capacity busy. Returns the call's future."""
    def body():
        release.wait(timeout)
        yield request

    rank = channel.stream_unary("/ethicrec.v1.Recommender/Rank", request_serializer=pb.RankRequest.SerializeToString,
                                response_deserializer=pb.RankResponse.FromString)
    return rank.future(body(), timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()
