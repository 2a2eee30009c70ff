"""The process harness of the end-to-end tests and the benchmarks: the region
simulator and the router as real processes on 127.0.0.1, the router's config
written by one builder, every wait bounded, every process stopped.

tests/e2e/harness.py adds what only tests need (test defaults for the config,
raw sockets, background traffic) on top of this module.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from geodata.countries import DEFAULT_REGION, SEED_REGIONS

REPO = Path(__file__).resolve().parents[1]
GEO_TEST_DB = REPO / "tests" / "data" / "geo" / "GeoLite2-Country-Test.mmdb"
REGIONS = SEED_REGIONS
TOKEN = "test-admin-token-0123456789"  # loopback only; the admin token of every router started here
# The seed's failover order.
FAILOVER: dict[str, list[str]] = {
    "us-east-1": ["us-west-2", "eu-west-1", "ap-southeast-1"],
    "us-west-2": ["us-east-1", "eu-west-1", "ap-southeast-1"],
    "eu-west-1": ["us-east-1", "us-west-2", "ap-southeast-1"],
    "ap-southeast-1": ["us-west-2", "us-east-1", "eu-west-1"],
}


class HarnessError(RuntimeError):
    """A process did not start, did not answer, or a wait ran out."""


# -- waiting and plain HTTP ------------------------------------------------------------------

def wait_until(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
               what: str = "") -> object:
    """cond()'s first truthy value within timeout. An exception from cond counts as
    "not yet" (things are starting), except HarnessError: the wait is hopeless."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except HarnessError:
            raise
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout}s waiting for {what or cond}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def region(self) -> str | None:
        return self.headers.get("x-edge-region")


