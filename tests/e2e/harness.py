"""End-to-end harness: what the tests add to bench/harness.py (the one process
harness of the tests and the benches): the tests' config defaults, raw sockets,
background traffic, metric samples. Every wait is bounded."""
from __future__ import annotations

import socket
import threading
import time

from geodata.countries import SEED_COUNTRIES

from bench.harness import (  # noqa: F401  (re-exported for the tests)
    GEO_TEST_DB, REGIONS, REPO, TOKEN, free_port,
    request, router_config, start_router, start_sim, stop_process, toml_value, wait_until,
)

toml_str = toml_value


def make_config(
    ports: dict[str, int], *, strategy: str = "geographic", geo_db: str | None = None,
    scheme: str = "http", probe: dict | None = None, breaker: dict | None = None,
    limits: dict | None = None, residency: list[dict] | None = None, region_extra: dict | None = None,
    log: dict | None = None, host: str = "127.0.0.1", least_latency: dict | None = None,
    slow_start: str = "0s", degrade: dict | None = None,
) -> str:
    """A router config for the simulator's regions with the tests' defaults: the MaxMind
    test database, loopback trusted for X-Forwarded-For, a fast probe cadence. Slow
    start is off unless asked for: a region coming back takes its whole share at once,
    as the tests written before slow start expect."""
    probe = {"interval": "1s", "timeout": "500ms", "fall": 2, "rise": 2, "latency_interval": "1s",
             "fast_interval": "200ms", "down_interval": "300ms", **(probe or {})}
    return router_config(
        ports, strategy=strategy, slow_start=slow_start, geo_db=geo_db or str(GEO_TEST_DB),
        trusted_proxies=["127.0.0.1/32", "::1/128"], countries=SEED_COUNTRIES, scheme=scheme, host=host,
        tables={"probe": probe, "breaker": breaker, "limits": limits, "log": log,
                "least_latency": least_latency, "degrade": degrade},
        region_extra=region_extra, residency=residency or (),
    )


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
