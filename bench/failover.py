"""Failover benchmark: a region killed under load, with the seed's probe cadence
and with tuned settings.

Starts the region simulator and the router as subprocesses on 127.0.0.1, runs
closed-loop GET load from N clients of one region (us-east-1, the default region:
clients on loopback have no country), kills that region for --duration seconds,
brings it back, and measures:

    failed      requests that did not answer 200 (the whole run)
    moved       kill -> first answer from the failover region (us-west-2)
    verdict     kill -> the prober holds the region unhealthy ("-" if it never did)
    returned    recovery -> first answer from the region again
    all back    recovery -> from then on, every answer from the region again

The seed's cadence (probe every 30 s, timeout 5 s, fall 3, rise 2; breaker opens
after 5 failures for 30 s) shows what the passive breakers do on their own: an
active-only checker would need 65-95 s to notice. The tuned run probes every 2 s
(fast 500 ms while changing state, 1 s while down) with a 5 s breaker.

    python bench/failover.py [--seed-cadence | --tuned] [--duration S] [--clients N]

Loopback only; every wait is bounded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

from bench import harness
from bench.loadgen import ClosedLoopLoad

HOME, FAILOVER_TO = "us-east-1", "us-west-2"
LATENCIES = {"us-east-1": 0.020, "us-west-2": 0.060, "eu-west-1": 0.080, "ap-southeast-1": 0.180}
PATH = "/api/v1/echo"


@dataclass(frozen=True)
class Scenario:
    name: str
    probe: dict
    breaker: dict

    def cadence(self) -> str:
        p = self.probe
        return f"{p['interval']}/{p['timeout']} fall {p['fall']} rise {p['rise']}, open_for {self.breaker['open_for']}"


SEED = Scenario(
    "seed cadence",
    {"interval": "30s", "timeout": "5s", "fall": 3, "rise": 2, "latency_interval": "60s"},
    {"consecutive_failures": 5, "open_for": "30s"},
)
TUNED = Scenario(
    "tuned",
    {"interval": "2s", "timeout": "1s", "fall": 3, "rise": 2, "latency_interval": "2s",
     "fast_interval": "500ms", "down_interval": "1s"},
    {"consecutive_failures": 5, "open_for": "5s"},
)


# --------------------------------------------------------------------------- processes
def router_config(ports: dict[str, int], sc: Scenario, **tables: dict) -> str:
    """The scenario's probe and breaker, then these [tables]. No GeoIP database:
    every client is a client of the default region."""
    return harness.router_config(ports, default_region=HOME, primary=HOME,
                                 tables={"probe": sc.probe, "breaker": sc.breaker, **tables})


# --------------------------------------------------------------------------- load
@dataclass
class Result:
    scenario: Scenario
    requests: int
    failed: int
    failures: dict
    moved: float | None
    verdict: float | None
    returned: float | None
    all_back: float | None
    outage: float


def run(sc: Scenario, clients: int, outage: float, return_timeout: float, warmup: float = 2.0) -> Result:
    sim = harness.start_sim(LATENCIES)
    router = None
    load = None
    try:
        router = harness.start_router(router_config(sim.ports, sc))
        load = ClosedLoopLoad(router.port, clients, path=PATH)
        load.start()
        time.sleep(warmup)

        t_kill = time.monotonic()
        sim.fault(HOME, down=True)
        verdict = None
        while time.monotonic() < t_kill + outage:
            if verdict is None and router.healthy(HOME) is False:
                verdict = time.monotonic() - t_kill
            time.sleep(0.05)
        moved_at = load.first(t_kill, FAILOVER_TO)

        t_back = time.monotonic()
        sim.reset(HOME)
        returned_at = None
        while time.monotonic() < t_back + return_timeout:
            returned_at = load.first(t_back, HOME)
            if returned_at is not None:
                break
            time.sleep(0.05)
        all_back = None
        if returned_at is not None:
            time.sleep(1.0)  # then: did every later answer come from home?
            later = [rec for rec in load.snapshot() if rec[0] >= t_back]
            stray = [rec[0] for rec in later if rec[2] != HOME or rec[1] != 200]
            all_back = (max(stray) - t_back) if stray else (returned_at - t_back)
        load.stop()
        results = load.snapshot()
        bad = [rec for rec in results if rec[1] != 200]
        failures: dict = {}
        for _, status, what in bad:
            key = f"{status} {what}" if status > 0 else str(what)
            failures[key] = failures.get(key, 0) + 1
        return Result(
            sc, len(results), len(bad), failures,
            None if moved_at is None else moved_at - t_kill, verdict,
            None if returned_at is None else returned_at - t_back, all_back, outage,
        )
    finally:
        if load is not None:
            load.stop()
        if router is not None:
            router.stop()
        sim.stop()


def _fmt(seconds: float | None, bound: float | None = None) -> str:
    if seconds is None:
        return f"> {bound:g} s" if bound is not None else "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(results: list[Result], clients: int, return_timeout: float) -> str:
    head = ("scenario", "probe / breaker", "requests", "failed", "moved", "verdict", "returned", "all back")
    rows = [head]
    for r in results:
        rows.append((
            r.scenario.name, r.scenario.cadence(), str(r.requests), str(r.failed),
            _fmt(r.moved, r.outage), _fmt(r.verdict) if r.verdict is not None else f"not in {r.outage:g} s",
            _fmt(r.returned, return_timeout), _fmt(r.all_back, return_timeout),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    out.insert(1, "-+-".join("-" * w for w in widths))
    notes = [
        f"{clients} closed-loop clients of {HOME}; {HOME} killed (connections refused and aborted) "
        f"for {results[0].outage:g} s; failover region {FAILOVER_TO}.",
        "moved: kill -> first answer from the failover region; verdict: kill -> prober says unhealthy;",
        "returned / all back: recovery -> first / every answer from the region again.",
    ]
    for r in results:
        if r.failures:
            notes.append(f"{r.scenario.name} failures: {r.failures}")
    return "\n".join(out + [""] + notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--seed-cadence", action="store_true", help="only the run with the seed's probe cadence")
    which.add_argument("--tuned", action="store_true", help="only the run with tuned probe settings")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds the region stays down (default 10)")
    ap.add_argument("--clients", type=int, default=8, help="closed-loop clients (default 8)")
    ap.add_argument("--return-timeout", type=float, default=45.0,
                    help="longest wait for traffic to return after recovery (default 45 s)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.clients < 1 or args.return_timeout <= 0:
        ap.error("--duration, --clients and --return-timeout must be positive")
    scenarios = [SEED] if args.seed_cadence else [TUNED] if args.tuned else [SEED, TUNED]
    results = []
    for sc in scenarios:
        print(f"running: {sc.name} ({sc.cadence()}) ...", file=sys.stderr, flush=True)
        results.append(run(sc, args.clients, args.duration, args.return_timeout))
    print(table(results, args.clients, args.return_timeout))
    if args.json:
        print(json.dumps([{
            "scenario": r.scenario.name, "probe": r.scenario.probe, "breaker": r.scenario.breaker,
            "requests": r.requests, "failed": r.failed, "failures": r.failures, "moved_s": r.moved,
            "verdict_s": r.verdict, "returned_s": r.returned, "all_back_s": r.all_back, "outage_s": r.outage,
        } for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
