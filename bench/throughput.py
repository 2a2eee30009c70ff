"""Side-by-side throughput: edge-router against nginx (+ geoip2) doing the same job.

    python -m bench.throughput [--duration 10] [--rounds 3] [--connections 64]
                               [--load auto|wrk|python] [--no-pin] [--workers N]
                               [--router-python PYTHON] [--big [--big-size 256MiB]]

What it starts, all on 127.0.0.1, all stopped at the end (Ctrl-C included):

- a fast upstream: four "regions" served by one nginx (a fixed small JSON answer,
  one port per region), or the region simulator (router/simulator/, no added
  latency) when nginx is not installed;
- edge-router on the geographic strategy with the demo GeoIP DB (geodata/demo.py),
  trusting 127.0.0.1 for X-Forwarded-For, access log off;
- when nginx and its geoip2 module are installed, nginx configured for the same job:
  client address from X-Forwarded-For (realip, trusted 127.0.0.1), GeoIP2 country
  lookup, country -> region map (the seed's), keep-alive upstream pools,
  X-Forwarded-* and X-Request-Id headers, X-Edge-Region on the answer.

Each target is driven in turn by wrk (if installed, else a Python asyncio load
generator: keep-alive, N connections, fixed duration), every request carrying
X-Forwarded-For from the demo clients of all regions, so every request needs a
GeoIP lookup. With taskset and 2+ CPUs, the proxy under test is pinned to CPU 0 and
the load generator, the upstream and this script to CPU 1. Rounds are interleaved
(direct, router, nginx, then the next round in a rotated order) so that drift on the
machine hits every target alike. A "direct" row measures the upstream alone: the
ceiling of what this load generator and upstream can show.

Prints one table: req/s, p50 and p99 latency (medians over rounds), peak RSS
(VmHWM summed over the target's process tree), and the ratios of req/s and p99 to
nginx's, each taken within a round and the median of those shown. --workers N adds
a row for `serve --workers N` (not pinned: its workers share the machine's CPUs
with the load generator). --router-python PYTHON runs the router installed for
that interpreter (say, a venv with `pip install .`, compiled) instead of this tree.

--big instead streams 256 MiB (--big-size) down and up through edge-router (simulator
upstream, which checks size and sha256 of uploads) and reports MB/s and the router's
peak RSS, to show that bodies are streamed, not held in memory.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.harness import (REGIONS, REPO, RouterProcess, free_port, port_open, request, router_config, start_router as
                           start_router_process, start_sim, stop_process, wait_until)

PATH = "/api/v1/echo"
UPSTREAM_BODY = '{"ok":true,"region":"%s","items":[1,2,3],"message":"hello from the region"}'
GEOIP2_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/etc/nginx/modules",
                      "/usr/lib64/nginx/modules", "/usr/local/nginx/modules")


# -- small helpers ---------------------------------------------------------------------

def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def tree_kib(pid: int, key: str = "VmHWM") -> int:
    return sum(status_kib(p, key) for p in proc_tree(pid))


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


@dataclass
class Pinning:
    proxy: list[str] = field(default_factory=list)  # command prefix for the proxy under test
    load: list[str] = field(default_factory=list)  # ... for the load generator and the upstream
    note: str = "not pinned"
    proxy_cpu: int | None = None
    load_cpu: int | None = None


def make_pinning(enabled: bool) -> Pinning:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    taskset = shutil.which("taskset")
    if not enabled:
        return Pinning(note="not pinned (--no-pin)")
    if not taskset or len(cpus) < 2:
        return Pinning(note=f"not pinned ({'no taskset' if not taskset else f'{len(cpus)} CPU'})")
    proxy_cpu, load_cpu = cpus[0], cpus[1]
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {load_cpu})  # this script polls and checks from the load CPU
    return Pinning([taskset, "-c", str(proxy_cpu)], [taskset, "-c", str(load_cpu)],
                   f"proxy on CPU {proxy_cpu}; load generator, upstream and this script on CPU {load_cpu}",
                   proxy_cpu, load_cpu)


def cpu_times() -> dict[int, tuple[int, int]]:
    """CPU number -> (busy, total) jiffies from /proc/stat."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[int(name[3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def busy_percent(before: dict, after: dict, cpu: int | None) -> float | None:
    if cpu is None or cpu not in before or cpu not in after:
        return None
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return 100.0 * busy / total if total else None


