"""Hostile clients at scale, while a normal client measures what it gets.

Starts the region simulator and `python -m router serve` (small client limits in
its config), then runs each attack for a bounded time: N slow heads
(slowloris), N stalled request bodies, N clients that never read a large
answer, N endless headers, and M idle connections. Attackers that are cut
reconnect at once, so the pressure holds for the whole phase. Meanwhile a
normal client (its own process) sends GETs on a keep-alive connection and
records latency and errors. Prints one table row per attack: the normal
client's p50/p99 and errors during it, the router's RSS and open descriptors
before, at peak during, and after.

    python -m bench.abuse [--clients 2000] [--idle 10000] [--duration 20]

RLIMIT_NOFILE is raised to its hard limit here; the router inherits it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench import harness
from bench.failover import LATENCIES, TUNED, router_config

LIMITS = {
    "header_timeout": "3s", "body_timeout": "3s", "send_timeout": "3s", "idle_timeout": "120s",
    "max_header_bytes": 8192,
}
LARGE = 4 * 1024 * 1024  # what a never-reading client asks for: far above every buffer


# --------------------------------------------------------------------------- normal client
def normal_client(port: int, seconds: float) -> None:
    """Runs in its own process: GETs on one keep-alive connection; prints JSON."""
    import http.client

    lat: list[tuple[float, float]] = []  # (seconds into the phase, latency)
    errors: list[tuple[float, str]] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        at = time.monotonic() - start
        try:
            conn.request("GET", "/api/v1/echo")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors.append((at, str(r.status)))
            else:
                lat.append((at, time.perf_counter() - t0))
        except Exception as exc:
            errors.append((at, type(exc).__name__))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.01)
    conn.close()
    print(json.dumps({"lat": lat, "errors": errors}))


def start_normal(port: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.abuse", "--normal", str(port), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


# --------------------------------------------------------------------------- router process
def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Sample:
    rss: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def take(self, pid: int) -> None:
        self.rss.append(rss_mib(pid))
        self.fds.append(fds(pid))


# --------------------------------------------------------------------------- attackers
class Attacker(asyncio.Protocol):
    """One hostile connection; reconnects when the router cuts it."""

    def __init__(self, attack: "Attack") -> None:
        self.attack = attack
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.attack.open += 1
        self.attack.begin(self)

    def data_received(self, data: bytes) -> None:
        self.attack.answers += 1 if data.startswith(b"HTTP/1.1 ") else 0

    def connection_lost(self, exc) -> None:
        self.attack.open -= 1
        if self.attack.running:  # not our own abort at the end of the phase
            self.attack.cut += 1
        self.attack.lost(self)


class Attack:
    """`count` connections of one kind, held for the phase."""

    reconnect = True  # cut: come back at once

    def __init__(self, name: str, port: int, count: int, rcvbuf: int | None = None) -> None:
        self.name, self.port, self.count, self.rcvbuf = name, port, count, rcvbuf
        self.loop = asyncio.get_running_loop()
        self.running = True
        self.open = self.cut = self.answers = self.failed_connects = 0
        self.conns: set[Attacker] = set()
        self.tasks: set[asyncio.Task] = set()

    async def connect(self) -> None:
        try:
            sock = socket.socket()
            sock.setblocking(False)
            if self.rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            await self.loop.sock_connect(sock, ("127.0.0.1", self.port))
            _, proto = await self.loop.create_connection(lambda: Attacker(self), sock=sock)
            self.conns.add(proto)
        except OSError:
            self.failed_connects += 1
            await asyncio.sleep(0.2)
            if self.running:
                self.spawn()

    def spawn(self) -> None:
        t = self.loop.create_task(self.connect())
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        for i in range(self.count):
            self.spawn()
            if i % 200 == 199:
                await asyncio.sleep(0.05)  # spread the connects

    def lost(self, a: Attacker) -> None:
        self.conns.discard(a)
        if self.running and self.reconnect:
            self.spawn()

    async def tick(self) -> None:
        """Called every 0.5 s: trickle more bytes where the attack does."""

    def begin(self, a: Attacker) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.running = False
        for t in list(self.tasks):
            t.cancel()
        for a in list(self.conns):
            a.transport.abort()


class SlowHead(Attack):
    def begin(self, a):
        a.transport.write(b"GET /api/v1/echo HTTP/1.1\r\nHost: x\r\n")

    async def tick(self):
        for a in list(self.conns):
            a.transport.write(b"X-Slow: 1\r\n")


class StalledBody(Attack):
    def begin(self, a):
        a.transport.write(b"PUT /api/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789")


class NeverReads(Attack):
    reconnect = False  # each holds what it can until cut: coming back would be a download flood
    large = LARGE

    def begin(self, a):
        a.transport.write(b"GET /api/v1/large?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % self.large)
        a.transport.pause_reading()


class EndlessHeader(Attack):
    def begin(self, a):
        a.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")

    async def tick(self):
        chunk = b"v" * 1024
        for a in list(self.conns):
            a.transport.write(chunk)


class Idle(Attack):
    def begin(self, a):
        pass


KINDS = {
    "slow head (slowloris)": SlowHead,
    "stalled body": StalledBody,
    "never reads": NeverReads,
    "endless header": EndlessHeader,
    "idle connections": Idle,
}


async def run_phase(kind, router: harness.RouterProcess, region_port: int, count: int, seconds: float, settle: float) -> dict:
    port, pid = router.port, router.proc.pid
    before = Sample()
    before.take(pid)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    normal = start_normal(port, seconds)
    # The same client straight to the region, no router: what the machine itself gives.
    control = start_normal(region_port, seconds)
    during = Sample()
    attack = None
    if kind is not None:
        attack = kind(kind.__name__, port, count, rcvbuf=4096 if kind is NeverReads else None)
        await attack.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        if attack is not None:
            await attack.tick()
        during.take(pid)
    in_flight = sum(r["in_flight"] for r in router.state()["regions"])  # with the attackers still there
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    if attack is not None:
        attack.stop()
    out, _ = await asyncio.get_running_loop().run_in_executor(None, normal.communicate)
    result = json.loads(out)
    out, _ = await asyncio.get_running_loop().run_in_executor(None, control.communicate)
    direct = [x for _, x in json.loads(out)["lat"]]
    await asyncio.sleep(settle)
    after = Sample()
    after.take(pid)
    lat = [x for _, x in result["lat"]]
    late = [x for at, x in result["lat"] if at >= seconds / 2]
    return {
        "requests": len(lat) + len(result["errors"]),
        "p50": percentile(lat, 50) * 1000, "p99": percentile(lat, 99) * 1000,
        "late_p99": percentile(late, 99) * 1000, "direct_p99": percentile(direct, 99) * 1000,
        "late_errors": sum(1 for at, _ in result["errors"] if at >= seconds / 2),
        "errors": len(result["errors"]), "error_kinds": sorted({e for _, e in result["errors"]}), "cpu": cpu,
        "first_error": min((at for at, _ in result["errors"]), default=None),
        "rss": (before.rss[0], max(during.rss), after.rss[0]),
        "fds": (before.fds[0], max(during.fds), after.fds[0]),
        "cut": attack.cut if attack else 0, "in_flight": in_flight,
        "failed_connects": attack.failed_connects if attack else 0,
    }


def config_text(ports: dict[str, int]) -> str:
    return router_config(ports, TUNED, limits=LIMITS)


async def main_async(args) -> int:
    sim = harness.start_sim(LATENCIES)
    router = None
    try:
        router = harness.start_router(config_text(sim.ports))
        region_port = sim.ports["us-east-1"]
        rows = [("none (baseline)", "", await run_phase(None, router, region_port, 0, args.duration, 1.0))]
        for name, kind in KINDS.items():
            if args.only and args.only not in name:
                continue
            count = args.idle if kind is Idle else args.clients
            r = await run_phase(kind, router, region_port, count, args.duration, args.settle)
            rows.append((name, count, r))
        breakers = {r["id"]: r["breaker"] for r in router.state()["regions"]}
        print(f"{args.duration:g} s per attack; never-reading clients ask for {NeverReads.large} bytes; limits {LIMITS}")
        print()
        print("| attack | clients | normal requests | normal p50 | normal p99 | normal errors "
              "| 2nd half: p99, errors | p99 straight to the region "
              "| router RSS MiB before / peak / after | router fds before / peak / after | router CPU "
              "| cut by the router | region requests in flight at the end |")
        print("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: |")
        for name, count, r in rows:
            errors = (f"{r['errors']} ({', '.join(r['error_kinds'])}; first sent at {r['first_error']:.1f} s)"
                      if r["errors"] else "0")
            print(f"| {name} | {count} | {r['requests']} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {errors} "
                  f"| {r['late_p99']:.1f} ms, {r['late_errors']} | {r['direct_p99']:.1f} ms "
                  f"| {r['rss'][0]:.0f} / {r['rss'][1]:.0f} / {r['rss'][2]:.0f} "
                  f"| {r['fds'][0]} / {r['fds'][1]} / {r['fds'][2]} | {r['cpu']:.0f} % | {r['cut']} | {r['in_flight']} |")
        print()
        print(f"breakers after: {breakers}")
    finally:
        if router is not None:
            router.stop()
        sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--normal"]:
        normal_client(int(argv[1]), float(argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=2000, help="attackers of each slow kind (default 2000)")
    p.add_argument("--idle", type=int, default=10000, help="idle connections (default 10000)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per attack (default 20)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after an attack before 'after'")
    p.add_argument("--only", help="run only the attacks whose name contains this")
    p.add_argument("--large", type=int, default=LARGE, help="bytes a never-reading client asks for")
    args = p.parse_args(argv)
    NeverReads.large = args.large
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
