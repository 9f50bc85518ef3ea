"""Server construction kept apart from running it, so tests bind port 0.

    app = load_app(config)                       # artifacts, policy, audit log, pipeline, metrics
    server, port = create_server(config, app)    # not started
    serve_one(config)                            # the whole life cycle, with signals

(`python -m service` calls `service.processes.serve`: this, or several such processes on one port.)

Life cycle under `serve_one`: SIGHUP reloads (new artifact version from LATEST,
the policy file, the tokens file) without dropping a call; SIGTERM/SIGINT
drain: health NOT_SERVING, new calls refused with UNAVAILABLE, in-flight calls
get `grace_seconds`, then the port closes, the audit log is closed and the
process exits 0.
"""
from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from ethicrec.v1 import recommender_pb2 as pb
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from audit.log import AuditLog
from audit.policy import Policy
from recsys.artifacts import Artifacts
from recsys.device import freeze_loaded_objects, set_cpu_threads, single_threaded_blas
from recsys.errors import ConfigError
from recsys.pipeline import Pipeline
from service.audit_trail import make_audit_log, open_audit_log, probe_audit_store
from service.auth import TokenAuthInterceptor, load_tokens
from service.config import ServiceConfig, _is_loopback
from service.drain import DrainInterceptor
from service.interceptors import ErrorMappingInterceptor
from service.lanes import LaneConfig, LaneInterceptor
from service.metrics import Metrics, MetricsInterceptor
from service.reload import Current, ReloadResult, assemble, load_models
from service.servicer import RecommenderServicer, add_to_server
from service.tls import check_tls_files, server_credentials