class Processes:
    """Every process this script starts; all stopped by stop_all()."""

    def __init__(self) -> None:
        self.stops: list[Callable[[], object]] = []

    def start(self, name: str, args: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(args, **kw)
        self.stops.append(lambda: stop_process(proc))
        return proc

    def track(self, started):
        """A process started by bench/harness.py: stopped with the others."""
        self.stops.append(started.stop)
        return started

    def stop_all(self) -> None:
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()
        self.stops.clear()


# -- geo data ----------------------------------------------------------------------------

def demo_geo(tmp: Path) -> tuple[str, list[tuple[str, str]], dict[str, tuple[str, ...]]]:
    """The demo GeoIP DB, its sample clients (ip, expected region) and the country map."""
    from geodata.countries import SEED_COUNTRIES
    from geodata.demo import build_demo_db

    db = tmp / "demo.mmdb"
    clients = build_demo_db(db)
    return str(db), [(c.ip, c.region) for c in clients], dict(SEED_COUNTRIES)


# -- upstream ----------------------------------------------------------------------------

def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/nginx/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def geoip2_module(nginx: str) -> tuple[bool, str | None]:
    """(available, load_module path; None when compiled in)."""
    for d in GEOIP2_MODULE_DIRS:
        p = Path(d) / "ngx_http_geoip2_module.so"
        if p.exists():
            return True, str(p)
    with contextlib.suppress(Exception):
        info = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10).stderr
        if "geoip2" in info and "dynamic-module" not in info:
            return True, None  # built in; `nginx -t` will tell if not
    return False, None


