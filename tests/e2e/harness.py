"""End-to-end harness: the region simulator and the router as real processes
on 127.0.0.1. Every wait is bounded."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.failover import toml_value

REPO = Path(__file__).resolve().parents[2]
GEO_DIR = REPO / "tests" / "data" / "geo"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")
TOKEN = "test-admin-token-0123456789"


def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # the condition may fail while things start
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}" + (f" (last error: {last_exc})" if last_exc else ""))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def region(self) -> str | None:
        return self.headers.get("x-edge-region")


def request(
    port: int, method: str = "GET", path: str = "/", body: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 10.0, host: str = "127.0.0.1",
) -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


@dataclass
class SimProcess:
    proc: subprocess.Popen
    control: int
    ports: dict[str, int]

    def _ctl(self, method: str, path: str, body: dict | None = None) -> dict:
        r = request(self.control, method, path, json.dumps(body).encode() if body is not None else None,
                    {"Content-Type": "application/json"})
        assert r.status == 200, (r.status, r.body)
        return r.json()

    def fault(self, region: str, **faults) -> dict:
        return self._ctl("POST", f"/regions/{region}/fault", faults)

    def reset(self, region: str) -> dict:
        return self._ctl("POST", f"/regions/{region}/reset")

    def stats(self, region: str) -> dict:
        return self._ctl("GET", f"/regions/{region}/stats")

    def reset_stats(self, region: str | None = None) -> None:
        for rid in [region] if region else self.ports:
            self._ctl("POST", f"/regions/{rid}/stats/reset")

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def start_sim(latencies: dict[str, float] | None = None, tls: tuple[str, str] | None = None,
              client_ca: str | None = None) -> SimProcess:
    latencies = latencies or {r: 0.0 for r in REGIONS}
    args = [sys.executable, "-m", "router.simulator", "--control", "0"]
    for rid, lat in latencies.items():
        args += ["--region", f"{rid}:0:{int(lat * 1000)}ms"]
    if tls:
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    if client_ca:
        args += ["--tls-client-ca", client_ca]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = _read_line(proc, 15.0)
    info = json.loads(line)
    return SimProcess(proc, info["control"], info["regions"])


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError("simulator did not start in time")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"simulator exited: {proc.wait(5)}")
    return line


toml_str = toml_value  # one TOML literal writer, bench/failover.py's


FAILOVER = {
    "us-east-1": ["us-west-2", "eu-west-1", "ap-southeast-1"],
    "us-west-2": ["us-east-1", "eu-west-1", "ap-southeast-1"],
    "eu-west-1": ["us-east-1", "us-west-2", "ap-southeast-1"],
    "ap-southeast-1": ["us-west-2", "us-east-1", "eu-west-1"],
}
COUNTRIES = {
    "us-east-1": ["US", "CA", "MX", "BR", "AR", "CL", "CO", "PE", "VE"],
    "eu-west-1": ["GB", "IE", "FR", "DE", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO", "DK", "FI", "PL"],
    "ap-southeast-1": ["AU", "NZ", "SG", "MY", "TH", "ID", "PH", "VN", "IN", "JP", "KR", "CN", "HK", "TW", "MO"],
}


def make_config(
    ports: dict[str, int], *, strategy: str = "geographic", geo_db: str | None = None,
    scheme: str = "http", probe: dict | None = None, breaker: dict | None = None,
    limits: dict | None = None, residency: list[dict] | None = None, region_extra: dict | None = None,
    log: dict | None = None, host: str = "127.0.0.1", least_latency: dict | None = None,
    slow_start: str = "0s", degrade: dict | None = None,
) -> str:
    """A router config for the simulator's regions. Slow start is off unless
    asked for: a region coming back takes its whole share at once, as the tests
    written before slow start expect."""
    geo_db = geo_db or str(GEO_DIR / "GeoLite2-Country-Test.mmdb")
    probe = {"interval": "1s", "timeout": "500ms", "fall": 2, "rise": 2, "latency_interval": "1s",
             "fast_interval": "200ms", "down_interval": "300ms", **(probe or {})}
    lines = [
        'default_region = "us-east-1"',
        f"strategy = {toml_str(strategy)}",
        f"slow_start = {toml_str(slow_start)}",
        "[listen]", 'address = "127.0.0.1:0"',
        "[admin]", 'address = "127.0.0.1:0"', 'token_env = "EDGE_ROUTER_ADMIN_TOKEN"',
        "[geo]", f"database = {toml_str(geo_db)}", 'trusted_proxies = ["127.0.0.1/32", "::1/128"]',
        "[geo.countries]",
    ]
    lines += [f"{toml_str(r)} = {toml_str(c)}" for r, c in COUNTRIES.items() if r in ports]
    lines.append("[probe]")
    lines += [f"{k} = {toml_str(v)}" for k, v in probe.items()]
    if breaker:
        lines.append("[breaker]")
        lines += [f"{k} = {toml_str(v)}" for k, v in breaker.items()]
    if limits:
        lines.append("[limits]")
        lines += [f"{k} = {toml_str(v)}" for k, v in limits.items()]
    if log:
        lines.append("[log]")
        lines += [f"{k} = {toml_str(v)}" for k, v in log.items()]
    if least_latency:
        lines.append("[least_latency]")
        lines += [f"{k} = {toml_str(v)}" for k, v in least_latency.items()]
    if degrade:
        lines.append("[degrade]")
        lines += [f"{k} = {toml_str(v)}" for k, v in degrade.items()]
    for rid, port in ports.items():
        extra = (region_extra or {}).get(rid, {})
        lines += [
            "[[regions]]",
            f"id = {toml_str(rid)}",
            f"role = {toml_str('primary' if rid == 'us-east-1' else 'standby')}",
            f"api = {toml_str(f'{scheme}://{host}:{port}')}",
            f"health = {toml_str(f'{scheme}://{host}:{port}/api/v1/health')}",
            f"failover = {toml_str([f for f in FAILOVER.get(rid, []) if f in ports])}",
        ]
        lines += [f"{k} = {toml_str(v)}" for k, v in extra.items()]
    for rule in residency or []:
        lines += ["[[residency]]", f"countries = {toml_str(rule['countries'])}", f"regions = {toml_str(rule['regions'])}"]
    return "\n".join(lines) + "\n"


@dataclass
class RouterProcess:
    proc: subprocess.Popen
    port: int
    admin: int
    log_path: Path
    stdout_path: Path
    tmp: tempfile.TemporaryDirectory = field(repr=False)

    def get(self, path: str, headers: dict[str, str] | None = None, **kw) -> Response:
        return request(self.port, "GET", path, headers=headers, **kw)

    def req(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, **kw) -> Response:
        return request(self.port, method, path, body, headers, **kw)

    def admin_req(self, method: str, path: str, body: dict | bytes | None = None, token: str | None = TOKEN) -> Response:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        return request(self.admin, method, path, body, headers)

    def state(self) -> dict:
        return request(self.admin, "GET", "/admin/state").json()

    def region_state(self, rid: str) -> dict:
        return next(r for r in self.state()["regions"] if r["id"] == rid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        code = stop_process(self.proc, timeout=30)
        self.tmp.cleanup()
        return code


_LISTEN_RE = re.compile(r"listening on .*?:(\d+) \(admin .*?:(\d+)\)")


def start_router(config_text: str, *, env: dict[str, str] | None = None, token: str | None = TOKEN,
                 extra_args: list[str] | None = None, wait_healthy: bool = True) -> RouterProcess:
    tmp = tempfile.TemporaryDirectory(prefix="edge-router-test-")
    cfg = Path(tmp.name) / "config.toml"
    cfg.write_text(config_text)
    log_path = Path(tmp.name) / "router.log"
    out_path = Path(tmp.name) / "router.out"
    e = {k: v for k, v in os.environ.items() if k != "EDGE_ROUTER_ADMIN_TOKEN"}
    if token:
        e["EDGE_ROUTER_ADMIN_TOKEN"] = token
    e.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(cfg), *(extra_args or [])],
        cwd=REPO, stdout=open(out_path, "wb"), stderr=open(log_path, "wb"), env=e,
    )

    def listening():
        if proc.poll() is not None:
            raise AssertionError(f"router exited {proc.returncode}: {log_path.read_text()}")
        return _LISTEN_RE.search(log_path.read_text(errors="replace"))

    m = wait_until(listening, 20, what="router to listen")
    rp = RouterProcess(proc, int(m.group(1)), int(m.group(2)), log_path, out_path, tmp)
    if wait_healthy:
        wait_until(lambda: all(r["healthy"] for r in rp.state()["regions"]), 15, what="regions healthy")
    return rp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes, read the answer until the server closes or times out."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


class Traffic:
    """Clients (one thread per X-Forwarded-For address) sending requests to a router
    until the block ends."""

    def __init__(self, port: int, ips: tuple[str, ...], pause: float = 0.03) -> None:
        self.pause = pause
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(port, ip), daemon=True) for ip in ips]

    def run(self, port: int, ip: str) -> None:
        while not self.stop.is_set():
            try:
                request(port, "GET", "/api/v1/echo", headers={"X-Forwarded-For": ip}, timeout=5)
            except OSError:
                pass
            time.sleep(self.pause)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def metric_value(rp, name: str, **labels) -> float | None:
    """One sample of the router's /metrics whose labels include these, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    text = request(rp.admin, "GET", "/metrics").body.decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None
