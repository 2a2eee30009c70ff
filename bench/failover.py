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
import http.client
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import ClosedLoopLoad

REPO = Path(__file__).resolve().parents[1]
HOME, FAILOVER_TO = "us-east-1", "us-west-2"
LATENCIES = {"us-east-1": "20ms", "us-west-2": "60ms", "eu-west-1": "80ms", "ap-southeast-1": "180ms"}
FAILOVER = {
    "us-east-1": ["us-west-2", "eu-west-1", "ap-southeast-1"],
    "us-west-2": ["us-east-1", "eu-west-1", "ap-southeast-1"],
    "eu-west-1": ["us-east-1", "us-west-2", "ap-southeast-1"],
    "ap-southeast-1": ["us-west-2", "us-east-1", "eu-west-1"],
}
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
def _http(port: int, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Simulator:
    def __init__(self, latencies: dict[str, str] | None = None) -> None:
        args = [sys.executable, "-m", "router.simulator", "--control", "0", "--host", "127.0.0.1"]
        for rid, lat in (latencies or LATENCIES).items():
            args += ["--region", f"{rid}:0:{lat}"]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(20):
            _stop(self.proc)
            raise RuntimeError("region simulator did not start within 20 s")
        info = json.loads(self.proc.stdout.readline())
        self.control: int = info["control"]
        self.ports: dict[str, int] = info["regions"]

    def fault(self, rid: str, **faults) -> None:
        status, body = _http(self.control, "POST", f"/regions/{rid}/fault", faults)
        if status != 200:
            raise RuntimeError(f"fault {rid}: {status} {body!r}")

    def reset(self, rid: str) -> None:
        status, body = _http(self.control, "POST", f"/regions/{rid}/reset", {})
        if status != 200:
            raise RuntimeError(f"reset {rid}: {status} {body!r}")

    def stop(self) -> None:
        _stop(self.proc)


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


def router_config(ports: dict[str, int], sc: Scenario) -> str:
    lines = [
        f"default_region = {toml_value(HOME)}", 'strategy = "geographic"',
        "[listen]", 'address = "127.0.0.1:0"',
        "[admin]", 'address = "127.0.0.1:0"',
        # No GeoIP database: every client is a client of the default region.
        "[geo]", 'database = ""', "[probe]",
    ]
    lines += [f"{k} = {toml_value(v)}" for k, v in sc.probe.items()]
    lines.append("[breaker]")
    lines += [f"{k} = {toml_value(v)}" for k, v in sc.breaker.items()]
    for rid, port in ports.items():
        lines += [
            "[[regions]]", f"id = {toml_value(rid)}",
            f"role = {toml_value('primary' if rid == HOME else 'standby')}",
            f"api = {toml_value(f'http://127.0.0.1:{port}')}",
            f"health = {toml_value(f'http://127.0.0.1:{port}/api/v1/health')}",
            f"failover = {toml_value(FAILOVER[rid])}",
        ]
    return "\n".join(lines) + "\n"


class Router:
    _LISTEN = re.compile(r"listening on .*?:(\d+) \(admin .*?:(\d+)\)")

    def __init__(self, config_text: str, env: dict[str, str] | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="edge-router-failover-")
        cfg = Path(self.tmp.name) / "config.toml"
        cfg.write_text(config_text)
        self.log_path = Path(self.tmp.name) / "router.log"
        env = {**{k: v for k, v in os.environ.items() if k != "EDGE_ROUTER_ADMIN_TOKEN"}, **(env or {})}
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router", "serve", "--config", str(cfg)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env,
            )
        deadline = time.monotonic() + 20
        while True:
            text = self.log_path.read_text(errors="replace")
            m = self._LISTEN.search(text)
            if m:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"router did not start:\n{text}")
            time.sleep(0.05)
        self.port, self.admin = int(m.group(1)), int(m.group(2))

    def state(self) -> dict:
        status, body = _http(self.admin, "GET", "/admin/state", timeout=2)
        return json.loads(body)

    def healthy(self, rid: str):
        return next(r for r in self.state()["regions"] if r["id"] == rid)["healthy"]

    def stop(self) -> None:
        _stop(self.proc)
        self.tmp.cleanup()


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
    sim = Simulator()
    router = None
    load = None
    try:
        router = Router(router_config(sim.ports, sc))
        deadline = time.monotonic() + 20
        while not all(r["healthy"] for r in router.state()["regions"]):
            if time.monotonic() > deadline:
                raise RuntimeError("regions not healthy within 20 s")
            time.sleep(0.05)
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
