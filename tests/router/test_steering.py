"""The region store with the steering mechanisms, on a fake clock: degraded
regions ranked last under every strategy, slow-start shares, flap holds,
explanations and metrics."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

import pytest

from policies import NAMES
from policies.model import RequestFacts
from router.clock import FakeClock
from router.config import DegradeConfig, default_config
from router.store import MemoryDecisionStore
from router.explain import explain_route
from router.metrics import Metrics
from router.candidates import skip_reason
from router.state import RegionStore

DEGRADE = DegradeConfig(error_rate=0.05, latency=2.0, window=10.0, min_requests=10)


@pytest.fixture
def state_log(caplog):
    """The store's log lines, wherever setup_logging sent them (it stops propagation)."""
    logger = logging.getLogger("edge_router.state")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="edge_router.state")
    yield caplog
    logger.removeHandler(caplog.handler)


def make_store(strategy="geographic", **cfg):
    config = replace(default_config(), strategy=strategy, degrade=DEGRADE, **cfg)
    clock = FakeClock()
    store = RegionStore(config, MemoryDecisionStore(strategy), Metrics(tuple(r.id for r in config.regions)),
                        clock, lambda: 1_700_000_000.0)
    return store, clock


def answers(store, region, n, status=200, seconds=0.05):
    rt = store.regions[region]
    for _ in range(n):
        store.record_outcome(rt, seconds, status)


def firsts(store, country, n):
    return [store.ranker.rank(RequestFacts(country, seq=store.next_seq()))[0] for _ in range(n)]


@pytest.mark.parametrize("strategy", NAMES)
@pytest.mark.parametrize("fault", [dict(status=503), dict(seconds=2.5)])
def test_a_degraded_region_is_ranked_after_the_others_and_comes_back(strategy, fault, state_log):
    store, clock = make_store(strategy, slow_start=0.0)
    for rt in store.regions.values():
        store.record_latency(rt, 0.05)
    answers(store, "eu-west-1", 18)
    answers(store, "eu-west-1", 2, **fault)  # 10 % 503s, or 10 % answers at 2.5 s
    store.tick()
    assert store.snapshot.get("eu-west-1").degraded
    assert "region eu-west-1 degraded: error rate" in state_log.text
    for _ in range(8):
        assert store.ranker.rank(RequestFacts("GB", seq=store.next_seq()))[-1] == "eu-west-1"
    state = {r["id"]: r for r in store.state_json()["regions"]}
    assert state["eu-west-1"]["degraded"] is True and state["eu-west-1"]["degrade_window"]["requests"] == 20
    assert b'edge_router_region_degraded{region="eu-west-1"} 1.0' in store.metrics.render()
    route = explain_route(store, country="GB", client_ip=None, max_in_flight=100)
    degraded = [c for c in route["candidates"] if c["region"] == "eu-west-1"]
    assert degraded[0]["degraded"].startswith("error rate")
    # healed: a window without enough requests to judge, then it is tried again
    clock.advance(DEGRADE.window)
    store.tick()
    assert not store.snapshot.get("eu-west-1").degraded
    assert b'edge_router_region_degraded{region="eu-west-1"} 0.0' in store.metrics.render()


def test_a_degraded_region_still_serves_when_it_is_all_that_is_left():
    store, clock = make_store("geographic")
    answers(store, "eu-west-1", 10, status=503)
    store.tick()
    for rid in ("us-east-1", "us-west-2", "ap-southeast-1"):
        store.disable(rid)
    order = store.ranker.rank(RequestFacts("GB"))
    usable = [r for r in order if not skip_reason(store.regions[r], 0.0, clock.now(), 100)]
    assert usable == ["eu-west-1"]


def test_slow_start_share_under_geographic_and_round_robin():
    store, clock = make_store("geographic", slow_start=30.0)
    rt = store.regions["eu-west-1"]
    for _ in range(store.config.probe.fall):
        store.record_probe(rt, False, None)
    assert rt.health_excluded
    for _ in range(store.config.probe.rise):
        store.record_probe(rt, True, 0.05)
    # back: 10 % of its own countries' traffic, the rest to its failover region
    assert rt.ramp == pytest.approx(0.1) and rt.admit == 1.0
    assert Counter(firsts(store, "GB", 1000)) == {"eu-west-1": 100, "us-east-1": 900}
    # moved to the end, not removed: it serves when nothing else can
    assert set(store.ranker.rank(RequestFacts("GB", seq=store.seq))) == set(store.regions)
    assert store.state_json()["regions"][2]["slow_start"] == pytest.approx(0.1)
    route = explain_route(store, country="GB", client_ip=None, max_in_flight=100)
    assert {"region": "eu-west-1", "usable": True, "reason": None, "slow_start": 0.1} in route["candidates"]
    shares = []
    for _ in range(4):
        clock.advance(10.0)
        store.tick()
        shares.append(Counter(firsts(store, "GB", 1000))["eu-west-1"])
    assert shares == [pytest.approx(400, abs=2), pytest.approx(700, abs=2), 1000, 1000]

    store.set_strategy("round-robin")
    for _ in range(store.config.probe.fall):
        store.record_probe(rt, False, None)
    for _ in range(store.config.probe.rise):
        store.record_probe(rt, True, 0.05)
    clock.advance(15.0)
    store.tick()
    # round-robin scales its own shares: every pick of the region is admitted
    assert rt.admit == 1.0 and rt.effective_weight == pytest.approx(0.55)
    counts = Counter(firsts(store, "GB", 355))
    assert counts["eu-west-1"] == pytest.approx(55, abs=2)
    assert counts["us-east-1"] == pytest.approx(100, abs=2)


