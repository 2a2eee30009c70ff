"""Prometheus metrics, named as SPEC fixes them.

What every request touches (request counts, the two latency histograms,
in-flight gauges) is kept in plain Python numbers, lock-free (one event
loop thread writes them), and turned into metric families only when
Prometheus scrapes. Rare events (failovers, retries, refusals) and gauges
set on publication use prometheus_client directly.
"""
from __future__ import annotations

from typing import Callable, Final, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .http1 import status_class

# Inter-region latencies: 1 ms (same metro) to 10 s (a region in trouble).
# Typed as a variable-length tuple: a fixed-length one is a C struct to mypyc,
# boxed into a new tuple of new floats at every observe().
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4,
    0.6, 1.0, 1.5, 2.0, 2.5, 4.0, 6.0, 10.0,
)
BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}
# Health probe results: a 2xx; the region answered something else; no answer in
# time; no answer at all (refused, reset, TLS, DNS).
PROBE_RESULTS = ("ok", "failure", "timeout", "network")

CONTENT_TYPE = CONTENT_TYPE_LATEST


def bucket_of(bounds: tuple[float, ...], value: float) -> int:
    """bisect_left(bounds, value), as a loop mypyc compiles to float compares:
    the C bisect compares boxed floats through the generic protocol."""
    lo, hi = 0, len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


