"""Soak: mixed traffic for a while, then check that nothing was left behind.

wrk (required) sends GETs, JSON POSTs, 20 kB answers, 204s and 503s through the
router (bench/failover.py's setup: tuned probes, no GeoIP database, so every
client belongs to us-east-1) in front of the region simulator. After
the run: requests and errors, the router's RSS before and after, requests
still in flight, and how many upstream connections it had to open (pooling
working, or reconnects).

    python -m bench.soak [--duration 25] [--connections 64]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import harness
from bench.failover import LATENCIES, TUNED, router_config

LUA = """
local paths = {"/api/v1/echo", "/api/v1/echo?x=1", "/api/v1/status/204",
               "/api/v1/large?bytes=20000", "/api/v1/status/503"}
local ips = {"81.2.69.142", "216.160.83.56", "202.196.224.1", "2001:218::1", "10.0.0.1"}
local i = 0
request = function()
  i = i + 1
  local h = {["X-Forwarded-For"] = ips[(i % #ips) + 1]}
  if i % 7 == 0 then
    h["Content-Type"] = "application/json"
    return wrk.format("POST", "/api/v1/payments", h, '{"amount": 5}')
  end
  return wrk.format("GET", paths[(i % #paths) + 1], h)
end
"""


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=25, help="seconds of load (default 25)")
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args(argv)
    wrk = shutil.which("wrk")
    if not wrk:
        print("bench.soak needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    sim = harness.start_sim(LATENCIES)
    router = None
    try:
        router = harness.start_router(router_config(sim.ports, TUNED), wait_healthy=False)
        with tempfile.TemporaryDirectory() as tmp:
            lua = Path(tmp) / "mix.lua"
            lua.write_text(LUA)
            url = f"http://127.0.0.1:{router.port}/"
            subprocess.run([wrk, "-t1", "-c16", "-d3s", "-s", str(lua), url], capture_output=True, timeout=30)
            before = _rss_kib(router.proc.pid)
            out = subprocess.run(
                [wrk, "-t2", f"-c{args.connections}", f"-d{args.duration}s", "-s", str(lua), url],
                capture_output=True, text=True, timeout=args.duration + 30,
            ).stdout
        after = _rss_kib(router.proc.pid)
        state = router.state()
        lines = [ln.strip() for ln in out.splitlines()
                 if "requests in" in ln or "Non-2xx" in ln or "Socket errors" in ln or "Requests/sec" in ln]
        print("| what | value |")
        print("| --- | --- |")
        for ln in lines:
            print(f"| wrk | {ln} |")
        print(f"| router RSS before / after | {before / 1024:.1f} / {after / 1024:.1f} MiB |")
        print(f"| requests in flight after | {sum(r['in_flight'] for r in state['regions'])} |")
        opened = {r['id']: r['connections']['opened_total'] for r in state['regions']}
        print(f"| upstream connections opened | {opened} |")
        print(f"| breakers after | { {r['id']: r['breaker'] for r in state['regions']} } |")
        print("(503s are the simulator's /api/v1/status/503: retried on other regions, they open breakers)")
        return 0
    finally:
        if router is not None:
            router.stop()
        sim.stop()


if __name__ == "__main__":
    sys.exit(main())