log = logging.getLogger("ethicrec.service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
DRAIN_HANDLERS_S = 5.0  # after the grace: how long to wait for cancelled handlers to reach a stage boundary
DRAIN_QUIET_S = 0.3     # close the port once no new call has arrived for this long (bounded by the grace)


@dataclass
class App:
    """Everything loaded at start-up (never on the request path); `current`
    is the one thing that changes at run time, on reload."""

    config: ServiceConfig
    current: Current
    audit_log: AuditLog
    health: health.HealthServicer
    metrics: Metrics
    drain: DrainInterceptor = field(default_factory=DrainInterceptor)
    auth: TokenAuthInterceptor | None = field(default=None)
    lanes: LaneInterceptor | None = field(default=None)

    @property
    def artifacts(self) -> Artifacts:
        return self.current.get().artifacts

    @property
    def policy(self) -> Policy:
        return self.current.get().policy

    @property
    def pipeline(self) -> Pipeline:
        return self.current.get().pipeline

    def reload(self) -> ReloadResult:
        """Load the newest artifact version and the policy file again and swap them
        in; on failure keep serving what is loaded. Also re-reads the tokens file."""
        result = self.current.reload(self.config, self.audit_log)
        if result.ok:
            gc.unfreeze()   # the old snapshot is garbage once its last request ends; let the collector see it
            self.metrics.reloads.labels("ok").inc()
            self.metrics.set_versions(result.model_version, result.policy_version)
            log.info("reloaded: model %s -> %s, policy %s -> %s", result.previous_model_version,
                     result.model_version, result.previous_policy_version, result.policy_version,
                     extra={"model_version": result.model_version, "policy_version": result.policy_version})
        else:
            self.metrics.reloads.labels("failed").inc()
            log.error("reload failed, still serving model %s (policy %s): %s", result.model_version,
                      result.policy_version, result.error, extra={"model_version": result.model_version})
        if self.auth is not None and self.config.auth_tokens_file is not None:
            try:
                self.auth.tokens = load_tokens(self.config)
            except ConfigError as exc:
                log.error("tokens not reloaded, the previous tokens stay valid: %s", exc)
        return result

    def start_metrics(self, host: str | None = None, port: int | None = None) -> int | None:
        """Serve /metrics if a port is configured; returns the bound port. On `metrics_host` (loopback unless
        configured), over TLS with the gRPC certificate and behind the bearer tokens as configured
        (`metrics_tls`, `metrics_auth`, service/metrics_http.py)."""
        cfg = self.config
        port = cfg.metrics_port if port is None else port
        if not port:
            return None
        host = host or cfg.metrics_host
        ctx = None
        if cfg.metrics_tls_enabled:
            from service.metrics_http import server_ssl_context

            ctx = server_ssl_context(str(cfg.tls_cert), str(cfg.tls_key),
                                     str(cfg.tls_client_ca) if cfg.tls_client_ca else None)
        accepts = None
        if cfg.metrics_auth_enabled:
            if self.auth is None:
                self.auth = TokenAuthInterceptor(load_tokens(cfg))
            auth = self.auth
            accepts = lambda token: auth.tokens.accepts(token)   # noqa: E731 - the tokens swap on reload
        if not _is_loopback(host) and ctx is None:
            log.warning("/metrics on %s without TLS: scrapes travel in clear text", host)
        if not _is_loopback(host) and accepts is None:
            log.warning("/metrics on %s without bearer tokens: anyone who can reach it can read it", host)
        return self.metrics.start_http(host, port, ssl_context=ctx, accepts=accepts)

    def close(self) -> None:
        if self.lanes is not None:
            self.lanes.close()
        self.metrics.close()
        self.current.get().close()
        self.audit_log.close()


def load_app(config: ServiceConfig, *, open_log: bool = True) -> App:
    """Everything loaded at start-up. With `open_log` False the audit log (and a default key file) is not
    created yet: `serve_one` opens it only once the port is bound, so a start that fails leaves nothing on
    disk; a misconfigured key still fails here."""
    set_cpu_threads(config.torch_threads)
    single_threaded_blas()
    artifacts, policy = load_models(config)
    audit_log = make_audit_log(config, policy, lazy=not open_log)
    try:
        snapshot = assemble(config, artifacts, policy, audit_log)
    except BaseException:
        audit_log.close()
        raise
    current = Current(snapshot)
    metrics = Metrics()
    metrics.set_versions(artifacts.version, policy.version)
    metrics.watch_caches(lambda: current.get().caches())
    metrics.watch_batchers(lambda: current.get().batchers())
    metrics.watch_monitor(lambda: current.get().monitor())
    metrics.watch_exposure_window(lambda: current.get().exposure_window())
    metrics.watch_audit_log(audit_log)
    return App(config, current, audit_log, health.HealthServicer(), metrics)


def create_server(config: ServiceConfig, app: App) -> tuple[grpc.Server, int]:
    """A configured, bound, not-yet-started server and the port it got.

    Load shedding by lane (service/lanes.py): at most `rpc_workers` Rank calls run and max_queue wait for a
    thread; streams (at most `stream_slots`) and health checks have threads and room of their own; any call
    beyond its lane's room is answered RESOURCE_EXHAUSTED at once instead of queueing without bound.
    """
    if app.lanes is not None:
        app.lanes.close()
    m = app.metrics
    app.lanes = LaneInterceptor(
        LaneConfig(unary_threads=config.rpc_workers, unary_room=config.rpc_workers + config.max_queue,
                   max_streams=config.stream_slots, stream_idle_timeout_s=config.stream_idle_timeout_s,
                   request_read_timeout_s=config.request_read_timeout_s),
        on_refused=lambda lane: m.child(m.lane_refused, lane).inc(),
        on_idle=lambda kind: m.child(m.idle_closed, kind).inc())
    lanes = app.lanes
    m.watch_lanes(lambda: lanes.lanes)
    interceptors: list[grpc.ServerInterceptor] = [app.lanes, MetricsInterceptor(app.metrics), app.drain]
    if config.auth_enabled:
        if app.auth is None:
            app.auth = TokenAuthInterceptor(load_tokens(config))
        interceptors.append(app.auth)
    interceptors.append(ErrorMappingInterceptor())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.rpc_workers, thread_name_prefix="ethicrec-rpc"),
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", config.max_message_bytes),
                 ("grpc.max_send_message_length", config.max_message_bytes),
                 # The processes of `processes` > 1 bind one port together (gRPC's default on Linux; explicit
                 # here); a single process asks for the port alone, so a second server cannot share it unseen.
                 ("grpc.so_reuseport", 1 if config.processes > 1 else 0)],
        maximum_concurrent_rpcs=app.lanes.total_room,
    )
    add_to_server(RecommenderServicer(app.current, app.metrics), server, app.metrics)
    health_pb2_grpc.add_HealthServicer_to_server(app.health, server)
    if config.reflection_enabled:
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpc raises RuntimeError when it cannot bind
        port = 0
    if port == 0:
        raise OSError(f"could not bind {address} (address in use or invalid)")
    if not config.loopback and not config.auth_enabled:
        log.warning("bound to %s without bearer tokens: any client that can reach it may call Rank", config.host)
    if not config.loopback and not config.tls_enabled:
        log.warning("bound to %s without TLS: requests and audit attributes travel in clear text", config.host)
    for name in ("", SERVICE_NAME):
        app.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def serve_one(config: ServiceConfig) -> int:
    """One server process: load, bind, serve; drain and stop on SIGTERM/SIGINT, reload on SIGHUP."""
    check_tls_files(config)  # before the slow model load: a bad certificate fails start-up at once
    probe_audit_store(config)   # likewise: a database that cannot be used fails start-up at once
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a SIGHUP while loading must not kill us
    try:
        app = load_app(config, open_log=False)
        freeze_loaded_objects()
        try:
            server, port = create_server(config, app)
            metrics_port = app.start_metrics()
            open_audit_log(app.audit_log)   # only now, with the ports bound: a failed start creates no log and no key
        except BaseException:
            app.close()
            raise
    except BaseException:
        signal.signal(signal.SIGHUP, previous_hup)
        raise
    server.start()
    enc = app.artifacts.store.encoder
    log.info("ethicrec serving model %s (policy %s) on %s:%d, %d workers, encoding on %s in %s, tls %s, auth %s, "
             "reflection %s, metrics %s",
             app.artifacts.version, app.policy.version, config.host, port, config.rpc_workers, enc.device.type,
             enc.precision,
             "mutual" if config.tls_client_ca else ("on" if config.tls_enabled else "off"),
             "on" if config.auth_enabled else "off", "on" if config.reflection_enabled else "off",
             f"{'https' if config.metrics_tls_enabled else 'http'}://{config.metrics_host}:{metrics_port}/metrics"
             + (" (bearer token)" if config.metrics_auth_enabled else "") if metrics_port else "off",
             extra={"model_version": app.artifacts.version, "policy_version": app.policy.version})
    print(f"ethicrec: serving model {app.artifacts.version} on {config.host}:{port}", flush=True)

    # Handlers only set flags: the main thread does the work, outside signal context.
    wake, reload_requested, stop_signal = threading.Event(), threading.Event(), []

    def _on_stop(signum, _frame) -> None:
        stop_signal.append(signum)
        wake.set()

    def _on_hup(_signum, _frame) -> None:
        reload_requested.set()
        wake.set()

    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    signal.signal(signal.SIGHUP, _on_hup)
    while not stop_signal:
        wake.wait(1.0)
        wake.clear()
        if reload_requested.is_set() and not stop_signal:
            reload_requested.clear()
            log.info("SIGHUP: reloading")
            app.reload()

    log.info("signal %d: draining for up to %gs", stop_signal[0], config.grace_seconds)
    deadline = time.monotonic() + config.grace_seconds
    app.health.enter_graceful_shutdown()
    app.drain.start()                          # new calls: UNAVAILABLE; in-flight ones carry on
    app.current.wait_idle(config.grace_seconds)
    app.drain.wait_quiet(DRAIN_QUIET_S, deadline)
    # Then close the port; open streams get what is left of the grace, after which gRPC cancels them.
    server.stop(max(0.0, deadline - time.monotonic())).wait()
    if not app.current.wait_idle(DRAIN_HANDLERS_S):
        log.warning("handlers still running %.0fs after the grace period; closing the audit log anyway",
                    DRAIN_HANDLERS_S)
    app.close()   # the audit log's last writes are committed and the WAL checkpointed here
    log.info("stopped")
    print("ethicrec: stopped", flush=True)
    return 0
