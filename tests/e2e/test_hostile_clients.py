"""Hostile clients against `python -m router serve`, with small limits in its
config, while a normal client keeps being served: slow head, stalled body,
never reads, endless header, too many connections."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from harness import make_config, request, start_router, start_sim, wait_until

LIMITS = {
    "header_timeout": "1s", "body_timeout": "1s", "send_timeout": "1s", "idle_timeout": "30s",
    "max_header_bytes": 4096, "max_connections": 60, "read_timeout": "5s",
}


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.0, "us-west-2": 0.0})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def router(sim):
    r = start_router(make_config(sim.ports, limits=LIMITS))
    yield r
    assert r.stop() == 0


class NormalClient:
    """Keeps sending GETs on one keep-alive connection; records every answer."""

    def __init__(self, port: int):
        self.port = port
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/api/v1/echo")
                r = conn.getresponse()
                r.read()
                self.statuses.append(r.status)
            except Exception as exc:  # recorded, asserted on
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            time.sleep(0.02)
        conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def read_answer(s: socket.socket, timeout: float = 8.0) -> bytes:
    """Everything until the router closes (bounded)."""
    s.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            b = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def test_hostile_clients_are_cut_while_a_normal_client_is_served(router):
    with NormalClient(router.port) as normal:
        wait_until(lambda: len(normal.statuses) >= 3, 10, what="normal traffic")
        t0 = time.monotonic()
        slow_heads = [connect(router.port) for _ in range(5)]
        for s in slow_heads:
            s.sendall(b"GET /api/v1/echo HTTP/1.1\r\n")
        stalled = [connect(router.port) for _ in range(5)]
        for s in stalled:
            s.sendall(b"PUT /api/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        endless = connect(router.port)
        endless.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        for _ in range(3):  # the slow heads trickle; it does not buy them time
            time.sleep(0.3)
            for s in slow_heads:
                s.sendall(b"X")
        sent = 0
        while sent <= 4096:
            endless.sendall(b"v" * 512)
            sent += 512
        answer = read_answer(endless)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        for s in slow_heads + stalled:
            answer = read_answer(s)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"Connection: close" in answer
        assert time.monotonic() - t0 < 8  # cut at about header/body_timeout, not idle_timeout
        for s in slow_heads + stalled + [endless]:
            s.close()
        n = len(normal.statuses)
        wait_until(lambda: len(normal.statuses) > n + 3, 10, what="normal traffic after")
    assert normal.errors == [] and set(normal.statuses) == {200}
    state = {r["id"]: r for r in router.state()["regions"]}
    assert state["us-east-1"]["breaker"] == "closed" and state["us-east-1"]["error_rate"] == 0.0


def test_a_client_that_never_reads_is_cut_and_frees_the_region(router):
    s = connect(router.port, rcvbuf=4096)
    s.sendall(b"GET /api/v1/large?bytes=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: router.region_state("us-east-1")["in_flight"] == 1, 10, what="download under way")
    # Not reading: the router's buffers fill, then send_timeout cuts the client.
    wait_until(lambda: router.region_state("us-east-1")["in_flight"] == 0, 20, what="region connection freed")
    got = 0
    s.settimeout(5)
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += len(b)
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert got < 200_000_000
    assert router.region_state("us-east-1")["breaker"] == "closed"
    assert request(router.port, "GET", "/api/v1/echo").status == 200


def test_connections_over_the_limit_are_refused_and_the_prober_keeps_working(router):
    held = []
    try:
        refused = None
        for _ in range(LIMITS["max_connections"] + 5):
            s = connect(router.port)
            held.append(s)
            s.settimeout(0.3)
            try:
                data = s.recv(4096)
            except socket.timeout:
                continue  # accepted, idle
            refused = data
            break
        assert refused is not None and refused.startswith(b"HTTP/1.1 503 "), refused
        assert b"Retry-After: 1\r\n" in refused
        metrics = request(router.admin, "GET", "/metrics").body.decode()
        line = next(m for m in metrics.splitlines() if m.startswith("edge_router_connections_refused_total"))
        assert float(line.split()[-1]) >= 1
        time.sleep(1.5)  # probes run meanwhile: the regions stay healthy
        assert all(r["healthy"] for r in router.state()["regions"])
    finally:
        for s in held:
            s.close()
    wait_until(lambda: request(router.port, "GET", "/api/v1/echo").status == 200, 10, what="accepting again")


def test_http_rules_at_the_edge(router):
    from harness import raw

    for data, status in (
        (b"GET /api/v1/echo HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET /api/v1/echo HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
        (b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /api/v1/echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ):
        answer = raw(router.port, data)
        assert answer.startswith(b"HTTP/1.1 %d " % status), (data, answer[:200])
        assert b"Connection: close" in answer
    # absolute-form: its authority is the host the region is told about
    answer = raw(router.port, b"GET http://api.example:8080/api/v1/echo HTTP/1.1\r\nHost: other\r\n"
                              b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    body = answer.split(b"\r\n\r\n", 1)[1].lower()
    assert b"api.example:8080" in body and b'"other"' not in body


def test_clients_that_never_read_lose_their_region_connections_to_waiting_requests(sim):
    """Every pooled connection held by a client that stopped reading: a normal
    request waits about half of pool_wait, then gets one of them (its client
    cut), from its own region, long before send_timeout."""
    from harness import metric_value

    limits = {**LIMITS, "send_timeout": "60s", "pool_size": 2, "pool_wait": "4s", "max_connections": 100}
    r = start_router(make_config(sim.ports, limits=limits))
    hogs = []
    try:
        for _ in range(2):
            s = connect(r.port, rcvbuf=4096)
            s.sendall(b"GET /api/v1/large?bytes=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            hogs.append(s)
        wait_until(lambda: r.region_state("us-east-1")["in_flight"] == 2, 10, what="both downloads under way")
        time.sleep(0.5)  # their buffers fill; they read nothing
        started = time.monotonic()
        answer = request(r.port, "GET", "/api/v1/echo", timeout=10)
        took = time.monotonic() - started
        assert answer.status == 200 and answer.region == "us-east-1", (answer.status, answer.region)
        assert took < 4.0, took  # not after pool_wait, nor at send_timeout
        assert (metric_value(r, "edge_router_stalled_clients_cut_total", region="us-east-1") or 0) >= 1
        assert r.region_state("us-east-1")["breaker"] == "closed"
        assert r.region_state("us-east-1")["error_rate"] == 0.0
    finally:
        for s in hogs:
            s.close()
        assert r.stop() == 0
