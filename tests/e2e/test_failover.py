"""Issue 3, checked from outside: real simulator and router processes on
127.0.0.1, short probe intervals, every wait bounded."""
from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REGIONS, make_config, request, start_router, start_sim, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(60)

GB = "81.2.69.142"  # -> eu-west-1
US = "216.160.83.56"  # -> us-east-1
DE = "2a02:d180::1"  # -> eu-west-1 (residency rule below)
LATENCIES = {"us-east-1": 0.005, "us-west-2": 0.010, "eu-west-1": 0.015, "ap-southeast-1": 0.020}


def client(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


class Load:
    """Closed-loop GET load: N threads, each on its own keep-alive connection,
    sending the next request as soon as the last answer is in."""

    def __init__(self, port: int, ip: str, clients: int = 8, path: str = "/api/v1/echo"):
        self.port, self.ip, self.path = port, ip, path
        self.results: list[tuple[float, int, str | None]] = []  # (monotonic, status, X-Edge-Region)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        conn = None
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", self.path, headers=client(self.ip))
                r = conn.getresponse()
                r.read()
                rec = (time.monotonic(), r.status, r.getheader("X-Edge-Region"))
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                rec = (time.monotonic(), -1, type(exc).__name__)
                conn.close()
                conn = None
            with self.lock:
                self.results.append(rec)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(15)

    def since(self, t0: float) -> list[tuple[float, int, str | None]]:
        with self.lock:
            return [r for r in self.results if r[0] >= t0]

    def regions_since(self, t0: float) -> Counter:
        return Counter(r[2] for r in self.since(t0))

    def last(self, n: int) -> list[tuple[float, int, str | None]]:
        with self.lock:
            return self.results[-n:]


@pytest.fixture(scope="module")
def sim():
    s = start_sim(LATENCIES)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean_sim(sim):
    for rid in REGIONS:
        sim.reset(rid)
    sim.reset_stats()
    yield
    for rid in REGIONS:
        sim.reset(rid)


@pytest.fixture
def router_factory():
    started = []

    def start(*args, **kw):
        rp = start_router(*args, **kw)
        started.append(rp)
        return rp

    yield start
    for rp in started:
        rp.stop()


def metric_value(rp, name: str, **labels) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    text = request(rp.admin, "GET", "/metrics").body.decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


# ---------------------------------------------------------------------------------------
def test_region_killed_under_load_no_get_fails_and_traffic_returns(sim, router_factory):
    rp = router_factory(make_config(sim.ports, limits={"retry_budget_min": 8}))
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