def test_a_ramping_region_alone_takes_every_request():
    store, clock = make_store("geographic", slow_start=30.0)
    rt = store.regions["eu-west-1"]
    for _ in range(store.config.probe.fall):
        store.record_probe(rt, False, None)
    for other in ("us-east-1", "us-west-2", "ap-southeast-1"):
        store.disable(other)
    for _ in range(store.config.probe.rise):
        store.record_probe(rt, True, 0.05)
    now = clock.now()
    for _ in range(50):
        order = store.ranker.rank(RequestFacts("GB", seq=store.next_seq()))
        usable = [r for r in order if not skip_reason(store.regions[r], 0.5, now, 100)]
        assert usable == ["eu-west-1"]


def test_a_region_back_from_degraded_or_an_open_breaker_ramps_too():
    store, clock = make_store("geographic", slow_start=20.0)
    answers(store, "eu-west-1", 10, status=503)
    store.tick()
    clock.advance(DEGRADE.window)
    store.tick()
    rt = store.regions["eu-west-1"]
    assert not rt.degrade.degraded and rt.ramp == pytest.approx(0.1)
    us = store.regions["us-east-1"]
    for _ in range(store.config.breaker.consecutive_failures):
        store.breaker_changed(us, us.breaker.on_failure(clock.now()))
    clock.advance(store.config.breaker.open_for)
    for _ in range(store.config.breaker.half_open_requests):
        assert us.breaker.allow(clock.now())
        store.breaker_changed(us, us.breaker.on_success(clock.now()))
    assert us.breaker.state(clock.now()) == "closed" and us.ramp == pytest.approx(0.1)


def test_flapping_region_is_held_down_and_logged(state_log):
    probe = replace(default_config().probe, fall=1, rise=1, flap_limit=4, flap_hold=60.0)
    store, clock = make_store("geographic", probe=probe)
    rt = store.regions["eu-west-1"]
    store.record_probe(rt, True, 0.05)
    for ok in (False, True, False, True, False):
        clock.advance(5.0)
        store.record_probe(rt, ok, 0.05)
    clock.advance(5.0)
    store.record_probe(rt, True, 0.05)
    assert "region eu-west-1 flapped: 5 health changes within 300s (limit 4); held down for 60s" in state_log.text
    assert rt.health_excluded
    assert store.state_json()["regions"][2]["held_down_for"] == 60.0
    clock.advance(60.0)
    store.record_probe(rt, True, 0.05)
    assert not rt.health_excluded


def test_route_explanations_name_the_default_region_and_the_latencies():
    store, clock = make_store("least-latency")
    for rid, s in (("us-east-1", 0.04), ("us-west-2", 0.044), ("eu-west-1", 0.09), ("ap-southeast-1", 0.2)):
        store.record_latency(store.regions[rid], s)
    store.tick()
    out = explain_route(store, country=None, client_ip=None, max_in_flight=100)
    assert out["default_region"] == "us-east-1" and "home_region" not in out
    assert out["why_default"] == "no country for this client"
    assert out["leader"] == "us-east-1"
    assert out["latencies_ms"] == {"us-east-1": 40.0, "us-west-2": 44.0, "eu-west-1": 90.0, "ap-southeast-1": 200.0}
    assert "us-east-1 is the fastest (40.0 ms)" in out["why"]
    assert explain_route(store, country="GB", client_ip=None, max_in_flight=100)["home_region"] == "eu-west-1"


def test_live_timings_move_the_least_latency_leader_within_two_samples():
    store, clock = make_store("least-latency")
    for rid, s in (("us-east-1", 0.01), ("us-west-2", 0.05), ("eu-west-1", 0.09), ("ap-southeast-1", 0.2)):
        store.record_latency(store.regions[rid], s)
    store.tick()
    assert store.ranker.rank(RequestFacts())[0] == "us-east-1"
    us = store.regions["us-east-1"]
    clock.advance(0.1)
    store.record_outcome(us, 0.2, 200)
    store.tick()
    assert store.ranker.rank(RequestFacts())[0] == "us-east-1"  # one slow answer: could be a stray
    clock.advance(0.1)
    store.record_outcome(us, 0.2, 200)  # confirmed: published at once, without a tick
    assert store.ranker.rank(RequestFacts())[0] == "us-west-2"


def test_a_lone_slow_answer_asks_the_prober_and_only_a_slow_probe_confirms():
    store, clock = make_store("least-latency")
    asked = []
    store.latency_check = asked.append
    for rid, s in (("us-east-1", 0.01), ("us-west-2", 0.05), ("eu-west-1", 0.09), ("ap-southeast-1", 0.2)):
        store.record_latency(store.regions[rid], s)
    us = store.regions["us-east-1"]
    clock.advance(0.1)
    store.record_outcome(us, 0.2, 200)
    assert asked == [us]
    store.record_latency(us, 0.01, confirming=True)  # the health URL is fast: ignored ...
    clock.advance(0.1)
    store.record_outcome(us, 0.2, 200)  # ... so two slow answers in a row still confirm
    assert store.ranker.rank(RequestFacts())[0] == "us-west-2"
    store2, clock2 = make_store("least-latency")
    store2.latency_check = lambda rt: None
    for rid, s in (("us-east-1", 0.01), ("us-west-2", 0.05)):
        store2.record_latency(store2.regions[rid], s)
    clock2.advance(0.1)
    store2.record_outcome(store2.regions["us-east-1"], 0.2, 200)
    store2.record_latency(store2.regions["us-east-1"], 0.2, confirming=True)  # slow too: confirmed
    assert store2.ranker.rank(RequestFacts())[0] == "us-west-2"