NGINX_COMMON = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
"""
NGINX_HTTP_COMMON = """\
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
"""


def start_nginx(procs: Processes, nginx: str, name: str, conf_text: str, workdir: Path,
                ports: list[int], pin: list[str]) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    conf = workdir / "nginx.conf"
    conf.write_text(conf_text)
    check = subprocess.run([nginx, "-t", "-q", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                           capture_output=True, text=True, timeout=20)
    if check.returncode != 0:
        raise RuntimeError(f"{name}: nginx -t failed:\n{check.stderr}{check.stdout}")
    proc = procs.start(name, [*pin, nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode}: {(workdir / 'error.log').read_text()[-2000:]}")
        return all(port_open(p) for p in ports)

    wait_until(up, 15, what=f"{name} to listen")
    return proc


@dataclass
class Upstream:
    kind: str  # "nginx" | "simulator"
    ports: dict[str, int]
    proc: subprocess.Popen


def start_upstream(procs: Processes, tmp: Path, pin: Pinning, force_sim: bool = False) -> Upstream:
    nginx = None if force_sim else nginx_binary()
    if nginx:
        ports = {rid: free_port() for rid in REGIONS}
        servers = "\n".join(
            f"""    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        default_type application/json;
        location / {{
            add_header X-Sim-Region {rid};
            return 200 '{UPSTREAM_BODY % rid}';
        }}
    }}""" for rid, port in ports.items())
        text = (NGINX_COMMON.format(dir=tmp / "upstream") + "http {\n"
                + NGINX_HTTP_COMMON.format(dir=tmp / "upstream") + servers + "\n}\n")
        proc = start_nginx(procs, nginx, "upstream nginx", text, tmp / "upstream", list(ports.values()), pin.load)
        return Upstream("nginx", ports, proc)
    sim = procs.track(start_sim({rid: 0.0 for rid in REGIONS}, prefix=pin.load))
    return Upstream("simulator", sim.ports, sim.proc)


# -- edge-router ---------------------------------------------------------------------------

def bench_config(ports: dict[str, int], listen: int, admin: int, geo_db: str,
                 countries: dict[str, tuple[str, ...]]) -> str:
    """Fixed ports: the log level is warning, so there is no "listening on" line to read them from."""
    return router_config(
        ports, listen=f"127.0.0.1:{listen}", admin=f"127.0.0.1:{admin}", geo_db=geo_db,
        trusted_proxies=["127.0.0.1/32", "::1/128"], countries=countries,
        failover={rid: [r for r in REGIONS if r != rid] for rid in ports},
        tables={"probe": {"interval": "2s", "timeout": "1s", "latency_interval": "5s"},
                "log": {"level": "warning", "access_log": False}})


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen | None  # None: not ours to measure (direct row uses the upstream's)
    region_header: str | None  # header naming the region that answered


def router_build(python: str, cwd: Path) -> str:
    """What `edge-router --version` says for the router this run starts."""
    out = subprocess.run([python, "-m", "router", "--version"], cwd=cwd, capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or f"unknown build ({out.stderr.strip()[-200:]})"


def start_router(procs: Processes, tmp: Path, upstream: Upstream, geo_db: str,
                 countries: dict[str, tuple[str, ...]], pin: Pinning, python: str | None = None,
                 workers: int = 1) -> Target:
    """edge-router serve: from this source tree, or (python given) the build
    installed for that interpreter, run from outside the tree."""
    listen, admin = free_port(), free_port()
    name = "edge-router" if workers == 1 else f"edge-router --workers {workers}"
    try:
        rp: RouterProcess = procs.track(start_router_process(
            bench_config(upstream.ports, listen, admin, geo_db, countries), ports=(listen, admin),
            token="bench-" + os.urandom(8).hex(), extra_args=["--workers", str(workers)],
            prefix=pin.proxy if workers == 1 else [],  # workers: every CPU (shared with the load)
            python=python, cwd=REPO if python is None else tmp, timeout=30, healthy_timeout=30))
    except RuntimeError as exc:
        raise RuntimeError(f"{name}: {exc}") from None
    return Target(name, listen, rp.proc, "x-edge-region")


def start_floor(procs: Processes, upstream: Upstream, pin: Pinning) -> Target:
    """bench/floor.py: a bare asyncio + httptools forwarder, the cost floor of Python."""
    port = free_port()
    proc = procs.start("floor", [*pin.proxy, sys.executable, "-m", "bench.floor", str(port),
                                 str(upstream.ports["us-east-1"])],
                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_open(port), 15, what="the floor forwarder to listen")
    return Target("python floor (bench/floor.py)", port, proc, None)


def start_nginx_proxy(procs: Processes, tmp: Path, upstream: Upstream, geo_db: str,
                      countries: dict[str, tuple[str, ...]], pin: Pinning) -> Target | None:
    nginx = nginx_binary()
    if not nginx:
        return None
    have, module = geoip2_module(nginx)
    if not have:
        return None
    port = free_port()
    d = tmp / "nginx-proxy"
    country_map = "\n".join(f"        {cc} {rid};" for rid, codes in countries.items() for cc in codes)
    upstreams = "\n".join(
        f"    upstream {rid} {{ server 127.0.0.1:{p}; keepalive 128; keepalive_requests 1000000; }}"
        for rid, p in upstream.ports.items())
    text = ((f"load_module {module};\n" if module else "") + NGINX_COMMON.format(dir=d) + "http {\n"
            + NGINX_HTTP_COMMON.format(dir=d) + f"""\
    # the same job as edge-router's geographic strategy
    set_real_ip_from 127.0.0.1/32;
    set_real_ip_from ::1/128;
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    geoip2 {geo_db} {{
        $client_country source=$remote_addr country iso_code;
    }}
    map $client_country $edge_region {{
        default us-east-1;
{country_map}
    }}
    map $http_x_request_id $edge_request_id {{
        default $http_x_request_id;
        "" $request_id;
    }}
{upstreams}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://$edge_region;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-Id $edge_request_id;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            add_header X-Edge-Region $edge_region always;
            add_header X-Request-Id $edge_request_id always;
        }}
    }}
}}
""")
    proc = start_nginx(procs, nginx, "nginx proxy", text, d, [port], pin.proxy)
    return Target("nginx+geoip2", port, proc, "x-edge-region")


def check_routing(target: Target, clients: list[tuple[str, str]]) -> str:
    """Every demo client must land in its region: the two proxies do the same job."""
    wrong = []
    for ip, region in clients:
        r = request(target.port, "GET", PATH, headers={"X-Forwarded-For": ip}, timeout=5)
        status, headers = r.status, r.headers
        got = headers.get(target.region_header or "", region)
        if status != 200 or got != region:
            wrong.append(f"{ip}: HTTP {status}, region {got} (expected {region})")
    if wrong:
        raise RuntimeError(f"{target.name} routes wrongly: " + "; ".join(wrong))
    return f"{target.name}: {len(clients)} clients routed to their home regions"


# -- load generators -----------------------------------------------------------------------

@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    proxy_cpu: float | None = None  # busy % of the proxy's CPU during the run
    load_cpu: float | None = None  # busy % of the load generator's CPU


WRK_LUA = """\
local clients = {%s}
local reqs = {}
local n = 0
init = function(args)
  for i, ip in ipairs(clients) do
    reqs[i] = wrk.format("GET", "%s", { ["X-Forwarded-For"] = ip })
  end
