"""Prometheus metrics for the service: RPCs by method and status, pipeline
stage latencies, audit verdicts and findings, model/policy versions, cache
hit rates, hot reloads.

Each `Metrics` owns its own CollectorRegistry instead of the process-global
default, so several servers in one process (tests) never collide and a
scrape shows exactly one server's numbers.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from recsys.lru import LRUCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CacheCollector(Collector):
    """Reads the LRU caches' own counters at scrape time (no per-lookup
    instrumentation on the hot path); the caches come from a callable because
    a hot reload may replace them."""

    def __init__(self, caches: Callable[[], Mapping[str, LRUCache]]) -> None:
        self._caches = caches

    def collect(self):
        hits = CounterMetricFamily("ethicrec_cache_hits", "Cache lookups that found an entry", labels=["cache"])
        misses = CounterMetricFamily("ethicrec_cache_misses", "Cache lookups that found nothing", labels=["cache"])
        ratio = GaugeMetricFamily("ethicrec_cache_hit_ratio", "hits / (hits + misses) since the cache was built",
                                  labels=["cache"])
        entries = GaugeMetricFamily("ethicrec_cache_entries", "Entries held", labels=["cache"])
        for name, cache in self._caches().items():
            h, m = cache.hits, cache.misses
            hits.add_metric([name], h)
            misses.add_metric([name], m)
            ratio.add_metric([name], h / (h + m) if h + m else 0.0)
            entries.add_metric([name], len(cache))
        yield from (hits, misses, ratio, entries)


class BatcherCollector(Collector):
    """The text-encoding micro-batchers' counters at scrape time (recsys/microbatch.py): calls, requests
    served, texts asked for and texts sent to BERT, by batcher. texts_encoded / batches is the mean batch
    size; texts / texts_encoded how much concurrent requests shared."""

    def __init__(self, batchers: Callable[[], Mapping[str, Any]]) -> None:
        self._batchers = batchers

    def collect(self):
        fams = {attr: CounterMetricFamily(f"ethicrec_encode_batch_{name}", help_, labels=["batcher"])
                for attr, name, help_ in (("batches", "calls", "BERT calls made by the micro-batcher"),
                                          ("requests", "requests", "Requests whose cache misses it served"),
                                          ("texts", "texts", "Texts asked for, duplicates included"),
                                          ("encoded", "texts_encoded", "Texts sent to BERT"))}
        for name, batcher in self._batchers().items():
            for attr, fam in fams.items():
                fam.add_metric([name], getattr(batcher, attr))
        yield from fams.values()


class MonitorCollector(Collector):
    """The audit's rolling user-group monitor at scrape time: one gauge per active disparity
    (value = the group's ratio to the best group), the window's per-group values, and refreshes."""

    def __init__(self, monitor: Callable[[], Any]) -> None:
        self._monitor = monitor

    def collect(self):
        active = GaugeMetricFamily("ethicrec_user_group_disparity",
                                   "Active USER_GROUP_DISPARITY findings: group value / best group's value",
                                   labels=["group", "metric"])
        values = GaugeMetricFamily("ethicrec_user_group_metric",
                                   "What each user group received over the monitor's window",
                                   labels=["table", "group", "metric"])
        refreshes = CounterMetricFamily("ethicrec_user_group_monitor_refreshes",
                                        "Recomputations of the user-group monitor")
        mon = self._monitor()
        if mon is not None:
            for f in mon.findings():
                active.add_metric([f.group, f.metric], f.value)
            for st in mon.stats():
                values.add_metric([st.table, st.group, st.metric], st.value)
            refreshes.add_metric([], mon.refreshes)
        yield from (active, values, refreshes)


class ExposureWindowCollector(Collector):
    """The audit's amortised exposure window (audit/exposure_window.py) at scrape time: each item group's
    exposure over the window relative to a group-blind ranking's, its interval, and the active findings."""

    def __init__(self, monitor: Callable[[], Any]) -> None:
        self._monitor = monitor

    def collect(self):
        ratio = GaugeMetricFamily("ethicrec_exposure_window_ratio",
                                  "Item group's position-weighted exposure over the window / a group-blind "
                                  "ranking's expectation (1 = as if groups were ignored)", labels=["group"])
        low = GaugeMetricFamily("ethicrec_exposure_window_ratio_low", "Lower end of the ratio's interval",
                                labels=["group"])
        high = GaugeMetricFamily("ethicrec_exposure_window_ratio_high", "Upper end of the ratio's interval",
                                 labels=["group"])
        responses = GaugeMetricFamily("ethicrec_exposure_window_responses",
                                      "Responses in the window where the group had candidates", labels=["group"])
        active = GaugeMetricFamily("ethicrec_exposure_window_disparity",
                                   "Active AMORTISED_EXPOSURE_DISPARITY findings: the group's amortised ratio",
                                   labels=["group"])
        refreshes = CounterMetricFamily("ethicrec_exposure_window_refreshes",
                                        "Recomputations of the amortised exposure window")
        mon = self._monitor()
        if mon is not None:
            for st in mon.stats():
                ratio.add_metric([st.group], st.ratio)
                low.add_metric([st.group], st.low)
                high.add_metric([st.group], st.high)
                responses.add_metric([st.group], st.responses)
            for f in mon.findings():
                active.add_metric([f.group], f.value)
            refreshes.add_metric([], mon.refreshes)
        yield from (ratio, low, high, responses, active, refreshes)


class LaneCollector(Collector):
    """Each lane's calls in progress and room at scrape time (service/lanes.py)."""

    def __init__(self, lanes: Callable[[], Mapping[str, Any]]) -> None:
        self._lanes = lanes

    def collect(self):
        in_use = GaugeMetricFamily("ethicrec_rpc_lane_in_use", "Calls admitted to the lane now", labels=["lane"])
        room = GaugeMetricFamily("ethicrec_rpc_lane_room", "Calls the lane admits at once", labels=["lane"])
        for name, lane in self._lanes().items():
            in_use.add_metric([name], lane.in_use)
            room.add_metric([name], lane.room)
        yield from (in_use, room)


class AuditLogCollector(Collector):
    """The audit log's local journal at scrape time (audit/log.py): records not yet in the store, and whether
    the store is taking records. Alert on ethicrec_audit_store_up == 0: while it lasts the journal fills
    towards the policy's log.journal_max_mb, and past that bound calls fail closed."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def collect(self):
        pending = GaugeMetricFamily("ethicrec_audit_journal_pending", "Audit records journaled and not yet in "
                                    "the audit store")
        pending.add_metric([], self._log.pending())
        up = GaugeMetricFamily("ethicrec_audit_store_up", "1 while the audit store takes records, 0 while the "
                               "last attempt to ship journaled records to it failed (journal mode)")
        up.add_metric([], 0 if self._log.store_error() else 1)
        yield from (pending, up)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.rpcs = Counter("ethicrec_rpc_requests", "RPCs finished, by method and status code",
                            ["method", "code"], registry=r)
        self.rpc_latency = Histogram("ethicrec_rpc_duration_seconds", "RPC handling time, by method and status code",
                                     ["method", "code"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("ethicrec_rpc_in_flight", "RPCs being handled now", ["method"], registry=r)
        self.stage_latency = Histogram("ethicrec_stage_duration_seconds", "Pipeline stage time per request",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.stopped = Counter("ethicrec_rank_stopped", "Rank requests abandoned (caller cancelled or deadline "
                               "passed), by the stage that was not started", ["stage"], registry=r)
        self.verdicts = Counter("ethicrec_audit_verdicts", "Audit verdicts", ["verdict"], registry=r)
        self.findings = Counter("ethicrec_audit_findings", "Audit findings, by code", ["code"], registry=r)
        self.versions = Info("ethicrec_model", "Model and policy versions being served", registry=r)
        self.undecodable = Counter("ethicrec_rpc_undecodable_requests", "Request messages that could not be "
                                   "decoded (answered INVALID_ARGUMENT), by method and reason (utf8 | malformed)",
                                   ["method", "reason"], registry=r)
        self.lane_refused = Counter("ethicrec_rpc_lane_refused", "Calls refused RESOURCE_EXHAUSTED because their "
                                    "lane was full, by lane (unary | stream | health | watch)", ["lane"], registry=r)
        self.idle_closed = Counter("ethicrec_rpc_idle_closed", "Calls the server ended because their client sent "
                                   "or took nothing for too long, by kind (stream | unary)", ["kind"], registry=r)
        self.reloads = Counter("ethicrec_reloads", "Hot reloads, by result (ok | failed)", ["result"], registry=r)
        self._http: Any = None
        self._lanes: Callable[[], Mapping[str, Any]] | None = None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: prometheus_client returns the same child every time, but each
        `labels()` call validates and locks (about a dozen per Rank call). The label values are method
        names, status codes, stages, verdicts and finding codes: a bounded set. Keyed by the metric object's
        id: the metrics live as long as this object."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_rank(self, timings: Mapping[str, float], verdict: str, finding_codes: list[str]) -> None:
        for stage, seconds in timings.items():
            self.child(self.stage_latency, stage).observe(seconds)
        self.child(self.verdicts, verdict).inc()
        for code in finding_codes:
            self.child(self.findings, code).inc()

    def set_versions(self, model_version: str, policy_version: str) -> None:
        self.versions.info({"model_version": model_version, "policy_version": policy_version})

    def watch_caches(self, caches: Callable[[], Mapping[str, LRUCache]]) -> None:
        self.registry.register(CacheCollector(caches))

    def watch_batchers(self, batchers: Callable[[], Mapping[str, Any]]) -> None:
        self.registry.register(BatcherCollector(batchers))

    def watch_lanes(self, lanes: Callable[[], Mapping[str, Any]]) -> None:
        """Read these lanes at scrape time (a server built again for the same App replaces them)."""
        first = self._lanes is None
        self._lanes = lanes
        if first:
            self.registry.register(LaneCollector(lambda: self._lanes() if self._lanes else {}))

    def watch_monitor(self, monitor: Callable[[], Any]) -> None:
        self.registry.register(MonitorCollector(monitor))

    def watch_audit_log(self, log: Any) -> None:
        self.registry.register(AuditLogCollector(log))

    def watch_exposure_window(self, monitor: Callable[[], Any]) -> None:
        self.registry.register(ExposureWindowCollector(monitor))

    def start_http(self, host: str, port: int, *, ssl_context: Any = None,
                   accepts: Callable[[str], bool] | None = None) -> int:
        """Serve /metrics on host:port in a daemon thread (HTTPS with `ssl_context`; a bearer token that
        `accepts` required when given; service/metrics_http.py); returns the bound port."""
        from service.metrics_http import serve_metrics

        self._http, bound = serve_metrics(self.registry, host, port, ssl_context=ssl_context, accepts=accepts)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _code_name(context: grpc.ServicerContext, default: str) -> str:
    code = context.code()
    if code is None:
        return default
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every RPC that reaches a handler (calls shed by
    maximum_concurrent_rpcs are refused inside gRPC before any interceptor and
    are not seen here). Installed outermost, so auth refusals are counted."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def _done(self, method: str, code: str, t0: float) -> None:
        m = self.m
        m.child(m.in_flight, method).dec()
        m.child(m.rpcs, method, code).inc()
        m.child(m.rpc_latency, method, code).observe(time.perf_counter() - t0)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.lstrip("/")
        m = self.m
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary_unary(request, context):
                t0 = time.perf_counter()
                m.child(m.in_flight, method).inc()
                code = "UNKNOWN"
                try:
                    response = inner(request, context)
                    code = _code_name(context, "OK")
                    return response
                except BaseException:
                    code = _code_name(context, "UNKNOWN")
                    raise
                finally:
                    self._done(method, code, t0)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            def stream_stream(request_iterator, context):
                t0 = time.perf_counter()
                m.child(m.in_flight, method).inc()
                code = "UNKNOWN"
                try:
                    yield from inner_ss(request_iterator, context)
                    code = _code_name(context, "OK")
                except GeneratorExit:
                    code = "CANCELLED"
                    raise
                except BaseException:
                    code = _code_name(context, "UNKNOWN")
                    raise
                finally:
                    self._done(method, code, t0)

            return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer,
                                                         handler.response_serializer)
        return handler
