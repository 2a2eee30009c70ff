"""Steering benchmark: how fast the router follows the regions, measured from
outside against the region simulator (loopback, real processes).

    recovery     probe interval 200 ms (fast/down intervals at their defaults):
                 region back up -> /admin/state says healthy
    takeover     least-latency, light traffic (--rps GETs per second): the leader
                 slows 10 -> 200 ms -> first answer from another region
    near-equal   least-latency, 40 ms and 44 ms regions, --observe seconds of light
                 traffic: how many times the answering region changed
    degrade      geographic, GB clients, window 5 s / 10 requests: eu-west-1 starts
                 answering 10 % errors -> degraded; healed -> GB traffic back on it

    python -m bench.steering [--trials N] [--rps R] [--observe S]

Every wait is bounded; the table reports what it saw.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

from bench import harness
from bench.loadgen import PacedLoad

LATENCIES = {"us-east-1": 0.010, "us-west-2": 0.040, "eu-west-1": 0.044, "ap-southeast-1": 0.060}
FAILOVER = {"us-east-1": ["us-west-2"], "us-west-2": ["us-east-1"], "eu-west-1": ["us-east-1"],
            "ap-southeast-1": ["us-west-2"]}
GB = {"X-Forwarded-For": "81.2.69.142"}  # eu-west-1 in the MaxMind test database


def config(ports: dict[str, int], strategy: str, probe: dict | None = None, degrade: dict | None = None) -> str:
    return harness.router_config(
        ports, strategy=strategy, slow_start="0s", primary=None, geo_db=str(harness.GEO_TEST_DB),
        trusted_proxies=["127.0.0.1/32"], countries={"eu-west-1": ["GB"]}, failover=FAILOVER,
        tables={"probe": probe or {"interval": "1s", "timeout": "1s", "latency_interval": "1s"}, "degrade": degrade})


def start(config_text: str) -> harness.RouterProcess:
    return harness.start_router(config_text, wait_healthy=False)


def wait_for(cond: Callable[[], object], timeout: float, every: float = 0.01) -> float | None:
    """Seconds until cond() held, None if it never did within timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(every)
    return None


def region(router: harness.RouterProcess, rid: str) -> dict:
    return next(r for r in router.state()["regions"] if r["id"] == rid)


def recovery(sim: harness.SimProcess, trials: int) -> list[float | None]:
    out = []
    for _ in range(trials):  # a fresh router each time: repeated outages are flapping
        r = start(config(sim.ports, "geographic", probe={"interval": "200ms", "timeout": "150ms"}))
        try:
            wait_for(lambda: region(r, "ap-southeast-1")["healthy"] is True, 10)
            sim.fault("ap-southeast-1", down=True)
            wait_for(lambda: region(r, "ap-southeast-1")["healthy"] is False, 10)
            time.sleep(0.5)
            sim.reset("ap-southeast-1")
            out.append(wait_for(lambda: region(r, "ap-southeast-1")["healthy"] is True, 10))
        finally:
            sim.reset("ap-southeast-1")
            r.stop()
    return out


def leader(router: harness.RouterProcess) -> str | None:
    return harness.request(router.admin, "GET", "/admin/route?country=US", timeout=2).json().get("leader")


def takeover(sim: harness.SimProcess, trials: int, rps: float) -> tuple[list[float | None], list[float | None]]:
    """(slowdown -> the router's leader changed, slowdown -> first answer elsewhere)."""
    switched, out = [], []
    for _ in range(trials):
        r = start(config(sim.ports, "least-latency"))
        try:
            wait_for(lambda: all(x["latency_ms"] is not None for x in r.state()["regions"]), 10)
            with PacedLoad(r.port, 1.0 / rps) as load:
                wait_for(lambda: leader(r) == "us-east-1" and load.results and load.results[-1][3] == "us-east-1", 10)
                time.sleep(1.0)
                t0 = time.monotonic()
                sim.fault("us-east-1", extra_latency="190ms")
                switched.append(wait_for(lambda: leader(r) != "us-east-1", 15, 0.005))
                elsewhere = lambda rid: rid not in (None, "us-east-1")  # noqa: E731
                wait_for(lambda: load.first(elsewhere, t0), 15)
                moved = load.first(elsewhere, t0)
                out.append(None if moved is None else moved - t0)
        finally:
            sim.reset("us-east-1")
            r.stop()
    return switched, out


def near_equal(sim: harness.SimProcess, rps: float, observe: float) -> tuple[int, int]:
    r = start(config(sim.ports, "least-latency"))
    try:
        for rid in ("us-east-1", "ap-southeast-1"):
            r.admin_req("POST", f"/admin/regions/{rid}/disable")
        wait_for(lambda: all(x["latency_ms"] is not None for x in r.state()["regions"]), 10)
        time.sleep(2.0)
        with PacedLoad(r.port, 1.0 / rps) as load:
            time.sleep(observe)
        regions = load.regions()
        changes = sum(1 for a, b in zip(regions, regions[1:]) if a != b)
        return len(regions), changes
    finally:
        r.stop()


def degrade(sim: harness.SimProcess, rps: float) -> tuple[float | None, float | None]:
    r = start(config(sim.ports, "geographic", degrade={"window": "5s", "min_requests": 10}))
    try:
        with PacedLoad(r.port, 0.25 / rps, headers=GB) as load:
            time.sleep(1.0)
            sim.fault("eu-west-1", error_rate=0.1)
            degraded = wait_for(lambda: region(r, "eu-west-1")["degraded"], 60, 0.05)
            sim.reset("eu-west-1")
            t0 = time.monotonic()
            wait_for(lambda: load.first("eu-west-1".__eq__, t0), 30, 0.05)
            back = load.first("eu-west-1".__eq__, t0)
        return degraded, (None if back is None else back - t0)
    finally:
        sim.reset("eu-west-1")
        r.stop()


def _fmt(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    missed = len(values) - len(got)
    if not got:
        return "never"
    text = f"median {statistics.median(got) * 1000:.0f} ms, max {max(got) * 1000:.0f} ms ({len(got)} runs)"
    return text + (f", {missed} never" if missed else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--rps", type=float, default=5.0)
    ap.add_argument("--observe", type=float, default=30.0)
    args = ap.parse_args(argv)
    sim = harness.start_sim(LATENCIES)
    try:
        rec = recovery(sim, args.trials)
        switched, tko = takeover(sim, args.trials, args.rps)
        n, changes = near_equal(sim, args.rps, args.observe)
        deg, back = degrade(sim, args.rps)
    finally:
        sim.stop()
    print("| what | measured | issue's bound |")
    print("| --- | --- | --- |")
    print(f"| recovery seen, probe interval 200 ms | {_fmt(rec)} | 1 s |")
    print(f"| least-latency leader 10 -> 200 ms, {args.rps:g} req/s: router switches | {_fmt(switched)} | - |")
    print(f"| ... first answer from another region | {_fmt(tko)} | 2 s |")
    print(f"| 40 / 44 ms regions, {args.observe:g} s at {args.rps:g} req/s | {changes} changes in {n} answers | none |")
    print(f"| 10 % errors -> degraded (window 5 s, 10 requests) | {_fmt([deg])} | - |")
    print(f"| healed -> GB traffic back on it | {_fmt([back])} | - |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
