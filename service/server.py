"""Server construction kept apart from running it, so tests bind port 0.

    app = load_app(config)                       # artifacts, policy, audit log, pipeline
    server, port = create_server(config, app)    # not started
    serve(config)                                # the whole life cycle, with signals
"""
from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from ethicrec.v1 import recommender_pb2 as pb
from ethicrec.v1 import recommender_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from audit.log import AuditLog
from audit.policy import Policy, load_policy
from recsys.artifacts import Artifacts, load_artifacts
from recsys.blend import Blend
from recsys.device import set_cpu_threads
from recsys.pipeline import Pipeline, build_pipeline
from service.config import ServiceConfig
from service.interceptors import ErrorMappingInterceptor
from service.servicer import RecommenderServicer

log = logging.getLogger("ethicrec.service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


@dataclass
class App:
    """Everything loaded once at start-up; never on the request path."""

    artifacts: Artifacts
    policy: Policy
    audit_log: AuditLog
    pipeline: Pipeline
    health: health.HealthServicer

    def close(self) -> None:
        self.audit_log.close()


def load_app(config: ServiceConfig) -> App:
    set_cpu_threads(config.torch_threads)
    policy = load_policy(config.policy)
    artifacts = load_artifacts(config.artifacts, device=config.device)
    audit_log = AuditLog(config.audit_log)
    pipeline = build_pipeline(artifacts, policy=policy, audit_log=audit_log, limits=config.limits,
                              blend=Blend(config.blend, config.blend_weight))
    return App(artifacts, policy, audit_log, pipeline, health.HealthServicer())


def create_server(config: ServiceConfig, app: App) -> tuple[grpc.Server, int]:
    """A configured, bound, not-yet-started server and the port it got."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="ethicrec-rpc"),
        interceptors=[ErrorMappingInterceptor()],
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024),
                 ("grpc.max_send_message_length", 16 * 1024 * 1024)],
    )
    pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(app.pipeline), server)
    health_pb2_grpc.add_HealthServicer_to_server(app.health, server)
    if config.reflection_enabled:
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(f"{config.host}:{config.port}")
    except RuntimeError:  # grpc raises RuntimeError when it cannot bind
        port = 0
    if port == 0:
        raise OSError(f"could not bind {config.host}:{config.port} (address in use or invalid)")
    for name in ("", SERVICE_NAME):
        app.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def serve(config: ServiceConfig) -> int:
    app = load_app(config)
    server, port = create_server(config, app)
    server.start()
    log.info("ethicrec serving model %s (policy %s) on %s:%d, reflection %s", app.artifacts.version,
             app.policy.version, config.host, port, "on" if config.reflection_enabled else "off")
    print(f"ethicrec: serving model {app.artifacts.version} on {config.host}:{port}", flush=True)
    stopped = threading.Event()
    stopping = threading.Event()

    def _stop(signum, _frame) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info("signal %d: draining for up to %.0fs", signum, config.grace_seconds)
        app.health.enter_graceful_shutdown()
        # stop() returns at once; the main loop waits for in-flight RPCs to drain.
        done = server.stop(config.grace_seconds)
        threading.Thread(target=lambda: (done.wait(), stopped.set()), daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopped.wait(0.5):
        pass
    app.close()
    print("ethicrec: stopped", flush=True)
    return 0
