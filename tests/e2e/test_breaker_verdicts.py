"""Breakers against a real region (bench/rogue.py) behind `serve`: an
application's 500 never ejects a region, gateway 503s do; when every
candidate's breaker is open the request goes anyway (panic), counted."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import make_config, request, start_router, wait_until
from bench.rogue import RogueRegion


@pytest.fixture
def rogue():
    r = RogueRegion()
    yield r
    r.stop()


def metric(rp, name: str) -> float:
    text = request(rp.admin, "GET", "/metrics").body.decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


def test_500_does_not_eject_503_does_and_panic_still_serves(rogue, router_factory):
    rp = router_factory(make_config(
        {"us-east-1": rogue.port},
        breaker={"consecutive_failures": 3, "open_for": "60s", "max_ejected_percent": 100},
    ))
    for i in range(8):
        r = request(rp.port, "GET", "/status/500", headers={"X-Request-Id": f"e{i}"})
        assert r.status == 500 and r.body == f"for:e{i}".encode()  # the region's own answer
    assert rp.region_state("us-east-1")["breaker"] == "closed"
    for i in range(3):
        assert request(rp.port, "GET", "/status/503").status == 503
    assert rp.region_state("us-east-1")["breaker"] == "open"
    # every candidate (the only region) is breaker-open: it is used anyway
    for i in range(4):
        r = request(rp.port, "GET", "/x", headers={"X-Request-Id": f"p{i}"})
        assert r.status == 200 and r.body == f"for:p{i}".encode() and r.region == "us-east-1"
    assert metric(rp, "edge_router_panic_total") == 4
    assert rp.log().count("breaker panic") == 1


def test_ejection_cap_keeps_one_of_two_regions_in(router_factory):
    a, b = RogueRegion(), RogueRegion()
    try:
        rp = router_factory(make_config(
            {"us-east-1": a.port, "us-west-2": b.port},
            breaker={"consecutive_failures": 2, "open_for": "60s"},  # default cap: 50 %
        ))
        # POST: never retried. us-east-1 fails twice and opens; then the requests
        # fail over to us-west-2, which fails as much but stays in (1 of 2 = 50 %).
        for _ in range(6):
            assert request(rp.port, "POST", "/status/503", body=b"{}").status == 503
        assert b.api_connections() >= 1  # us-west-2 was reached
        states = sorted(r["breaker"] for r in rp.state()["regions"])
        assert states == ["closed", "open"], states
        wait_until(lambda: "ejection cap" in rp.log(), 5, what="the cap to be logged")
    finally:
        a.stop()
        b.stop()
