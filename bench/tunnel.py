"""WebSocket tunnels and server-sent events through the router, measured.

    python -m bench.tunnel [--mib 50] [--tunnels 200] [--events 5 --interval 500ms]

Starts the simulator and `edge-router serve` (bench/harness.py), then:
one tunnel echoing --mib MiB of 1 MiB binary frames (time, router RSS before /
peak / after); --tunnels idle tunnels open at once (router RSS and fds with them
open and after they close); an SSE stream (arrival time of each event at the
client). Prints a table; loopback only, bounded in count and time.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp

from . import harness
from .failover import LATENCIES, SEED, router_config

WS = "/api/v1/ws"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def echo(port: int, pid: int, mib: int) -> list[tuple[str, str]]:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"http://127.0.0.1:{port}{WS}", max_msg_size=0) as ws:
            await ws.send_bytes(chunk)
            await ws.receive()  # warm
            before = peak = rss_mib(pid)
            t0 = time.monotonic()
            for _ in range(mib):
                await ws.send_bytes(chunk)
                msg = await ws.receive()
                if msg.data != chunk:
                    raise RuntimeError("echo differs")
                peak = max(peak, rss_mib(pid))
            took = time.monotonic() - t0
    return [(f"echo {mib} MiB each way through one tunnel", f"{took:.2f} s ({2 * mib / took:.0f} MiB/s both ways)"),
            ("router RSS before / peak / after", f"{before:.1f} / {peak:.1f} / {rss_mib(pid):.1f} MiB")]


async def many(port: int, pid: int, n: int) -> list[tuple[str, str]]:
    base_rss, base_fds = rss_mib(pid), fds(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        socks = await asyncio.gather(*(s.ws_connect(f"http://127.0.0.1:{port}{WS}") for _ in range(n)))
        open_rss, open_fds = rss_mib(pid), fds(pid)
        await asyncio.gather(*(w.close() for w in socks))
    await asyncio.sleep(1.0)
    return [(f"{n} tunnels open: router RSS / fds", f"{open_rss:.1f} MiB / {open_fds} (idle: {base_rss:.1f} / {base_fds})"),
            (f"after they closed: router RSS / fds", f"{rss_mib(pid):.1f} MiB / {fds(pid)}")]


async def events(port: int, count: int, interval: str) -> list[tuple[str, str]]:
    arrivals, buf = [], b""
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.get(f"http://127.0.0.1:{port}/api/v1/events?count={count}&interval={interval}") as resp:
            async for data in resp.content.iter_any():
                buf += data
                while b"\n\n" in buf:
                    _, buf = buf.split(b"\n\n", 1)
                    arrivals.append(time.monotonic() - t0)
    return [(f"SSE: {count} events {interval} apart arrived at",
             ", ".join(f"{a * 1000:.0f}" for a in arrivals) + " ms")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=50, help="MiB echoed through one tunnel (default 50)")
    ap.add_argument("--tunnels", type=int, default=200, help="idle tunnels opened at once (default 200)")
    ap.add_argument("--events", type=int, default=5, help="server-sent events to time (default 5)")
    ap.add_argument("--interval", default="500ms", help="time between events (default 500ms)")
    args = ap.parse_args(argv)
    sim = harness.start_sim(LATENCIES)
    router = None
    try:
        router = harness.start_router(router_config(sim.ports, SEED))
        pid = router.proc.pid

        async def run():
            rows = await echo(router.port, pid, args.mib)
            rows += await many(router.port, pid, args.tunnels)
            rows += await events(router.port, args.events, args.interval)
            return rows

        rows = asyncio.run(asyncio.wait_for(run(), 300))
    finally:
        if router is not None:
            router.stop()
        sim.stop()
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  result")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