end
request = function()
  n = n + 1
  return reqs[(n %% #reqs) + 1]
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(wrk: str, port: int, clients: list[tuple[str, str]], duration: float, connections: int,
            pin: Pinning, tmp: Path) -> Sample:
    script = tmp / "xff.lua"
    if not script.exists():
        script.write_text(WRK_LUA % (", ".join(json.dumps(ip) for ip, _ in clients), PATH))
    args = [*pin.load, wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
            "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}{PATH}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
    except (AttributeError, ValueError):
        raise RuntimeError(f"cannot read wrk's output:\n{out}") from None
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return Sample(rps, p50, p99, total, errors)


def run_python_load(port: int, clients: list[tuple[str, str]], duration: float, connections: int,
                    pin: Pinning) -> Sample:
    args = [*pin.load, sys.executable, "-m", "bench.throughput", "_loadgen", "--port", str(port),
            "--duration", str(duration), "--connections", str(connections),
            "--xff", ",".join(ip for ip, _ in clients)]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"python load generator failed: {done.stderr[-2000:]}")
    d = json.loads(done.stdout.strip().splitlines()[-1])
    return Sample(d["rps"], d["p50_ms"], d["p99_ms"], d["requests"], d["errors"])


async def _loadgen(port: int, duration: float, connections: int, xffs: list[str]) -> dict:
    """Keep-alive HTTP/1.1 GETs over N connections for a fixed time; latency per request."""
    reqs = [(f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Forwarded-For: {ip}\r\n\r\n").encode()
            for ip in xffs] or [f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()]
    latencies: list[float] = []
    counters = {"errors": 0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration

    async def read_response(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            m = re.search(rb"content-length:\s*(\d+)", lower)
            if m:
                await reader.readexactly(int(m.group(1)))
        return status

    async def worker(i: int) -> None:
        n = i
        while loop.time() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                counters["errors"] += 1
                await asyncio.sleep(0.01)
                continue
            try:
                while loop.time() < deadline:
                    t0 = time.perf_counter()
                    writer.write(reqs[n % len(reqs)])
                    n += 1
                    status = await read_response(reader)
                    latencies.append(time.perf_counter() - t0)
                    if status >= 400:
                        counters["errors"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                counters["errors"] += 1
            finally:
                writer.close()

    start = loop.time()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = loop.time() - start
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {"rps": len(latencies) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "requests": len(latencies), "errors": counters["errors"]}


def loadgen_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput _loadgen")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--xff", default="")
    a = p.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(_loadgen(a.port, a.duration, a.connections, [x for x in a.xff.split(",") if x]))
    print(json.dumps(result))
    return 0


# -- the throughput run ------------------------------------------------------------------

def throughput(args: argparse.Namespace) -> int:
    procs = Processes()
    tmp_ctx = tempfile.TemporaryDirectory(prefix="edge-router-bench-")
    tmp = Path(tmp_ctx.name)
    tmp.chmod(0o755)  # nginx workers may run as another user
    try:
        pin = make_pinning(not args.no_pin)
        geo_db, clients, countries = demo_geo(tmp)
        Path(geo_db).chmod(0o644)
        wrk = shutil.which("wrk") if args.load in ("auto", "wrk") else None
        if args.load == "wrk" and not wrk:
            print("--load wrk: wrk is not installed", file=sys.stderr)
            return 2
        load_name = "wrk (1 thread)" if wrk else "python asyncio load generator"

        upstream = start_upstream(procs, tmp, pin, force_sim=args.simulator_upstream)
        direct = Target(f"direct to upstream ({upstream.kind})", upstream.ports["us-east-1"], upstream.proc, None)
        build = router_build(args.router_python or sys.executable, REPO if args.router_python is None else tmp)
        print(f"router: {build}", flush=True)
        router = start_router(procs, tmp, upstream, geo_db, countries, pin, args.router_python)
        targets = [direct, router]
        if args.workers > 1:
            targets.append(start_router(procs, tmp, upstream, geo_db, countries, pin, args.router_python,
                                        args.workers))
        if args.floor:
            targets.append(start_floor(procs, upstream, pin))
        notes = []
        proxy = None
        if args.nginx:
            proxy = start_nginx_proxy(procs, tmp, upstream, geo_db, countries, pin)
            if proxy is None:
                notes.append("nginx with the geoip2 module is not installed: no nginx row "
                             "(apt-get install nginx libnginx-mod-http-geoip2)")
            else:
                targets.append(proxy)
        for t in targets[1:]:
            if t.region_header:  # the floor routes nothing: nothing to check
                print(check_routing(t, clients), flush=True)

        def load(t: Target, seconds: float) -> Sample:
            before = cpu_times()
            if wrk:
                s = run_wrk(wrk, t.port, clients, seconds, args.connections, pin, tmp)
            else:
                s = run_python_load(t.port, clients, seconds, args.connections, pin)
            after = cpu_times()
            s.proxy_cpu = busy_percent(before, after, pin.proxy_cpu)
            s.load_cpu = busy_percent(before, after, pin.load_cpu)
            return s

        print(f"load: {load_name}, {args.connections} connections, {args.duration:g}s per target per round, "
              f"{args.rounds} rounds; {pin.note}", flush=True)
        for t in targets:  # warm-up: connection pools, JIT-less Python caches, page faults
            load(t, min(2.0, args.duration))
        samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for t in order:
                s = load(t, args.duration)
                samples[t.name].append(s)
                print(f"  round {rnd + 1} {t.name:<32} {s.rps:>10.0f} req/s  p50 {s.p50_ms:7.2f} ms  "
                      f"p99 {s.p99_ms:7.2f} ms  errors {s.errors}  CPU busy: proxy {_pct(s.proxy_cpu)}, "
                      f"load {_pct(s.load_cpu)}", flush=True)
        rss = {t.name: tree_kib(t.proc.pid) / 1024 for t in targets if t.proc}
        print()
        print(render_table(targets, samples, rss, proxy.name if proxy else None))
        for n in notes:
            print(f"note: {n}")
        print(f"machine: {machine()}; {pin.note}; load: {load_name}, {args.connections} connections")
        print(f"router build: {build}")
        if args.workers > 1:
            print(f"edge-router --workers {args.workers} is not pinned: its workers share both CPUs with the "
                  f"load generator and the upstream")
        return 0
    finally:
        procs.stop_all()
        tmp_ctx.cleanup()


def _median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def render_table(targets: list[Target], samples: dict[str, list[Sample]], rss: dict[str, float],
                 baseline: str | None) -> str:
    """Medians over rounds. A ratio to nginx is taken within each round (the
    same minutes of the same machine) and the median of those is shown."""
    base = samples[baseline] if baseline else None

    def ratio(ss: list[Sample], attr: str) -> str:
        if not base:
            return "n/a"
        return f"{statistics.median(getattr(s, attr) / getattr(b, attr) for s, b in zip(ss, base)):.2f}x"

    rows = ["| target | req/s (median, min-max) | p50 ms | p99 ms | peak RSS MiB | req/s vs nginx "
            "| p99 vs nginx | errors | CPU busy: proxy / load |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in targets:
        ss = samples[t.name]
        rps = statistics.median(s.rps for s in ss)
        rows.append(
            f"| {t.name} | {rps:,.0f} ({min(s.rps for s in ss):,.0f}-{max(s.rps for s in ss):,.0f}) "
            f"| {statistics.median(s.p50_ms for s in ss):.2f} | {statistics.median(s.p99_ms for s in ss):.2f} "
            f"| {rss.get(t.name, 0):.1f} | {ratio(ss, 'rps')} | {ratio(ss, 'p99_ms')} | {sum(s.errors for s in ss)} "
            f"| {_pct(_median(s.proxy_cpu for s in ss))} / {_pct(_median(s.load_cpu for s in ss))} |")
    return "\n".join(rows)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = status_kib_meminfo()
    return f"{os.cpu_count()} CPUs ({model}), {mem / 1024 / 1024:.1f} GiB RAM, Python {sys.version.split()[0]}"


def status_kib_meminfo() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


# -- big bodies ------------------------------------------------------------------------------

_PATTERN = bytes(range(256)) * 4096  # 1 MiB; the simulator's /large byte i is i % 256
_PATTERN_PLUS = _PATTERN + bytes(range(256))  # any 1 MiB window, at any offset mod 256


def _download(port: int, size: int, sized: bool) -> tuple[float, int, bool]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        t0 = time.perf_counter()
        conn.request("GET", f"/api/v1/large?bytes={size}" + ("&sized=1" if sized else ""))
        r = conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"download: HTTP {r.status}: {r.read(500)!r}")
        got, ok = 0, True
        while True:
            block = r.read(1 << 20)
            if not block:
                break
            start = got % 256
            ok = ok and block == _PATTERN_PLUS[start:start + len(block)]
            got += len(block)
        return time.perf_counter() - t0, got, ok and got == size
    finally:
        conn.close()


def _upload(port: int, size: int, chunked: bool) -> tuple[float, int, bool]:
    digest = hashlib.sha256()

    def body():
        left = size
        while left > 0:
            block = _PATTERN if left >= len(_PATTERN) else _PATTERN[:left]
            digest.update(block)
            left -= len(block)
            yield block

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        t0 = time.perf_counter()
        headers = {"Content-Type": "application/octet-stream"}
        if not chunked:
            headers["Content-Length"] = str(size)
        conn.request("PUT", "/api/v1/upload", body=body(), headers=headers, encode_chunked=chunked)
        r = conn.getresponse()
        answer = r.read()
        elapsed = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"upload: HTTP {r.status}: {answer[:500]!r}")
        d = json.loads(answer)
        return elapsed, d["bytes"], d["bytes"] == size and d["sha256"] == digest.hexdigest()
    finally:
        conn.close()


def big(args: argparse.Namespace) -> int:
    procs = Processes()
    tmp_ctx = tempfile.TemporaryDirectory(prefix="edge-router-bench-big-")
    tmp = Path(tmp_ctx.name)
    try:
        pin = make_pinning(not args.no_pin)
        geo_db, _clients, countries = demo_geo(tmp)
        upstream = start_upstream(procs, tmp, pin, force_sim=True)  # uploads need a real endpoint
        router = start_router(procs, tmp, upstream, geo_db, countries, pin)
        size = args.big_size
        idle = status_kib(router.proc.pid, "VmRSS") / 1024
        rows = []
        runs = [("download, chunked", lambda p: _download(p, size, False)),
                ("download, Content-Length", lambda p: _download(p, size, True)),
                ("upload, Content-Length", lambda p: _upload(p, size, False)),
                ("upload, chunked", lambda p: _upload(p, size, True))]
        for label, fn in runs:
            d_elapsed, _, d_ok = fn(upstream.ports["us-east-1"])
            r_elapsed, got, r_ok = fn(router.port)
            hwm = tree_kib(router.proc.pid) / 1024
            rows.append((label, size / d_elapsed / 1e6, size / r_elapsed / 1e6, hwm, d_ok and r_ok))
            print(f"  {label:<26} direct {size / d_elapsed / 1e6:7.0f} MB/s  via router "
                  f"{size / r_elapsed / 1e6:7.0f} MB/s  router peak RSS {hwm:6.1f} MiB  "
                  f"{'ok' if r_ok and d_ok else 'MISMATCH'}", flush=True)
        print()
        print(f"{size / (1 << 20):.0f} MiB bodies through edge-router (simulator upstream); router RSS "
              f"before: {idle:.1f} MiB")
        print("| transfer | direct MB/s | via edge-router MB/s | router peak RSS MiB (VmHWM) | bytes/sha256 ok |")
        print("| --- | ---: | ---: | ---: | --- |")
        for label, d, r, hwm, ok in rows:
            print(f"| {label} | {d:.0f} | {r:.0f} | {hwm:.1f} | {'yes' if ok else 'NO'} |")
        print(f"machine: {machine()}; {pin.note}")
        return 0 if all(r[4] for r in rows) else 1
    finally:
        procs.stop_all()
        tmp_ctx.cleanup()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loadgen"]:
        return loadgen_main(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="edge-router vs nginx+geoip2 throughput on loopback (see bench/README.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              python -m bench.throughput                       # 3 rounds x 10 s per target
              python -m bench.throughput --duration 5 --rounds 2 --load python
              python -m bench.throughput --big                 # 256 MiB up/down, router RSS
            """))
    p.add_argument("--duration", type=float, default=10.0, help="seconds per target per round (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections (default 64)")
    p.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                   help="load generator: wrk when installed (auto), or the built-in Python one")
    p.add_argument("--no-nginx", dest="nginx", action="store_false", help="skip the nginx+geoip2 row")
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="skip the 'python floor' row (bench/floor.py, a bare forwarder with no features)")
    p.add_argument("--simulator-upstream", action="store_true",
                   help="use the region simulator as upstream even when nginx is installed")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs with taskset")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="also measure `serve --workers N` (not pinned: the workers share every CPU)")
    p.add_argument("--router-python", metavar="PYTHON",
                   help="run the router installed for this interpreter (e.g. a venv with `pip install .`), "
                        "from outside the source tree; default: this source tree with this interpreter")
    p.add_argument("--big", action="store_true", help="instead: stream --big-size down and up through the router")
    p.add_argument("--big-size", type=parse_size, default=256 << 20, help="body size for --big (default 256MiB)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or args.connections < 1 or args.workers < 1:
        p.error("--duration, --rounds, --connections and --workers must be positive")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return big(args) if args.big else throughput(args)
    except KeyboardInterrupt:
        print("interrupted; everything stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench.throughput: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
