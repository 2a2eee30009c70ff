"""Issue 15's metrics on a real router: probe results, breaker transitions, the router's own
answers in request_duration, and `promtool check metrics` clean (single process and workers)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import make_config, request, start_router, start_sim, wait_until

GB = {"X-Forwarded-For": "81.2.69.142"}  # -> eu-west-1


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.0, "eu-west-1": 0.0})
    yield s
    s.stop()


def scrape(rp) -> tuple[str, dict]:
    text = request(rp.admin, "GET", "/metrics").body.decode()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for fam in text_string_to_metric_families(text) for s in fam.samples}
    return text, values


def promtool_clean(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/validate-deploy installs it)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_new_metrics_live_and_promtool_clean(sim, workers):
    rp = start_router(make_config(sim.ports, breaker={"consecutive_failures": 2},
                                  residency=[{"countries": ["GB"], "regions": ["eu-west-1"]}]),
                      extra_args=["--workers", str(workers)] if workers > 1 else [])
    try:
        # Every counter series whose labels the config fixes exists at 0 before its first event.
        _, start = scrape(rp)
        for outcome in ("client_closed", "region_closed", "idle_timeout", "region_disabled", "shutdown"):
            assert start[("edge_router_tunnels_total", (("outcome", outcome), ("region", "eu-west-1")))] == 0
        ok = ("edge_router_probes_total", (("region", "eu-west-1"), ("result", "ok")))
        wait_until(lambda: scrape(rp)[1].get(ok, 0) >= 1, 15, what="a counted probe")
        # GB may only go to eu-west-1; disabled, the router answers 503 itself (region "none").
        assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
        assert rp.get("/api/v1/echo", headers=GB).status == 503
        assert rp.admin_req("POST", "/admin/regions/eu-west-1/enable").status == 200
        # A region that drops connections trips its breaker.
        sim.fault("eu-west-1", drop_after_body=True)
        for _ in range(4):
            rp.req("POST", "/api/v1/payments", b"{}", {**GB, "Content-Type": "application/json"})
        text, values = scrape(rp)
        assert values[("edge_router_request_duration_seconds_count", (("region", "none"),))] >= 1
        assert values[("edge_router_breaker_transitions_total", (("region", "eu-west-1"), ("to", "open")))] >= 1
        assert values[("edge_router_breaker_transitions_total", (("region", "us-east-1"), ("to", "open")))] == 0
        assert values[("edge_router_probes_total", (("region", "us-east-1"), ("result", "timeout")))] == 0
        promtool_clean(text)
    finally:
        sim.reset("eu-west-1")
        rp.stop()
