"""Issue 14: `edge-router drill` against a router in front of the simulator."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from harness import REPO, TOKEN, Traffic, make_config, start_router, start_sim, wait_until

pytestmark = pytest.mark.timeout(120)

US, GB = "216.160.83.56", "81.2.69.142"


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.002, "us-west-2": 0.004, "eu-west-1": 0.004, "ap-southeast-1": 0.006})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rp(sim):
    r = start_router(make_config(sim.ports))
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def clean(sim, rp):
    yield
    for rid in sim.ports:
        sim.reset(rid)
        rp.admin_req("POST", f"/admin/regions/{rid}/enable")


@pytest.fixture(scope="module")
def traffic(rp):
    """Clients in the US (home us-east-1) and GB (eu-west-1)."""
    with Traffic(rp.port, (US, US, GB)):
        yield


def drill(rp, *args: str, token: str | None = TOKEN, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_ROUTER_ADMIN_TOKEN"}
    if token:
        env["EDGE_ROUTER_ADMIN_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, "-m", "router", "drill", "--admin", f"http://127.0.0.1:{rp.admin}", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


SHORT = ("--over", "3s", "--hold", "3s", "--settle", "2s", "--recover-timeout", "10s")


def test_a_passing_drill(rp, traffic):
    p = drill(rp, "--region", "us-east-1", *SHORT, "--json")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (out, err)
    report = json.loads(out)
    assert report["verdict"] == "passed" and report["reasons"] == []
    assert all(c["ok"] for c in report["checks"]) and len(report["checks"]) == 4
    share = report["share"]
    assert share["before"]["us-east-1"] > 0.3
    assert share["hold"]["us-east-1"] == 0  # drained: nothing reached it while held
    assert share["hold"]["us-west-2"] > 0.3  # its first failover region took the US clients
    assert share["after"]["us-east-1"] > 0.3  # and it came back
    assert report["requests"]["during"]["errors"] == 0
    assert report["p99_ms"]["before"] is not None
    events = [e["event"] for e in report["timeline"]]
    assert events[0].startswith("preflight ok") and events[-1] == "verdict: passed"
    assert any("share reached 0" in e for e in events) and any("enabled again" in e for e in events)
    assert "draining" in err and "holding" in err  # the progress display, a line a second
    st = rp.region_state("us-east-1")
    assert st["draining"] is False and st["disabled"] is False


def test_a_failing_drill_restores_the_region(sim, router_factory):
    # Two regions: us-east-1 fails over to us-west-2 only, and us-west-2 answers 500.
    two = router_factory(make_config({r: sim.ports[r] for r in ("us-east-1", "us-west-2")}))
    sim.fault("us-west-2", error_rate=1.0)
    with Traffic(two.port, (US, US, GB)):
        p = drill(two, "--region", "us-east-1", *SHORT)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 1, (out, err)
    assert "verdict: FAILED" in out
    assert "[FAIL] error rate" in out and "[FAIL] no abort" in out and "aborted at" in out
    assert "[ok] share comes back" in out
    assert "share of requests per region:" in out and "timeline:" in out and "p99" in out
    st = two.region_state("us-east-1")
    assert st["draining"] is False and st["disabled"] is False  # restored at once


def test_a_drill_that_cannot_run(sim, rp, traffic):
    p = drill(rp, "--region", "mars-1", *SHORT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "unknown region 'mars-1'" in err
    p = drill(rp, "--region", "us-east-1", *SHORT, token=None)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "no admin token" in err
    p = drill(rp, "--region", "us-east-1", *SHORT, token="wrong")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "HTTP 401" in err, err
    sim.fault("us-east-1", health_fail=True)
    wait_until(lambda: rp.region_state("us-east-1")["healthy"] is False, 10, what="us-east-1 unhealthy")
    p = drill(rp, "--region", "us-east-1", *SHORT, "--json")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and json.loads(out)["verdict"] == "could not run"
    assert "not healthy" in err


def test_ctrl_c_enables_the_region_again(rp, traffic):
    p = drill(rp, "--region", "us-east-1", "--over", "20s", "--hold", "20s", "--settle", "1s")
    lines = []

    def draining():
        line = p.stderr.readline()
        lines.append(line)
        return "draining" in line

    wait_until(draining, 20, 0, what="the drill to start draining")
    assert rp.region_state("us-east-1")["draining"] is True
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 2, (out, err)
    assert "interrupted; us-east-1 enabled again" in err
    st = rp.region_state("us-east-1")
    assert st["draining"] is False and st["disabled"] is False