class LocalHistogram:
    """Bucket counts and a sum; observe() is a bisect and two additions."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # last one: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bucket_of(LATENCY_BUCKETS, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts):
            acc += n
            out.append((bound, acc))
        return out


class HotPathCollector:
    """Exports the hot-path numbers at scrape time."""

    def __init__(self, metrics: "Metrics") -> None:
        self.m = metrics

    def describe(self) -> Iterable:
        return []  # families are built at collect time; nothing to pre-register

    def collect(self) -> Iterable:
        m = self.m
        req = CounterMetricFamily(
            "edge_router_requests", "Requests answered, by region that answered, status class and strategy.",
            labels=["region", "code", "strategy"],
        )
        for (region, cls, strategy), n in sorted(m.request_counts.items()):
            req.add_metric([region, status_class(cls * 100), strategy], n)
        yield req
        for name, doc, attr in (
            ("edge_router_upstream_latency_seconds",
             "Time from sending a request to a region until its response head arrived.", "upstream_latency"),
            ("edge_router_request_duration_seconds",
             "Whole request time at the router, first byte in to last byte out.", "request_duration"),
        ):
            fam = HistogramMetricFamily(name, doc, labels=["region"])
            for region, rm in m.region_metrics.items():
                h = getattr(rm, attr)
                fam.add_metric([region], h.buckets(), h.sum)
            if attr == "request_duration":  # the router's own answers
                fam.add_metric(["none"], m.none_duration.buckets(), m.none_duration.sum)
            yield fam
        gauge = GaugeMetricFamily("edge_router_requests_in_flight", "Requests being forwarded to a region.",
                                  labels=["region"])
        for region, n in m.in_flight().items():
            gauge.add_metric([region], n)
        yield gauge


class Metrics:
    def __init__(self, regions: tuple[str, ...]) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.request_counts: dict[tuple[str, int, str], int] = {}
        self.region_metrics: dict[str, RegionMetrics] = {}
        # region -> requests in flight; the region store points this at its live counts
        self.in_flight: Callable[[], dict[str, int]] = lambda: {rid: 0 for rid in self.regions}
        r.register(HotPathCollector(self))
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
        self.residency_refusals = Counter(
            "edge_router_residency_refusals", "Requests refused because no allowed region was available.",
            ["country"], registry=r,
        )
        self.panic = Gauge(
            "edge_router_panic_mode",
            "1 while every region looks down to the prober and its verdicts are ignored.", registry=r,
        )
        self.breaker_panic = Counter(
            "edge_router_panic",
            "Requests sent to a breaker-open region because every candidate's breaker was open.",
            registry=r,
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
        # Operator state and the decision store (shared state, issue 11).
        self.region_admin_state = Gauge(
            "edge_router_region_admin_state", "Operator decision: 0 enabled, 1 draining, 2 disabled.",
            ["region"], registry=r,
        )
        self.region_effective_weight = Gauge(
            "edge_router_region_effective_weight", "Region weight after operator weights and drains.",
            ["region"], registry=r,
        )
        self.state_store_up = Gauge(
            "edge_router_state_store_up",
            "1 while the decision store ([state] backend) answers; 0: serving the last known decisions.",
            registry=r,
        )
        self.state_store_up.set(1)
        self.config_reload_success = Gauge(
            "edge_router_config_reload_success", "Whether the last config reload succeeded (1) or was refused (0).",
            registry=r,
        )
        self.config_reload_success.set(1)
        self.notifications = Counter(
            "edge_router_notifications", "Webhook notifications, by outcome: sent, retried, failed, "
            "dropped (queue full), coalesced (held back by notify.min_interval).", ["outcome"], registry=r,
        )
        for outcome in ("sent", "retried", "failed", "dropped", "coalesced"):
            self.notifications.labels(outcome)
        self.region_degraded = Gauge(
            "edge_router_region_degraded",
            "1 while the region's live error rate or p95 latency is over the [degrade] thresholds.",
            ["region"], registry=r,
        )
        self.rate_limited = Counter(
            "edge_router_rate_limited",
            "Requests over a rate limit, by rule: answered 429, or let through by a log_only rule.",
            ["rule"], registry=r,
        )
        # WebSocket tunnels (router/tunnel.py): open now, ended by outcome, bytes each way.
        self.tunnels_active = Gauge(
            "edge_router_tunnels_active", "WebSocket tunnels open, by region.", ["region"], registry=r,
        )
        self.tunnels = Counter(
            "edge_router_tunnels", "WebSocket tunnels ended, by region and outcome "
            "(client_closed, region_closed, idle_timeout, region_disabled, shutdown).",
            ["region", "outcome"], registry=r,
        )
        self.tunnel_bytes = Counter(
            "edge_router_tunnel_bytes", "Bytes relayed through ended WebSocket tunnels, by region and direction "
            "(to_region, to_client).", ["region", "direction"], registry=r,
        )
        for region in regions:
            self.tunnels_active.labels(region)
            for direction in ("to_region", "to_client"):
                self.tunnel_bytes.labels(region, direction)
        self.connections_refused = Counter(
            "edge_router_connections_refused",
            "Client connections refused at once because limits.max_connections were open.", registry=r,
        )
        self.stalled_clients_cut = Counter(
            "edge_router_stalled_clients_cut",
            "Clients cut because they stopped reading while their region connection was needed by a "
            "request waiting for one (before limits.send_timeout), by region.", ["region"], registry=r,
        )
        for region in regions:
            self.stalled_clients_cut.labels(region)
        # -- polish (issue 15): breaker transitions, probe results, the router's own answers
        self.breaker_transitions = Counter(
            "edge_router_breaker_transitions", "Circuit breaker state changes, by the state entered.",
            ["region", "to"], registry=r,
        )
        self.probes = Counter(
            "edge_router_probes",
            "Health probes by result: ok (2xx), failure (another status), timeout, network "
            "(refused, reset, TLS, DNS).",
            ["region", "result"], registry=r,
        )
        self.none_duration = LocalHistogram()  # request_duration{region="none"}
        # -- end polish
        self._strategy = ""
        self.regions = regions
        for rid in regions:
            self.region_bound(rid)

    def region_bound(self, region: str) -> "RegionMetrics":
        rm = self.region_metrics.get(region)
        if rm is None:
            rm = self.region_metrics[region] = RegionMetrics(self, region)
        return rm

    def count_request(self, region: str, status: int, strategy: str) -> None:
        key = (region, status // 100, strategy)
        counts = self.request_counts
        counts[key] = counts.get(key, 0) + 1

    def set_strategy(self, name: str) -> None:
        if self._strategy:
            self.strategy_info.remove(self._strategy)
        self.strategy_info.labels(name).set(1)
        self._strategy = name
        # Series exist at 0 from the start, so that rate() and alerts see them
        # before the first request (Prometheus practice for known label sets).
        for region in (*self.regions, "none"):
            for cls in (2, 3, 4, 5):
                self.request_counts.setdefault((region, cls, name), 0)

    def tunnel_opened_or_closed(self, region: str, active: int) -> None:
        self.tunnels_active.labels(region).set(active)

    def tunnel_ended(self, tunnel) -> None:
        self.tunnels.labels(tunnel.region, tunnel.outcome).inc()
        self.tunnel_bytes.labels(tunnel.region, "to_region").inc(tunnel.client.bytes_in)
        self.tunnel_bytes.labels(tunnel.region, "to_client").inc(tunnel.upstream.bytes_in)

    def set_operator_state(self, views) -> None:
        """admin_state and effective_weight gauges from a published snapshot's region views."""
        for v in views:
            self.region_admin_state.labels(v.id).set(2 if v.disabled else 1 if v.draining else 0)
            self.region_effective_weight.labels(v.id).set(v.effective_weight)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RegionMetrics:
    """The label children of one region, bound once."""

    __slots__ = ("upstream_latency", "request_duration", "healthy", "probe_latency", "circuit",
                 "transitions", "probe_results", "degraded")

    def __init__(self, m: Metrics, region: str) -> None:
        self.upstream_latency = LocalHistogram()
        self.request_duration = LocalHistogram()
        self.healthy = m.region_healthy.labels(region)
        self.probe_latency = m.probe_latency.labels(region)
        self.circuit = m.circuit_state.labels(region)
        # Every series at 0 from the start: rate() and alerts see them before the first event.
        self.transitions = {to: m.breaker_transitions.labels(region, to) for to in BREAKER_VALUES}
        self.probe_results = {result: m.probes.labels(region, result) for result in PROBE_RESULTS}
        self.degraded = m.region_degraded.labels(region)
