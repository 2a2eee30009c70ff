"""The router's own per-request CPU cost, without sockets.

Feeds a request's bytes to a client connection and a response's bytes to the
pooled region connection it was forwarded on, through the real listener,
proxy, pool and upstream code, with in-memory transports. What it measures is
the Python work per request that the kernel's send/recv come on top of; with
--profile it prints where that time goes.

    python -m bench.hotpath [--requests N] [--profile] [--rate-limit-rules N]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import ipaddress
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path


REQUEST = (
    b"GET /api/v1/echo?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nX-Forwarded-For: 81.2.69.142\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 22:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 15\r\nConnection: keep-alive\r\n\r\n"
    b'{"status":"ok"}'
)


class MemoryTransport:
    """Enough of asyncio.Transport for the protocols; keeps what is written."""

    def __init__(self, peer=("127.0.0.1", 40000)) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0  # everything written is gone at once

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _rate_limiter(rules: int, clock, key: str = "client_ip", match: bool = False):
    """`rules` rules on `key`, none of which this single client ever reaches."""
    from router.config import RateLimitConfig, RateLimitRule
    from router.ratelimit import RateLimiter

    cfg = RateLimitConfig(rules=tuple(
        RateLimitRule(name=f"r{i}", key=key, rate=1e9, burst=10**9, rate_text="1000000000/s",
                      path_prefix="/api/" if match else None, methods=frozenset({"GET"}) if match else None)
        for i in range(rules)))
    return RateLimiter(cfg, clock.now) if rules else None


async def _setup(geo_db: str | None, rules: int = 0):
    from router.clock import Clock
    from router.config import default_config
    from router.store import MemoryDecisionStore
    from router.listener import ClientConnection
    from router.metrics import Metrics
    from router.pool import Endpoint, UpstreamPool
    from router.proxy import Proxy
    from router.resolver import Resolver
    from router.state import RegionStore
    from router.upstream import UpstreamConnection

    base = default_config()
    regions = tuple(replace(r, api="http://127.0.0.1:9", health="http://127.0.0.1:9/h") for r in base.regions)
    config = replace(base, regions=regions, geo=replace(
        base.geo, database=geo_db, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)))
    loop = asyncio.get_running_loop()
    clock = Clock()
    metrics = Metrics(tuple(r.id for r in regions))
    store = RegionStore(config, MemoryDecisionStore(config.strategy), metrics, clock)
    for rt in store.regions.values():
        rt.pool = UpstreamPool(rt.id, Endpoint.parse(rt.config.api), resolver=Resolver(loop), ssl_context=None,
                               size=4, wait=1.0, connect_timeout=1.0, read_timeout=30.0, idle_timeout=60.0)
    geo = None
    if geo_db:
        from geodata.reader import GeoReader

        geo = GeoReader(geo_db)
    proxy = Proxy(config=config, store=store, geo=geo, metrics=metrics, clock=clock,
                  rate_limiter=_rate_limiter(rules, clock))
    # one warm pooled connection to the region the client's country maps to
    home = store.regions["eu-west-1" if geo else "us-east-1"]
    up = UpstreamConnection(loop, home.id, 30.0)
    up_t = MemoryTransport(("127.0.0.1", 9))
    up.connection_made(up_t)
    up.pool = home.pool
    home.pool._open += 1
    home.pool.release(up)
    client = ClientConnection(proxy)
    client_t = MemoryTransport()
    client.connection_made(client_t)
    return client, client_t, up, up_t, home


def run(requests: int, profile: bool, geo_db: str | None, rules: int = 0) -> float:
    async def main() -> float:
        client, client_t, up, up_t, home = await _setup(geo_db, rules)
        feed_client, feed_up = client.data_received, up.data_received

        def one() -> None:
            feed_client(REQUEST)
            feed_up(RESPONSE)

        for _ in range(1000):  # warm-up, and a check that the bytes really went through
            one()
        assert up_t.written and client_t.written[-1].endswith(b'{"status":"ok"}'), client_t.written[-1:]
        assert b"X-Edge-Region: " + home.id.encode() in client_t.written[-1]
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        for _ in range(requests):
            one()
            if len(client_t.written) > 10000:
                client_t.written.clear()
                up_t.written.clear()
        elapsed = time.perf_counter() - t0
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return elapsed / max(1, requests)

    return asyncio.run(main())


def callgrind_total(requests: int, no_geo: bool) -> int:
    """Instructions of one whole run of this script under callgrind."""
    valgrind = shutil.which("valgrind")
    if not valgrind:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="hotpath-cg-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "bench.hotpath",
               "--requests", str(requests), *(["--no-geo"] if no_geo else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        with open(out) as f:
            totals = re.search(r"^(?:summary|totals):\s+(\d+)", f.read(), re.M)
        if not totals:
            raise SystemExit(f"no instruction total in {out}")
        return int(totals.group(1))


def instructions_per_request(requests: int, no_geo: bool) -> float:
    with ThreadPoolExecutor(2) as pool:  # the two runs are independent
        full, empty = pool.map(lambda n: callgrind_total(n, no_geo), (requests, 0))
    return (full - empty) / requests


def _rate_limit_cost(rules: int, key: str = "client_ip", match: bool = False, calls: int = 200_000) -> float:
    """limiter.check() alone, as the exchange calls it, in CPU time (best of 5 interleaved
    rounds, less the empty loop): on a shared machine one rule's cost is smaller than the
    whole path's noise."""
    from router.clock import Clock

    req_headers = [b"User-Agent: wrk\r\n", b"Accept: */*\r\n", b"X-Api-Key: k-123\r\n"]
    best = {0: float("inf"), rules: float("inf")}
    for _ in range(5):
        for n in best:
            rl = _rate_limiter(n, Clock(), key, match)
            check = rl.check if rl is not None else None
            t0 = time.process_time()
            if check is None:
                for _ in range(calls):
                    pass
            else:
                for _ in range(calls):
                    check("GET", b"/api/v1/echo?x=1", req_headers, "81.2.69.142", "GB")
            best[n] = min(best[n], (time.process_time() - t0) / calls)
    return best[rules] - best[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=None,
                   help="requests measured (default 50000; 2000 with --instructions)")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the loop")
    p.add_argument("--no-geo", action="store_true", help="without a GeoIP database")
    p.add_argument("--instructions", action="store_true",
                   help="count instructions per request with valgrind --tool=callgrind (two runs)")
    p.add_argument("--rate-limit-rules", type=int, default=0, metavar="N",
                   help="also run with N client_ip rate-limit rules and print the cost per rule")
    args = p.parse_args(argv)
    from router import BUILD

    if args.instructions:
        n = args.requests or 2000
        per = instructions_per_request(n, args.no_geo)
        print("| what | instructions per request | build |")
        print("| --- | ---: | --- |")
        print(f"| router Python work (no syscalls), {n} requests{', no GeoIP' if args.no_geo else ''} "
              f"| {per:,.0f} | {BUILD} |")
        return 0
    if args.requests is None:
        args.requests = 50000
    db = None if args.no_geo else str(Path(__file__).resolve().parents[1] / "tests/data/geo/GeoLite2-Country-Test.mmdb")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    per = run(args.requests, args.profile, db)
    print("| what | per request | requests/s of CPU | build |")
    print("| --- | ---: | ---: | --- |")
    print(f"| router Python work (no syscalls), {args.requests} requests | {per * 1e6:.1f} µs "
          f"| {1 / per if per else 0:,.0f} | {BUILD} |")
    n = args.rate_limit_rules
    if n:
        for rules, key, match in ((n, "client_ip", False), (1, "client_ip", False), (1, "country", False),
                                  (1, "header:X-Api-Key", False), (1, "client_ip", True)):
            cost = _rate_limit_cost(rules, key, match)
            what = f"{rules} {key} rule{'s' if rules > 1 else ''}" + (" with a match" if match else "")
            print(f"| rate limiting alone: limiter.check(), {what} (CPU time, best of 5)"
                  f" | {cost * 1e6:.2f} µs ({cost / rules * 1e6:.2f} µs per rule) | {1 / cost:,.0f} | {BUILD} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
