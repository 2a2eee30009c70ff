"""Issue 3, the three other strategies, checked from outside against the
region simulator: round-robin's split, least-latency following a region that
slows down, health-based settling on the region without errors."""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.loadgen import ClosedLoopLoad

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REGIONS, make_config, start_sim, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(60)

LATENCIES = {"us-east-1": 0.020, "us-west-2": 0.005, "eu-west-1": 0.030, "ap-southeast-1": 0.040}
API = "/api/v1/echo"


@pytest.fixture(scope="module")
def sim():
    s = start_sim(LATENCIES)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clean(clean_sim):
    """Every test starts and ends with the module's regions fault-free."""


Load = ClosedLoopLoad  # closed-loop GETs of API, keep-alive


def api_requests(sim, rid: str) -> int:
    return sim.stats(rid)["by_path"].get(API, 0)


# ---------------------------------------------------------------------------------------
def test_round_robin_splits_400_requests_evenly(sim, router_factory):
    rp = router_factory(make_config(sim.ports, strategy="round-robin"))
    assert rp.state()["strategy"] == "round-robin"
    sim.reset_stats()
    with Load(rp.port, clients=8, limit=400) as load:
        load.wait()
    assert len(load.results) == 400
    assert all(status == 200 for _, status, _ in load.results)
    by_header = Counter(load.regions())
    by_region = {rid: api_requests(sim, rid) for rid in REGIONS}
    assert by_header == by_region, (by_header, by_region)
    assert all(99 <= n <= 101 for n in by_region.values()), by_region  # smooth WRR: 100 each
    # One client's requests rotate through every region.
    order = [rp.get(API, headers={"X-Forwarded-For": "81.2.69.142"}).region for _ in range(8)]
    assert set(order[:4]) == set(REGIONS) and order[:4] == order[4:], order


def test_round_robin_follows_weights(sim, router_factory):
    extra = {"us-east-1": {"weight": 3}, "us-west-2": {"weight": 1}, "eu-west-1": {"weight": 0.5},
             "ap-southeast-1": {"weight": 0.5}}
    rp = router_factory(make_config(sim.ports, strategy="round-robin", region_extra=extra))
    with Load(rp.port, clients=8, limit=200) as load:
        load.wait()
    got = Counter(load.regions())
    assert got == {"us-east-1": 120, "us-west-2": 40, "eu-west-1": 20, "ap-southeast-1": 20}, got


def test_least_latency_follows_a_region_that_slows_down(sim, router_factory):
    # A 2 s dwell (the default is 10 s) keeps the test short; hysteresis still applies.
    rp = router_factory(make_config(sim.ports, strategy="least-latency", least_latency={"dwell": "2s"}))

    def lat(rid):
        return rp.region_state(rid)["latency_ms"]

    # Every region measured, us-west-2 (5 ms) leads.
    wait_until(lambda: all(r["latency_ms"] is not None for r in rp.state()["regions"]), 10, what="latencies")
    wait_until(lambda: rp.get(API).region == "us-west-2", 10, what="us-west-2 to lead")
    with Load(rp.port, clients=2) as load:
        wait_until(lambda: len(load.results) > 50, 10, what="warm-up")
        assert set(r[2] for r in load.last(40)) == {"us-west-2"}
        t_slow = time.monotonic()
        sim.fault("us-west-2", extra_latency="150ms")
        # Its smoothed latency climbs past us-east-1's (20 ms) ...
        wait_until(lambda: lat("us-west-2") > lat("us-east-1") * 2, 10, what="us-west-2 latency to rise")
        # ... and traffic follows a faster region: at once, as 155 ms against
        # 20-40 ms is a large win (issue 12's takeover; a small one waits the
        # dwell). On a loaded machine the others' measured latencies blur, so
        # which of them leads is not asserted, only that the router says so.
        def settled():
            last = [r[2] for r in load.last(20)]
            return len(set(last)) == 1 and last[0] != "us-west-2" and last[0]

        new = wait_until(settled, 25, what="traffic to leave us-west-2")
        took = time.monotonic() - t_slow
        time.sleep(1.0)  # and it stays away
    # No flapping back. The other client's request in flight at the move
    # (155 ms) may answer after the first answer from elsewhere.
    t_move = next(r[0] for r in load.results if r[0] > t_slow and r[2] != "us-west-2")
    assert {r[2] for r in load.results if r[0] < t_move} == {"us-west-2"}
    assert "us-west-2" not in {r[2] for r in load.results if r[0] > t_move + 0.5}
    assert rp.admin_req("GET", "/admin/route?country=US").json()["leader"] == new
    assert all(r[1] == 200 for r in load.results)
    assert took < 20, took
    assert rp.region_state(new)["latency_ms"] < lat("us-west-2")


def test_health_based_settles_on_the_region_without_errors(sim, router_factory):
    rp = router_factory(make_config(sim.ports, strategy="health-based"))
    assert rp.get(API).region == "us-west-2"  # all healthy and clean: the fastest
    for rid in ("us-east-1", "us-west-2", "ap-southeast-1"):
        sim.fault(rid, error_rate=0.3)
    with Load(rp.port, clients=4) as load:
        wait_until(lambda: [r[2] for r in load.last(60)] == ["eu-west-1"] * 60, 15, what="settling on eu-west-1")
    st = {r["id"]: r for r in rp.state()["regions"]}
    assert st["eu-west-1"]["error_rate"] == 0.0
    # 500s are not breaker failures (breaker.failure_statuses): the regions
    # answering them were passed over as degraded (issue 12). us-west-2, the
    # fastest, took traffic first; any other that took enough did too.
    assert st["us-west-2"]["degraded"], st["us-west-2"]
    for rid in ("us-east-1", "ap-southeast-1"):
        window = st[rid]["degrade_window"]
        assert st[rid]["degraded"] or window["requests"] < 20, (rid, st[rid])
    assert all(r[1] == 200 for r in load.last(60))
    route = rp.admin_req("GET", "/admin/route?country=US").json()
    assert route["strategy"] == "health-based" and route["chosen"] == "eu-west-1", route