def request(port: int, method: str = "GET", path: str = "/", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0, host: str = "127.0.0.1") -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def free_port() -> int:
    """A port free now (for programs that cannot be given port 0: nginx, redis-server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after timeout; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


# -- the region simulator -------------------------------------------------------------------

@dataclass
class SimProcess:
    """`python -m router.simulator`: one port per region plus a control port."""
    proc: subprocess.Popen
    control: int
    ports: dict[str, int]

    def _ctl(self, method: str, path: str, body: dict | None = None) -> dict:
        r = request(self.control, method, path, json.dumps(body).encode() if body is not None else None,
                    {"Content-Type": "application/json"})
        if r.status != 200:
            raise HarnessError(f"simulator {method} {path}: {r.status} {r.body!r}")
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
        stop_process(self.proc, timeout=20)


def start_sim(latencies: Mapping[str, float] | None = None, *, tls: tuple[str, str] | None = None,
              client_ca: str | None = None, prefix: Iterable[str] = (), timeout: float = 20.0) -> SimProcess:
    """The simulator with these regions and added latencies (seconds; default: the four
    seed regions, none). prefix: a command prefix such as taskset's."""
    latencies = latencies if latencies is not None else {r: 0.0 for r in REGIONS}
    args = [*prefix, sys.executable, "-m", "router.simulator", "--control", "0", "--host", "127.0.0.1"]
    for rid, lat in latencies.items():
        args += ["--region", f"{rid}:0:{round(lat * 1000)}ms"]
    if tls:
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    if client_ca:
        args += ["--tls-client-ca", client_ca]
    proc = subprocess.Popen(args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    with selectors.DefaultSelector() as sel:  # it prints one JSON line once it listens
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(timeout) else ""
    if not line:
        stop_process(proc)
        raise HarnessError(f"the region simulator did not start within {timeout}s (exit code {proc.poll()})")
    info = json.loads(line)
    return SimProcess(proc, info["control"], info["regions"])


# -- the router's config ----------------------------------------------------------------------

def toml_value(v) -> str:
    """A TOML literal for a bool, number, string or list of them."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def toml_table(name: str, values: Mapping[str, object]) -> list[str]:
    return [f"[{name}]", *(f"{toml_value(k) if not k.isidentifier() else k} = {toml_value(v)}"
                           for k, v in values.items())]


def router_config(
    ports: Mapping[str, int], *, strategy: str = "geographic", default_region: str = DEFAULT_REGION,
    primary: str | None = DEFAULT_REGION, slow_start: str | None = None,
    listen: str = "127.0.0.1:0", admin: str = "127.0.0.1:0",
    geo_db: str = "", trusted_proxies: Iterable[str] = (), countries: Mapping[str, Iterable[str]] | None = None,
    failover: Mapping[str, Iterable[str]] = FAILOVER, scheme: str = "http", host: str = "127.0.0.1",
    tables: Mapping[str, Mapping[str, object] | None] | None = None,
    region_extra: Mapping[str, Mapping[str, object]] | None = None,
    residency: Iterable[Mapping[str, list[str]]] = (),
) -> str:
    """A router config (TOML) for regions listening on these ports: the one writer of
    configs for the tests and the benches. Defaults: listener and admin on port 0,
    no GeoIP database (every client is a client of default_region), the seed's failover
    order restricted to the regions given. tables: further [section]s in order
    (probe, breaker, limits, log, ...); None or empty ones are left out. A key left
    out takes the router's default: slow_start=None means the router's 30 s."""
    lines = [f"default_region = {toml_value(default_region)}", f"strategy = {toml_value(strategy)}"]
    if slow_start is not None:
        lines.append(f"slow_start = {toml_value(slow_start)}")
    lines += toml_table("listen", {"address": listen}) + toml_table("admin", {"address": admin})
    geo: dict[str, object] = {"database": geo_db}
    if trusted_proxies:
        geo["trusted_proxies"] = list(trusted_proxies)
    lines += toml_table("geo", geo)
    if countries:
        lines += toml_table("geo.countries", {r: list(c) for r, c in countries.items() if r in ports})
    for name, values in (tables or {}).items():
        if values:
            lines += toml_table(name, values)
    for rid, port in ports.items():
        lines += ["[[regions]]", f"id = {toml_value(rid)}"]
        if primary is not None:
            lines.append(f"role = {toml_value('primary' if rid == primary else 'standby')}")
        lines += [
            f"api = {toml_value(f'{scheme}://{host}:{port}')}",
            f"health = {toml_value(f'{scheme}://{host}:{port}/api/v1/health')}",
            f"failover = {toml_value([f for f in failover.get(rid, ()) if f in ports])}",
        ]
        lines += [f"{k} = {toml_value(v)}" for k, v in (region_extra or {}).get(rid, {}).items()]
    for rule in residency:
        lines += ["[[residency]]", f"countries = {toml_value(rule['countries'])}",
                  f"regions = {toml_value(rule['regions'])}"]
    return "\n".join(lines) + "\n"


# -- the router ---------------------------------------------------------------------------------

@dataclass
class RouterProcess:
    """`python -m router serve`; its stderr (the log) and stdout go to files in tmp."""
    proc: subprocess.Popen
    port: int
    admin: int
    log_path: Path
    stdout_path: Path
    tmp: tempfile.TemporaryDirectory = field(repr=False)
    token: str | None = TOKEN

    def get(self, path: str, headers: dict[str, str] | None = None, **kw) -> Response:
        return request(self.port, "GET", path, headers=headers, **kw)

    def req(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            **kw) -> Response:
        return request(self.port, method, path, body, headers, **kw)

    def admin_req(self, method: str, path: str, body: dict | bytes | None = None,
                  token: str | None = TOKEN) -> Response:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        return request(self.admin, method, path, body, headers)

    def state(self) -> dict:
        return request(self.admin, "GET", "/admin/state", timeout=5).json()

    def region_state(self, rid: str) -> dict:
        return next(r for r in self.state()["regions"] if r["id"] == rid)

    def healthy(self, rid: str) -> bool:
        return self.region_state(rid)["healthy"]

    def all_healthy(self) -> bool:
        return all(r["healthy"] for r in self.state()["regions"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        code = stop_process(self.proc, timeout=30)
        self.tmp.cleanup()
        return code


_LISTEN_RE = re.compile(r"listening on .*?:(\d+) \(admin .*?:(\d+)\)")


def start_router(config_text: str, *, env: dict[str, str] | None = None, token: str | None = TOKEN,
                 extra_args: Iterable[str] = (), wait_healthy: bool = True, ports: tuple[int, int] | None = None,
                 prefix: Iterable[str] = (), python: str | None = None, cwd: Path | None = None,
                 timeout: float = 20.0, healthy_timeout: float = 20.0) -> RouterProcess:
    """Start a router with this config and wait until it listens (and, by default, until
    every region is healthy). Its ports come from its own log line ("listening on ...",
    logged at info); a config that names fixed ports and logs only warnings passes
    ports=(listen, admin) instead. python: another interpreter's install (run from cwd,
    say outside the source tree); prefix: a command prefix such as taskset's."""
    tmp = tempfile.TemporaryDirectory(prefix="edge-router-proc-")
    cfg = Path(tmp.name) / "config.toml"
    cfg.write_text(config_text)
    log_path = Path(tmp.name) / "router.log"
    out_path = Path(tmp.name) / "router.out"
    e = {k: v for k, v in os.environ.items() if k != "EDGE_ROUTER_ADMIN_TOKEN"}
    if token:
        e["EDGE_ROUTER_ADMIN_TOKEN"] = token
    e.update(env or {})
    with open(out_path, "wb") as out, open(log_path, "wb") as err:
        proc = subprocess.Popen(
            [*prefix, python or sys.executable, "-m", "router", "serve", "--config", str(cfg), *extra_args],
            cwd=cwd or REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=e,
        )

    def alive() -> None:
        if proc.poll() is not None:
            raise HarnessError(f"router exited {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")

    def listening():
        alive()
        if ports is not None:
            return request(ports[1], "GET", "/admin/state", timeout=1).status == 200 and ports
        m = _LISTEN_RE.search(log_path.read_text(errors="replace"))
        return m and (int(m.group(1)), int(m.group(2)))

    try:
        port, admin = wait_until(listening, timeout, what="the router to listen")
        rp = RouterProcess(proc, port, admin, log_path, out_path, tmp, token)
        if wait_healthy:
            wait_until(lambda: alive() or rp.all_healthy(), healthy_timeout, what="every region healthy")
    except BaseException:
        stop_process(proc)
        tmp.cleanup()
        raise
    return rp
