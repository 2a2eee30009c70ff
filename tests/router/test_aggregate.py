"""Merging workers' views: counts add up, verdicts take the worst worker's."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from router.aggregate import merge_metrics, merge_states
from router.metrics import Metrics


def region(**kw):
    base = {"id": "eu-west-1", "healthy": True, "breaker": "closed", "latency_ms": 10.0, "error_rate": 0.0,
            "weight": 1.0, "effective_weight": 1.0, "disabled": False, "draining": False, "in_flight": 1,
            "connections": {"open": 2, "idle": 1, "opened_total": 2}}
    base.update(kw)
    return base


def state(strategy="geographic", **kw):
    return {"strategy": strategy, "version": 3, "panic": False, "default_region": "us-east-1",
            "process": {"pid": kw.pop("pid", 1), "requests": kw.pop("requests", 0)}, "regions": [region(**kw)]}


def test_counts_add_and_the_worst_verdict_wins():
    merged = merge_states([
        state(pid=1, requests=10),
        state(pid=2, requests=5, healthy=False, breaker="half-open", latency_ms=30.0, error_rate=0.5, in_flight=2),
    ])
    r = merged["regions"][0]
    assert (r["healthy"], r["breaker"], r["latency_ms"], r["error_rate"], r["in_flight"]) == (False, "half-open", 20.0, 0.5, 3)
    assert r["connections"] == {"open": 4, "idle": 2, "opened_total": 4}
    assert merged["workers"] == [{"pid": 1, "requests": 10}, {"pid": 2, "requests": 5}]
    assert merged["strategy"] == "geographic"


def test_disagreeing_workers_show_mixed_strategy_and_unknown_health():
    merged = merge_states([state("geographic", healthy=None), state("round-robin", healthy=None)])
    assert merged["strategy"] == "mixed:geographic,round-robin"
    assert merged["regions"][0]["healthy"] is None


def test_metrics_sum_counters_and_histograms_and_keep_worst_gauges():
    a, b = Metrics(("r",)), Metrics(("r",))
    a.count_request("r", 200, "geographic")
    b.count_request("r", 200, "geographic")
    b.count_request("r", 503, "geographic")
    a.region_metrics["r"].upstream_latency.observe(0.002)
    b.region_metrics["r"].upstream_latency.observe(3.0)
    a.region_metrics["r"].healthy.set(1)
    b.region_metrics["r"].healthy.set(0)
    a.region_metrics["r"].circuit.set(0)
    b.region_metrics["r"].circuit.set(2)
    merged = merge_metrics([a.render().decode(), b.render().decode()])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(merged) for s in fam.samples}
    assert samples[("edge_router_requests_total", (("code", "2xx"), ("region", "r"), ("strategy", "geographic")))] == 2
    assert samples[("edge_router_requests_total", (("code", "5xx"), ("region", "r"), ("strategy", "geographic")))] == 1
    assert samples[("edge_router_upstream_latency_seconds_count", (("region", "r"),))] == 2
    assert samples[("edge_router_upstream_latency_seconds_bucket", (("le", "0.0025"), ("region", "r")))] == 1
    assert samples[("edge_router_region_healthy", (("region", "r"),))] == 0
    assert samples[("edge_router_circuit_state", (("region", "r"),))] == 2
    assert "# TYPE edge_router_requests_total counter" in merged
