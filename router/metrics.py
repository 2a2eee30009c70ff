"""Prometheus metrics, named as SPEC fixes them.

Label children are bound once per (region, code class, strategy) and cached,
so the per-request cost is a dict lookup and an increment.
"""
from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .http1 import status_class

# Inter-region latencies: 1 ms (same metro) to 10 s (a region in trouble).
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4,
    0.6, 1.0, 1.5, 2.0, 2.5, 4.0, 6.0, 10.0,
)
BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, regions: tuple[str, ...]) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "edge_router_requests", "Requests answered, by region that answered, status class and strategy.",
            ["region", "code", "strategy"], registry=r,
        )
        self.upstream_latency = Histogram(
            "edge_router_upstream_latency_seconds",
            "Time from sending a request to a region until its response head arrived.",
            ["region"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.request_duration = Histogram(
            "edge_router_request_duration_seconds",
            "Whole request time at the router, first byte in to last byte out.",
            ["region"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.region_healthy = Gauge(
            "edge_router_region_healthy", "Prober verdict: 1 healthy, 0 unhealthy.", ["region"], registry=r,
        )
        self.probe_latency = Gauge(
            "edge_router_probe_latency_seconds", "Smoothed (EWMA) region latency.", ["region"], registry=r,
        )
        self.circuit_state = Gauge(
            "edge_router_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["region"], registry=r,
        )
        self.failovers = Counter(
            "edge_router_failovers", "Requests moved past a candidate region, and why.",
            ["from_region", "to_region", "reason"], registry=r,
        )
        self.strategy_info = Gauge(
            "edge_router_strategy_info", "The routing strategy in force (1).", ["strategy"], registry=r,
        )
        self.in_flight = Gauge(
            "edge_router_requests_in_flight", "Requests being forwarded to a region.", ["region"], registry=r,
        )
        self.residency_refusals = Counter(
            "edge_router_residency_refusals", "Requests refused because no allowed region was available.",
            ["country"], registry=r,
        )
        self.panic = Gauge(
            "edge_router_panic_mode",
            "1 while every region looks down to the prober and its verdicts are ignored.", registry=r,
        )
        self.geo_errors = Counter(
            "edge_router_geoip_errors", "GeoIP lookups that failed on a damaged database.", registry=r,
        )
        self.retries = Counter(
            "edge_router_retries", "Requests sent again to another region after being sent once.",
            ["reason"], registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "edge_router_retry_budget_exhausted", "Retries refused because the retry budget was spent.", registry=r,
        )
        self._req_children: dict[tuple[str, int, str], object] = {}
        self._strategy = ""
        self.regions = regions
        for rid in regions:
            self.region_bound(rid)

    def region_bound(self, region: str) -> "RegionMetrics":
        return RegionMetrics(self, region)

    def count_request(self, region: str, status: int, strategy: str) -> None:
        key = (region, status // 100, strategy)
        child = self._req_children.get(key)
        if child is None:
            child = self.requests.labels(region, status_class(status), strategy)
            self._req_children[key] = child
        child.inc()

    def set_strategy(self, name: str) -> None:
        if self._strategy:
            self.strategy_info.remove(self._strategy)
        self.strategy_info.labels(name).set(1)
        self._strategy = name

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RegionMetrics:
    """The label children of one region, bound once."""

    __slots__ = ("upstream_latency", "request_duration", "healthy", "probe_latency", "circuit", "in_flight")

    def __init__(self, m: Metrics, region: str) -> None:
        self.upstream_latency = m.upstream_latency.labels(region)
        self.request_duration = m.request_duration.labels(region)
        self.healthy = m.region_healthy.labels(region)
        self.probe_latency = m.probe_latency.labels(region)
        self.circuit = m.circuit_state.labels(region)
        self.in_flight = m.in_flight.labels(region)
