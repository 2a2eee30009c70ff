"""Issue 3, checked from outside: real simulator and router processes on
127.0.0.1, short probe intervals, every wait bounded."""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.loadgen import ClosedLoopLoad

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REGIONS, make_config, metric_value, request, start_sim, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(60)

GB = "81.2.69.142"  # -> eu-west-1
US = "216.160.83.56"  # -> us-east-1
DE = "2a02:d180::1"  # -> eu-west-1 (residency rule below)
LATENCIES = {"us-east-1": 0.005, "us-west-2": 0.010, "eu-west-1": 0.015, "ap-southeast-1": 0.020}


def client(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def Load(port: int, ip: str, clients: int = 8, path: str = "/api/v1/echo") -> ClosedLoopLoad:
    """Closed-loop GETs from `clients` threads, all as the client at `ip`."""
    return ClosedLoopLoad(port, clients, path=path, headers=client(ip))


@pytest.fixture(scope="module")
def sim():
    s = start_sim(LATENCIES)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clean(clean_sim):
    """Every test starts and ends with the module's regions fault-free."""


# ---------------------------------------------------------------------------------------
def test_region_killed_under_load_no_get_fails_and_traffic_returns(sim, router_factory):
    # The breaker keeps its default open_for (30 s): traffic returns because the
    # prober sees the region recover, not because the breaker timed out.
    rp = router_factory(make_config(sim.ports))
    with Load(rp.port, US, clients=8) as load:
        wait_until(lambda: len(load.results) > 200, 10, what="load to warm up")
        assert set(load.regions_since(0)) == {"us-east-1"}
        t_kill = time.monotonic()
        sim.fault("us-east-1", down=True)
        # Its clients move to the first region of its failover list.
        wait_until(lambda: load.regions_since(t_kill)["us-west-2"] > 100, 10, what="traffic on us-west-2")
        wait_until(lambda: rp.region_state("us-east-1")["healthy"] is False, 10, what="prober verdict")
        t_moved = time.monotonic()
        wait_until(lambda: load.regions_since(t_moved)["us-west-2"] > 100, 10, what="steady failover")
        assert set(load.regions_since(t_moved)) == {"us-west-2"}
        early = [r for r in load.results if r[1] != 200]
        assert not early, f"{len(early)} GETs failed: {early[:10]}"
        t_back = time.monotonic()
        sim.reset("us-east-1")
        # ... and come back once it recovers.
        wait_until(lambda: [r[2] for r in load.last(50)] == ["us-east-1"] * 50, 15, what="traffic back home")
        returned = min(r[0] for r in load.since(t_back) if r[2] == "us-east-1") - t_back
    failures = [r for r in load.results if r[1] != 200]
    assert not failures, f"{len(failures)} GETs failed: {failures[:10]}"
    assert returned < 10, returned
    assert metric_value(rp, "edge_router_failovers_total", from_region="us-east-1", to_region="us-west-2")


def test_default_retry_budget_covers_the_burst_when_a_region_dies(sim, router_factory):
    """Same kill as above with the default [limits]: the 8 requests in flight
    when the region dies all fail at once and each needs its one retry. The
    budget caps concurrent retries (3 here); the others queue for a slot."""
    rp = router_factory(make_config(sim.ports))
    sim.fault("us-east-1", extra_latency="200ms")  # so that all 8 are in flight at the kill
    with Load(rp.port, US, clients=8) as load:
        wait_until(lambda: rp.region_state("us-east-1")["in_flight"] == 8, 10, interval=0.01, what="8 in flight")
        t_kill = time.monotonic()
        sim.fault("us-east-1", down=True)
        wait_until(lambda: load.regions_since(t_kill)["us-west-2"] > 200, 10, what="traffic on us-west-2")
    failures = [r for r in load.results if r[1] != 200]
    assert not failures, f"{len(failures)} GETs failed: {failures[:10]}"


def total(sim, key: str, value: str) -> dict[str, int]:
    return {rid: sim.stats(rid)[key].get(value, 0) for rid in REGIONS}


def test_post_dropped_after_body_is_never_sent_twice_but_get_moves_on(sim, router_factory):
    rp = router_factory(make_config(sim.ports))
    sim.fault("eu-west-1", drop_after_body=True)
    sim.reset_stats()
    payment = json.dumps({"amount": 1250, "currency": "EUR"}).encode()
    r = rp.req("POST", "/api/v1/payments", payment,
               {**client(GB), "Content-Type": "application/json", "X-Request-Id": "pay-once-1"})
    assert r.status in (502, 504), (r.status, r.body)
    assert r.json()["error"] in ("upstream_failed", "upstream_timeout")
    assert r.region == "eu-west-1"
    reached = total(sim, "by_path", "/api/v1/payments")
    assert reached == {"us-east-1": 0, "us-west-2": 0, "eu-west-1": 1, "ap-southeast-1": 0}, reached
    assert sum(sim.stats(rid)["payments"] for rid in REGIONS) == 0
    ids = [i for rid in REGIONS for i in sim.stats(rid)["request_ids"] if i == "pay-once-1"]
    assert ids == ["pay-once-1"]

    # The same situation for a GET: answered by the next region of eu-west-1's failover list.
    r = rp.get("/api/v1/echo", headers={**client(GB), "X-Request-Id": "get-moves-on-1"})
    assert r.status == 200, (r.status, r.body)
    assert r.region == "us-east-1"
    assert r.json()["region"] == "us-east-1"
    seen = {rid: sim.stats(rid)["request_ids"].count("get-moves-on-1") for rid in REGIONS}
    assert seen == {"us-east-1": 1, "us-west-2": 0, "eu-west-1": 1, "ap-southeast-1": 0}, seen
    # A PUT with a small (held) body is idempotent: retried elsewhere too.
    r = rp.req("PUT", "/api/v1/upload", b"x" * 1000, client(GB))
    assert r.status == 200 and r.region == "us-east-1", (r.status, r.body)


def test_gray_failure_opens_the_breaker_and_closes_through_half_open(sim, router_factory):
    # The simulator's faults answer 500: an application error, which counts
    # toward the breaker only when the operator lists it (breaker.failure_statuses).
    rp = router_factory(make_config(sim.ports, breaker={"consecutive_failures": 5, "open_for": "1s",
                                                        "failure_statuses": [500]}))
    sim.fault("eu-west-1", error_rate=1.0)
    seen = []

    def moved():
        r = rp.get("/api/v1/echo", headers=client(GB))
        seen.append((r.status, r.region))
        return r.status == 200 and r.region == "us-east-1"

    wait_until(moved, 10, interval=0, what="GB traffic to leave eu-west-1")
    # The region answered 500 until its breaker opened (5 consecutive failures).
    assert seen[:-1] == [(500, "eu-west-1")] * 5, seen
    st = rp.region_state("eu-west-1")
    assert st["breaker"] == "open" and st["healthy"] is True, st  # the prober still sees it healthy
    assert st["error_rate"] > 0.5, st
    assert metric_value(rp, "edge_router_circuit_state", region="eu-west-1") == 2
    assert metric_value(rp, "edge_router_circuit_state", region="us-east-1") == 0
    for _ in range(20):
        r = rp.get("/api/v1/echo", headers=client(GB))
        assert (r.status, r.region) == (200, "us-east-1")
    assert metric_value(rp, "edge_router_failovers_total",
                        from_region="eu-west-1", to_region="us-east-1", reason="breaker_open") >= 20

    sim.reset("eu-west-1")
    wait_until(lambda: rp.region_state("eu-west-1")["breaker"] == "half-open", 5, what="half-open")
    assert metric_value(rp, "edge_router_circuit_state", region="eu-west-1") == 1
    # Trial requests succeed: closed again, and GB clients are home.
    regions = [rp.get("/api/v1/echo", headers=client(GB)).region for _ in range(10)]
    assert regions == ["eu-west-1"] * 10, regions
    assert rp.region_state("eu-west-1")["breaker"] == "closed"
    assert metric_value(rp, "edge_router_circuit_state", region="eu-west-1") == 0


def test_prober_verdicts_within_fall_and_rise_times(sim, router_factory):
    probe = {"interval": "1s", "fast_interval": "100ms", "down_interval": "200ms", "fall": 3, "rise": 2,
             "jitter": 0.1, "timeout": "500ms"}
    rp = router_factory(make_config(sim.ports, probe=probe))
    assert all(r["healthy"] is True for r in rp.state()["regions"])
    assert metric_value(rp, "edge_router_region_healthy", region="eu-west-1") == 1
    t0 = time.monotonic()
    sim.fault("eu-west-1", health_fail=True)
    wait_until(lambda: rp.region_state("eu-west-1")["healthy"] is False, 5, interval=0.02, what="unhealthy")
    took = time.monotonic() - t0
    # The next regular probe (<= interval * 1.1), then fall - 1 fast ones.
    assert 0.15 < took < 1.1 + 2 * 0.11 + 0.5, took
    assert metric_value(rp, "edge_router_region_healthy", region="eu-west-1") == 0
    assert rp.region_state("eu-west-1")["breaker"] == "closed"  # the API never failed
    # Unhealthy regions are passed over: GB clients go to eu-west-1's failover region.
    r = rp.get("/api/v1/echo", headers=client(GB))
    assert (r.status, r.region) == (200, "us-east-1")
    why = {c["region"]: c["reason"] for c in rp.admin_req("GET", f"/admin/route?ip={GB}").json()["candidates"]}
    assert why["eu-west-1"] == "unhealthy", why

    t1 = time.monotonic()
    sim.reset("eu-west-1")
    wait_until(lambda: rp.region_state("eu-west-1")["healthy"] is True, 5, interval=0.02, what="healthy again")
    took = time.monotonic() - t1
    # Next down-interval probe (<= 0.22 s), then rise - 1 fast ones.
    assert took < 0.22 + 0.11 + 0.5, took
    assert metric_value(rp, "edge_router_region_healthy", region="eu-west-1") == 1
    assert rp.get("/api/v1/echo", headers=client(GB)).region == "eu-west-1"


def test_panic_when_every_region_looks_down_to_the_prober(sim, router_factory):
    rp = router_factory(make_config(sim.ports))
    for rid in REGIONS:
        sim.fault(rid, health_fail=True)
    wait_until(lambda: rp.state()["panic"] is True, 10, what="panic")
    assert all(r["healthy"] is False for r in rp.state()["regions"])
    assert metric_value(rp, "edge_router_panic_mode") == 1
    # The API is fine, so requests are still served, each from its home region.
    for ip, home in ((GB, "eu-west-1"), (US, "us-east-1")):
        r = rp.get("/api/v1/echo", headers=client(ip))
        assert (r.status, r.region) == (200, home), (r.status, r.body)
    assert request(rp.admin, "GET", "/readyz").status == 200
    assert "panic" in rp.log()
    for rid in REGIONS:
        sim.reset(rid)
    wait_until(lambda: rp.state()["panic"] is False, 10, what="panic over")
    assert metric_value(rp, "edge_router_panic_mode") == 0


def test_residency_holds_while_its_region_is_down(sim, router_factory):
    rp = router_factory(make_config(sim.ports, residency=[{"countries": ["DE", "FR"], "regions": ["eu-west-1"]}]))
    r = rp.get("/api/v1/echo", headers=client(DE))
    assert (r.status, r.region) == (200, "eu-west-1")
    sim.fault("eu-west-1", down=True)
    sim.reset_stats()
    for i in range(10):
        r = rp.get("/api/v1/echo", headers={**client(DE), "X-Request-Id": f"resid-{i}"})
        assert r.status == 503, (r.status, r.body)
        assert r.json()["error"] == "residency"
        payment = rp.req("POST", "/api/v1/payments", b'{"amount": 1}', {**client(DE), "Content-Type": "application/json"})
        assert payment.status == 503 and payment.json()["error"] == "residency"
    # Once the prober holds the region down, the answer is the same.
    wait_until(lambda: rp.region_state("eu-west-1")["healthy"] is False, 10, what="eu-west-1 unhealthy")
    r = rp.get("/api/v1/echo", headers=client(DE))
    assert r.status == 503 and r.json()["error"] == "residency"
    # ... under every strategy.
    for strategy in ("round-robin", "least-latency", "health-based"):
        assert rp.admin_req("PUT", "/admin/strategy", {"strategy": strategy}).status == 200
        r = rp.get("/api/v1/echo", headers=client(DE))
        assert r.status == 503 and r.json()["error"] == "residency", (strategy, r.status, r.body)
    # Nothing from a DE client left the allowed region; other clients still fail over.
    api = {rid: sum(n for p, n in sim.stats(rid)["by_path"].items() if p != "/api/v1/health") for rid in REGIONS}
    assert api == {"us-east-1": 0, "us-west-2": 0, "eu-west-1": 0, "ap-southeast-1": 0}, api
    r = rp.get("/api/v1/echo", headers=client(GB))
    assert r.status == 200 and r.region != "eu-west-1"
    assert metric_value(rp, "edge_router_residency_refusals_total", country="DE") >= 24
    assert rp.admin_req("GET", "/admin/route?country=DE").json()["answer"].startswith("503 residency")


def test_hanging_region_times_out_get_retried_post_answered_504(sim, router_factory):
    rp = router_factory(make_config(sim.ports, limits={"read_timeout": "300ms"}))
    sim.fault("eu-west-1", hang=True)
    t0 = time.monotonic()
    r = rp.get("/api/v1/echo", headers=client(GB))
    assert (r.status, r.region) == (200, "us-east-1"), (r.status, r.body)
    assert 0.25 < time.monotonic() - t0 < 3
    r = rp.req("POST", "/api/v1/payments", b'{"amount": 5}', {**client(GB), "Content-Type": "application/json"})
    assert r.status == 504 and r.json()["error"] == "upstream_timeout", (r.status, r.body)
    reached = total(sim, "by_path", "/api/v1/payments")
    assert reached == {"us-east-1": 0, "us-west-2": 0, "eu-west-1": 1, "ap-southeast-1": 0}, reached


def test_in_flight_cap_overflows_to_the_next_region(sim, router_factory):
    rp = router_factory(make_config(sim.ports, breaker={"max_in_flight": 2}))
    sim.fault("eu-west-1", extra_latency="300ms")
    barrier = threading.Barrier(6)
    got: list = []

    def one():
        barrier.wait(5)
        got.append(rp.get("/api/v1/echo", headers=client(GB)))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(r.status == 200 for r in got) and len(got) == 6
    regions = Counter(r.region for r in got)
    # Two in eu-west-1; the rest went down its failover list (the cap holds there too).
    assert regions["eu-west-1"] <= 2 and regions["us-east-1"] >= 2, regions
    assert set(regions) <= {"eu-west-1", "us-east-1", "us-west-2"}, regions
    moved = sum(metric_value(rp, "edge_router_failovers_total", from_region="eu-west-1", to_region=to,
                             reason="overloaded") or 0 for to in ("us-east-1", "us-west-2"))
    assert moved == 6 - regions["eu-west-1"] >= 4, moved
