"""Issue 15's metrics: breaker transitions, probe results, the router's own answers in
request_duration, and every known series at 0 from the start."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from router.clock import FakeClock
from router.config import default_config
from router.store import MemoryDecisionStore
from router.metrics import Metrics
from router.prober import probe_result
from router.state import RegionStore

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def make_store():
    config = default_config()
    metrics = Metrics(REGIONS)
    clock = FakeClock()
    store = RegionStore(config, MemoryDecisionStore(config.strategy), metrics, clock, lambda: 1_700_000_000.0)
    return store, metrics, clock


def test_series_exist_at_zero_from_the_start():
    _, metrics, _ = make_store()
    got = samples(metrics)
    for region in REGIONS:
        for to in ("closed", "half-open", "open"):
            assert got[("edge_router_breaker_transitions_total", (("region", region), ("to", to)))] == 0
        for result in ("ok", "failure", "timeout", "network"):
            assert got[("edge_router_probes_total", (("region", region), ("result", result)))] == 0
    assert got[("edge_router_request_duration_seconds_count", (("region", "none"),))] == 0
    assert got[("edge_router_requests_total", (("code", "5xx"), ("region", "none"), ("strategy", "geographic")))] == 0


def test_breaker_transitions_are_counted_by_state_entered():
    store, metrics, clock = make_store()
    rt = store.regions["eu-west-1"]
    for _ in range(store.config.breaker.consecutive_failures):
        store.breaker_changed(rt, rt.breaker.on_failure(clock.now()))
    clock.advance(store.config.breaker.open_for + 1)
    store.tick()  # open -> half-open on time, reported by tick
    got = samples(metrics)
    key = lambda to: ("edge_router_breaker_transitions_total", (("region", "eu-west-1"), ("to", to)))
    assert (got[key("open")], got[key("half-open")], got[key("closed")]) == (1, 1, 0)


def test_probe_results_and_none_duration():
    assert [probe_result(True, ""), probe_result(False, "HTTP 503"),
            probe_result(False, "timeout after 5s"),
            probe_result(False, "connect refused to h:443")] == ["ok", "failure", "timeout", "network"]
    store, metrics, _ = make_store()
    metrics.none_duration.observe(0.002)
    got = samples(metrics)
    assert got[("edge_router_request_duration_seconds_count", (("region", "none"),))] == 1
    assert got[("edge_router_request_duration_seconds_sum", (("region", "none"),))] == 0.002
