"""Replicas agree: N router processes sharing one Redis ([state] backend = "redis").

1. Start a real redis-server, the region simulator and N routers.
2. Propagation: M mutations (strategy switches, disables/enables, drains, weights),
   each sent to another replica; the time until every replica's /admin/state
   shows the new version. Reported: p50 and max over the mutations of the time
   until ALL replicas applied it (target: max < 1 s), and the per-replica p50.
3. Outage: closed-loop load on every replica; Redis stopped for --outage
   seconds, then started again (empty: no persistence). Reported: failed
   requests (target 0), how long until every replica saw Redis back, and the
   time for a mutation after it to reach all replicas.

    python3 -m bench.replicas --replicas 20 --mutations 20 --outage 10

Times are measured by polling each replica's /admin/state every --poll seconds
from this process, so they are upper bounds (plus the poll interval).
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench import harness
from bench.failover import LATENCIES, Scenario, router_config
from bench.loadgen import ClosedLoopLoad
from bench.redisproc import RedisServer

TOKEN = "bench-replicas-token"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")
# A calm probe cadence: the benchmark is about decisions, not probes.
CALM = Scenario("calm", {"interval": "5s", "timeout": "2s", "fall": 3, "rise": 2, "latency_interval": "10s"},
                {"consecutive_failures": 5, "open_for": "5s"})


def admin(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        conn.request(method, path, body=data, headers={"Authorization": f"Bearer {TOKEN}",
                                                       "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def decisions(router: harness.RouterProcess) -> dict:
    return router.state()["decisions"]


def mutations(n: int) -> list[tuple[str, str, dict | None]]:
    """A varied sequence that never trips the guard rail (us-east-1 stays enabled)."""
    cycle = [
        ("PUT", "/admin/strategy", {"strategy": "round-robin"}),
        ("POST", "/admin/regions/eu-west-1/disable", None),
        ("POST", "/admin/regions/ap-southeast-1/drain", {"over": "60s"}),
        ("PUT", "/admin/regions/us-west-2/weight", {"weight": 2}),
        ("PUT", "/admin/strategy", {"strategy": "geographic"}),
        ("POST", "/admin/regions/eu-west-1/enable", None),
        ("POST", "/admin/regions/ap-southeast-1/enable", None),
        ("PUT", "/admin/regions/us-west-2/weight", {"weight": 1}),
    ]
    return [cycle[i % len(cycle)] for i in range(n)]


def wait_all(routers: list[harness.RouterProcess], cond, t0: float, poll: float, timeout: float) -> list[float | None]:
    """Per replica: seconds from t0 until cond(decisions) held (None: never, within timeout)."""
    out: list[float | None] = [None] * len(routers)

    def watch(i: int) -> None:
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            try:
                if cond(decisions(routers[i])):
                    out[i] = time.monotonic() - t0
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(poll)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(len(routers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return out


def ms(x: float | None) -> str:
    return "never" if x is None else f"{x * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=20)
    ap.add_argument("--mutations", type=int, default=20)
    ap.add_argument("--outage", type=float, default=10.0, help="seconds Redis is stopped under load")
    ap.add_argument("--parallel-start", type=int, default=3, help="routers started at once")
    ap.add_argument("--poll", type=float, default=0.01, help="seconds between /admin/state polls per replica")
    args = ap.parse_args(argv)

    redis = RedisServer().start()
    sim = harness.start_sim(LATENCIES)
    routers: list[harness.RouterProcess] = []
    try:
        cfg = router_config(sim.ports, CALM, state={"backend": "redis", "url": redis.url})
        t_start = time.monotonic()

        def launch(_: int) -> None:
            routers.append(harness.start_router(cfg, token=TOKEN, wait_healthy=False))  # list.append: thread-safe

        with ThreadPoolExecutor(args.parallel_start) as pool:
            list(pool.map(launch, range(args.replicas)))
        ready = wait_all(routers, lambda d: d["loaded"] and d["store_up"], time.monotonic(), 0.1, 60)
        print(f"{args.replicas} replicas up in {time.monotonic() - t_start:.1f} s "
              f"({sum(r is not None for r in ready)} ready)")

        # -- propagation ---------------------------------------------------------------
        all_times, worst = [], []
        applied, applied_worst = [], []  # by the replicas' own clocks: applied_at - commit time
        for i, (method, path, body) in enumerate(mutations(args.mutations)):
            target = routers[i % len(routers)]
            t0 = time.monotonic()
            status, answer = admin(target.admin, method, path, body)
            if status != 200:
                raise SystemExit(f"mutation {method} {path} on replica {i % len(routers)}: {status} {answer}")
            version = answer["version"]
            times = wait_all(routers, lambda d, v=version: d["version"] >= v, t0, args.poll, 10)
            all_times += [t for t in times if t is not None]
            worst.append(None if None in times else max(times))
            lags = []
            for r in routers:
                d = decisions(r)
                if d["version"] == version and d["applied_at"] is not None:
                    lags.append(max(0.0, d["applied_at"] - d["changed_at"]))
            applied += lags
            applied_worst.append(max(lags) if len(lags) == len(routers) else None)
        done = [w for w in worst if w is not None]
        print()
        print(f"| propagation over {args.mutations} mutations, {args.replicas} replicas | value |")
        print("| --- | --- |")
        print(f"| all replicas applied it: p50 | {ms(statistics.median(done)) if done else 'never'} |")
        print(f"| all replicas applied it: max | {ms(max(done)) if len(done) == len(worst) else 'never (some)'} |")
        print(f"| one replica applied it: p50 | {ms(statistics.median(all_times))} |")
        print(f"| one replica applied it: max | {ms(max(all_times))} |")
        ok = [w for w in applied_worst if w is not None]
        print(f"| replica clocks (applied_at - commit): all applied, p50 | {ms(statistics.median(ok)) if ok else '-'} |")
        print(f"| replica clocks (applied_at - commit): all applied, max | {ms(max(ok)) if ok else '-'} |")
        print(f"| replica clocks (applied_at - commit): one replica, p50 | {ms(statistics.median(applied)) if applied else '-'} |")

        # -- Redis outage under load ---------------------------------------------------
        loads = [ClosedLoopLoad(r.port, clients=1, path="/api/v1/echo").start() for r in routers]
        time.sleep(2.0)
        t_stop = time.monotonic()
        redis.stop()
        down = wait_all(routers, lambda d: not d["store_up"], t_stop, 0.05, args.outage)
        time.sleep(max(0.0, args.outage - (time.monotonic() - t_stop)))
        refused, _ = admin(routers[0].admin, "PUT", "/admin/strategy", {"strategy": "round-robin"})
        redis.start()
        t_back = time.monotonic()  # Redis answers again (empty: it kept nothing)
        back = wait_all(routers, lambda d: d["store_up"], t_back, 0.05, 30)
        t_mut = time.monotonic()
        status, answer = admin(routers[-1].admin, "PUT", "/admin/strategy", {"strategy": "least-latency"})
        after = wait_all(routers, lambda d, v=answer.get("version", 1 << 60): d["version"] >= v, t_mut,
                         args.poll, 10)
        time.sleep(1.0)
        for lg in loads:
            lg.stop()
        records = [rec for lg in loads for rec in lg.snapshot()]
        during = [rec for rec in records if t_stop <= rec[0] <= t_back]
        failed = [rec for rec in records if rec[1] != 200]
        print()
        print(f"| Redis stopped {args.outage:g} s under load ({args.replicas} replicas, 1 client each) | value |")
        print("| --- | --- |")
        print(f"| requests (during the outage) | {len(records)} ({len(during)}) |")
        print(f"| failed requests | {len(failed)} |")
        print(f"| every replica noticed Redis down after | {ms(None if None in down else max(down))} |")
        print(f"| mutation while down | HTTP {refused} |")
        print(f"| every replica saw Redis back after | {ms(None if None in back else max(back))} |")
        print(f"| first mutation after: all replicas applied it | HTTP {status}, "
              f"{ms(None if None in after else max(after))} |")
        return 0 if not failed and done and len(done) == len(worst) else 1
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda r: r.stop(), routers))
        sim.stop()
        redis.close()


if __name__ == "__main__":
    raise SystemExit(main())
