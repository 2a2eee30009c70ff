"""Core data plane, from outside: geographic routing, headers, keep-alive,
streaming, malformed requests, all regions down, HTTPS to regions."""
from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from harness import (
    REPO,
    make_config,
    raw,
    request,
    start_router,
    start_sim,
    wait_until,
)


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.0, "us-west-2": 0.0, "eu-west-1": 0.0, "ap-southeast-1": 0.0})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def router(sim):
    r = start_router(make_config(sim.ports, limits={"max_body_bytes": 1 << 30, "read_timeout": "3s"}))
    yield r
    assert r.stop() == 0


def xff(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


@pytest.mark.parametrize(
    "ip,country_region",
    [
        ("81.2.69.142", "eu-west-1"),  # GB (registered in US: country wins)
        ("216.160.83.56", "us-east-1"),  # US (registered in GB)
        ("202.196.224.1", "ap-southeast-1"),  # PH
        ("2001:218::1", "ap-southeast-1"),  # JP, IPv6
        ("2a02:cf40::1", "eu-west-1"),  # NO (Norway stays Norway in TOML)
        ("::ffff:81.2.69.142", "eu-west-1"),  # IPv4-mapped IPv6
        ("67.43.156.1", "us-east-1"),  # BT: not in the map -> default region
        ("10.1.2.3", "us-east-1"),  # private -> no country -> default
        ("1.1.1.1", "us-east-1"),  # not in the test DB -> default
    ],
)
def test_geographic_by_client_address(router, ip, country_region):
    r = router.get("/api/v1/echo", xff(ip))
    assert r.status == 200
    assert r.region == country_region
    assert r.json()["region"] == country_region


def test_untrusted_peer_xff_is_ignored(sim, tmp_path):
    # Only 10.0.0.0/8 is trusted: our 127.0.0.1 peer's XFF must not be believed.
    cfg = make_config(sim.ports).replace('trusted_proxies = ["127.0.0.1/32", "::1/128"]', 'trusted_proxies = ["10.0.0.0/8"]')
    r = start_router(cfg)
    try:
        resp = r.get("/api/v1/echo", xff("81.2.69.142"))
        assert resp.region == "us-east-1"  # 127.0.0.1 has no country -> default
        seen = resp.json()["headers"]
        assert seen["X-Forwarded-For"] == "127.0.0.1"  # the spoofable chain is replaced
    finally:
        r.stop()


def test_xff_walked_right_to_left_skipping_trusted_hops(router):
    # client, then a trusted hop (127.0.0.1) appended by an inner proxy
    r = router.get("/api/v1/echo", xff("81.2.69.142, 127.0.0.1"))
    assert r.region == "eu-west-1"
    # a spoofed left-most entry does not matter: the right-most untrusted one is the client
    r = router.get("/api/v1/echo", xff("81.2.69.142, 216.160.83.56"))
    assert r.region == "us-east-1"


def test_headers_seen_by_region(router):
    r = router.get(
        "/api/v1/echo?x=1",
        {
            "X-Forwarded-For": "81.2.69.142",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "drop me",
            "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "X-Custom": "kept",
            "Host": "api.example.com",
        },
    )
    assert r.status == 200
    seen = {k.lower(): v for k, v in r.json()["headers"].items()}
    for hop in ("connection", "keep-alive", "proxy-connection", "te", "x-secret-hop", "upgrade", "transfer-encoding"):
        assert hop not in seen, hop
    assert seen["x-custom"] == "kept"
    assert seen["x-forwarded-for"] == "81.2.69.142, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "api.example.com"
    assert seen["host"].startswith("127.0.0.1:")  # the region's own host
    rid = r.headers["x-request-id"]
    assert seen["x-request-id"] == rid and len(rid) >= 16
    assert r.json()["query"] == "x=1"


def test_request_id_kept_when_sent(router):
    r = router.get("/api/v1/echo", {"X-Request-Id": "req-42.abc"})
    assert r.headers["x-request-id"] == "req-42.abc"
    assert r.json()["headers"]["X-Request-ID"] == "req-42.abc"


def test_twenty_requests_on_one_keepalive_connection(router, sim):
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=5)
    socks = set()
    try:
        for i in range(20):
            conn.request("GET", f"/api/v1/echo?i={i}", headers=xff("81.2.69.142"))
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 200 and body["query"] == f"i={i}"
            socks.add(id(conn.sock))
            assert resp.getheader("Connection", "").lower() != "close"
    finally:
        conn.close()
    assert len(socks) == 1


def test_pipelined_requests_answered_in_order(router):
    reqs = b"".join(
        b"GET /api/v1/echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)
    ) + b"GET /api/v1/echo?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(router.port, reqs, timeout=5)
    assert out.count(b"HTTP/1.1 200 OK") == 4
    positions = [out.index(b'"query": "n=%d"' % i) for i in range(4)]
    assert positions == sorted(positions)


def test_post_json_and_statuses(router):
    r = router.req("POST", "/api/v1/payments", json.dumps({"amount": 5}).encode(),
                   {"Content-Type": "application/json", **xff("81.2.69.142")})
    assert r.status == 201 and r.json()["region"] == "eu-west-1"
    for code in (204, 304):
        r = router.get(f"/api/v1/status/{code}")
        assert r.status == code and r.body == b""
    r = router.req("HEAD", "/api/v1/echo")
    assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0
    # a keep-alive connection survives HEAD and 204 (no stray body bytes)
    out = raw(router.port, b"HEAD /api/v1/echo HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /api/v1/status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /api/v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.count(b"HTTP/1.1 204") == 1


def test_expect_100_continue(router):
    body = b"x" * 1000
    with socket.create_connection(("127.0.0.1", router.port), timeout=5) as s:
        s.sendall(b"PUT /api/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        first = s.recv(100)
        assert first.startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        data = b""
        while b'"sha256"' not in data:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    assert b"HTTP/1.1 200" in data and hashlib.sha256(body).hexdigest().encode() in data
    # a declared body over the limit is refused before it is sent
    out = raw(router.port, b"PUT /api/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % ((1 << 30) + 1))
    assert out.startswith(b"HTTP/1.1 413") and b"100 Continue" not in out


def test_chunked_upload_and_download(router):
    chunks = [b"a" * 1000, b"b" * 70000, b"c" * 5]
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    conn.request("POST", "/api/v1/upload", body=iter(chunks), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    got = json.loads(r.read())
    conn.close()
    assert got["bytes"] == 71005 and got["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    r = router.get("/api/v1/large?bytes=300000")
    assert r.status == 200 and len(r.body) == 300000
    assert r.body[:4] == bytes([0, 1, 2, 3])
    r = router.get("/api/v1/large?bytes=300000&sized=1")
    assert r.headers["content-length"] == "300000" and len(r.body) == 300000


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_256_mib_up_and_down_memory_flat(router):
    size = 256 * 1024 * 1024
    base = _rss_kib(router.proc.pid)
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_kib(router.proc.pid))
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        # download
        conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=60)
        conn.request("GET", f"/api/v1/large?bytes={size}")
        resp = conn.getresponse()
        n = 0
        while True:
            b = resp.read(1 << 20)
            if not b:
                break
            n += len(b)
        conn.close()
        assert n == size
        # upload (sized), streamed from a generator
        block = b"\x5a" * (1 << 20)
        h = hashlib.sha256()

        def gen():
            for _ in range(size // len(block)):
                h.update(block)
                yield block

        conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=60)
        conn.request("PUT", "/api/v1/upload", body=gen(), headers={"Content-Length": str(size)})
        got = json.loads(conn.getresponse().read())
        conn.close()
        assert got["bytes"] == size and got["sha256"] == h.hexdigest()
    finally:
        stop.set()
        t.join(2)
    # flow control keeps the router's memory flat: far below the 256 MiB moved
    assert peak[0] - base < 48 * 1024, f"RSS grew {peak[0] - base} KiB"


@pytest.mark.parametrize(
    "payload,status",
    [
        # smuggling: both framings
        (b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        # conflicting Content-Length
        (b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400),
        # invalid header name / value
        (b"GET /api/v1/echo HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
        (b"GET /api/v1/echo HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
        # no Host in HTTP/1.1; two Hosts
        (b"GET /api/v1/echo HTTP/1.1\r\n\r\n", 400),
        (b"GET /api/v1/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        # garbage
        (b"HELLO\r\n\r\n", 400),
        # oversized head
        (b"GET /api/v1/echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        # negative / non-numeric Content-Length
        (b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ],
)
def test_malformed_requests_never_reach_a_region(router, sim, payload, status):
    sim.reset_stats()
    out = raw(router.port, payload)
    assert out.startswith(b"HTTP/1.1 %d" % status), out[:200]
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"application/json" in head and b'"error"' in body
    for rid in sim.ports:
        st = sim.stats(rid)
        assert st["requests"] - st["by_path"].get("/api/v1/health", 0) == 0, (rid, st["by_path"])


def test_body_over_limit_is_413(sim):
    r = start_router(make_config(sim.ports, limits={"max_body_bytes": 1000}))
    try:
        resp = r.req("POST", "/api/v1/upload", b"x" * 1001)
        assert resp.status == 413 and resp.json()["error"] == "body_too_large"
        # chunked, no declared length: refused once the limit is crossed
        out = raw(r.port, b"POST /api/v1/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3e8\r\n" + b"y" * 1000 + b"\r\n5\r\nzzzzz\r\n0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 413")
    finally:
        r.stop()


def test_every_region_down_is_503_json(sim):
    s2 = start_sim({"us-east-1": 0.0, "eu-west-1": 0.0})
    r = start_router(make_config(s2.ports))
    try:
        for rid in s2.ports:
            s2.fault(rid, down=True)
        resp = r.get("/api/v1/echo", xff("81.2.69.142"))
        assert resp.status == 503
        body = resp.json()
        assert body["error"] == "no_region" and "eu-west-1" in body["detail"]
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["x-request-id"] and resp.region == "none"
        for rid in s2.ports:
            s2.reset(rid)
        wait_until(lambda: r.get("/api/v1/echo", xff("81.2.69.142")).status == 200, 15, what="recovery")
    finally:
        r.stop()
        s2.stop()


def test_upstream_timeout_is_504_and_post_not_retried(sim):
    s2 = start_sim({"us-east-1": 0.0, "us-west-2": 0.0})
    r = start_router(make_config(s2.ports, limits={"read_timeout": "500ms"}))
    try:
        s2.fault("us-east-1", hang=True)
        resp = r.req("POST", "/api/v1/payments", b'{"amount": 1}', {"Content-Type": "application/json"})
        assert resp.status == 504 and resp.json()["error"] == "upstream_timeout"
        assert s2.stats("us-west-2")["requests"] - s2.stats("us-west-2")["by_path"].get("/api/v1/health", 0) == 0
    finally:
        r.stop()
        s2.stop()


# -- HTTPS to regions ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_material(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    other = trustme.CA()
    other.cert_pem.write_to_path(str(d / "wrong-ca.pem"))
    # a client certificate for mutual TLS to the regions
    client_ca = trustme.CA()
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    client = client_ca.issue_cert("edge-router.example")
    client.cert_chain_pems[0].write_to_path(str(d / "client.crt"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    return d


def test_https_regions_verify_certificates(tls_material):
    d = tls_material
    s2 = start_sim({"us-east-1": 0.0, "eu-west-1": 0.0}, tls=(str(d / "server.pem"), str(d / "server.pem")))
    try:
        good = make_config(s2.ports, scheme="https", host="localhost",
                           region_extra={rid: {"tls_ca": str(d / "ca.pem")} for rid in s2.ports})
        r = start_router(good)
        try:
            resp = r.get("/api/v1/echo", xff("81.2.69.142"))
            assert resp.status == 200 and resp.region == "eu-west-1"
            assert resp.json()["scheme"] == "https"
        finally:
            r.stop()
        s2.reset_stats()
        bad = make_config(s2.ports, scheme="https", host="localhost",
                          region_extra={rid: {"tls_ca": str(d / "wrong-ca.pem")} for rid in s2.ports})
        r = start_router(bad, wait_healthy=False)
        try:
            resp = r.get("/api/v1/echo", xff("81.2.69.142"))
            # never a downgrade: a certificate that does not verify is a failed connection
            assert resp.status == 503
            assert "certificate" in resp.json()["detail"]
            for rid in s2.ports:
                assert s2.stats(rid)["by_path"].get("/api/v1/echo", 0) == 0
        finally:
            r.stop()
    finally:
        s2.stop()


def test_mutual_tls_to_regions(tls_material):
    d = tls_material
    s2 = start_sim({"us-east-1": 0.0}, tls=(str(d / "server.pem"), str(d / "server.pem")),
                   client_ca=str(d / "client-ca.pem"))
    try:
        extra = {"tls_ca": str(d / "ca.pem"), "tls_cert": str(d / "client.crt"), "tls_key": str(d / "client.key")}
        r = start_router(make_config(s2.ports, scheme="https", host="localhost", region_extra={"us-east-1": extra}))
        try:
            resp = r.get("/api/v1/echo")
            assert resp.status == 200 and resp.region == "us-east-1"
        finally:
            r.stop()
        # without the client certificate the region refuses the handshake
        no_cert = {"tls_ca": str(d / "ca.pem")}
        r = start_router(make_config(s2.ports, scheme="https", host="localhost", region_extra={"us-east-1": no_cert}),
                         wait_healthy=False)
        try:
            resp = r.get("/api/v1/echo")
            assert resp.status in (502, 503), (resp.status, resp.body)
        finally:
            r.stop()
    finally:
        s2.stop()


# -- commands -------------------------------------------------------------------------

def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_check_config_valid_and_broken(tmp_path, sim):
    good = tmp_path / "good.toml"
    good.write_text(make_config(sim.ports))
    p = run_cli("check-config", str(good))
    assert p.returncode == 0, p.stderr
    assert "eu-west-1" in p.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(make_config(sim.ports).replace('interval = "1s"', 'interval = "1 s"')
                   .replace('["us-east-1", "us-west-2", "ap-southeast-1"]', '["eu-west-9"]')
                   + '\nbogus_key = 1\n')
    p = run_cli("check-config", str(bad))
    assert p.returncode == 2
    assert "probe.interval" in p.stderr and "eu-west-9" in p.stderr and "bogus_key" in p.stderr


def test_serve_refuses_broken_config_and_missing_db(tmp_path, sim):
    bad = tmp_path / "bad.toml"
    bad.write_text(make_config(sim.ports).replace('default_region = "us-east-1"', 'default_region = "mars-1"'))
    p = run_cli("serve", "--config", str(bad))
    assert p.returncode == 2 and "default_region" in p.stderr
    nodb = tmp_path / "nodb.toml"
    nodb.write_text(make_config(sim.ports, geo_db=str(tmp_path / "missing.mmdb")))
    p = run_cli("serve", "--config", str(nodb))
    assert p.returncode != 0 and "missing.mmdb" in p.stderr


def test_geo_command():
    db = str(REPO / "tests" / "data" / "geo" / "GeoLite2-Country-Test.mmdb")
    p = run_cli("geo", "81.2.69.142", "--db", db)
    assert p.returncode == 0 and "GB" in p.stdout and "eu-west-1" in p.stdout
    p = run_cli("geo", "2001:218::1", "--db", db)
    assert "JP" in p.stdout and "ap-southeast-1" in p.stdout
    p = run_cli("geo", "10.0.0.1", "--db", db)
    assert "us-east-1" in p.stdout and "default" in p.stdout
    p = run_cli("geo", "not-an-ip", "--db", db)
    assert p.returncode == 2


def test_damaged_geo_db_does_not_fail_requests(sim):
    db = str(REPO / "tests" / "data" / "geo" / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    r = start_router(make_config(sim.ports, geo_db=db))
    try:
        for _ in range(3):
            resp = r.get("/api/v1/echo", xff("2001:220::1"))
            assert resp.status == 200 and resp.region == "us-east-1"
        metrics = request(r.admin, "GET", "/metrics").body.decode()
        assert "edge_router_geoip_errors_total" in metrics
    finally:
        r.stop()


def test_demo_starts_serves_and_stops_on_ctrl_c():
    from harness import free_port

    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "demo", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []

    def reader():
        for line in proc.stdout:
            lines.append(line)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        wait_until(lambda: any("curl" in ln for ln in lines), 20, what="demo banner")
        wait_until(lambda: request(admin, "GET", "/readyz").status == 200, 15, what="demo ready")
        curls = [ln for ln in lines if "curl" in ln and "X-Forwarded-For: " in ln]
        regions = set()
        for ln in curls:
            ip = ln.split("X-Forwarded-For: ")[1].split("'")[0]
            country, expected = ln.rsplit("# ", 1)[1].split(":")[-1].strip().split(" -> ")
            resp = request(port, "GET", "/api/v1/echo", headers={"X-Forwarded-For": ip})
            assert resp.status == 200 and resp.region == expected
            assert resp.headers["x-edge-country"] == country  # the demo turns the header on
            regions.add(expected)
        # Every region, us-west-2 (a standby in the seed map) included.
        assert regions == {"us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"}
        assert any(ln.startswith("  curl") and "# restore it" in ln for ln in lines)
        # The demo logs each request (the access log, one JSON object per line).
        wait_until(lambda: any(ln.startswith('{"time":') and '"request_id"' in ln for ln in lines),
                   10, what="access log line")
    finally:
        import signal as _signal

        proc.send_signal(_signal.SIGINT)
        code = proc.wait(20)
    assert code == 0
    assert any("stopped" in ln for ln in lines)


def test_pool_is_bounded_and_requests_wait_for_a_connection():
    s2 = start_sim({"us-east-1": 0.1})
    r = start_router(make_config(s2.ports, limits={"pool_size": 2, "pool_wait": "5s"}))
    try:
        results = []

        def one():
            results.append(r.get("/api/v1/echo").status)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == [200] * 8
        conns = r.region_state("us-east-1")["connections"]
        assert conns["open"] <= 2 and conns["opened_total"] <= 2
    finally:
        r.stop()
        s2.stop()


def test_tls_termination_on_listener(sim, tls_material):
    import ssl

    d = tls_material
    cfg = make_config(sim.ports).replace(
        '[listen]\naddress = "127.0.0.1:0"',
        f'[listen]\naddress = "127.0.0.1:0"\ntls_cert = "{d / "server.pem"}"\ntls_key = "{d / "server.pem"}"',
    )
    r = start_router(cfg)
    try:
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        conn = http.client.HTTPSConnection("localhost", r.port, context=ctx, timeout=5)
        conn.request("GET", "/api/v1/echo", headers=xff("81.2.69.142"))
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and resp.getheader("X-Edge-Region") == "eu-west-1"
        assert body["headers"]["X-Forwarded-Proto"] == "https"
    finally:
        r.stop()


def test_access_log_lines(sim):
    r = start_router(make_config(sim.ports, log={"access_log": True}))
    try:
        r.get("/api/v1/echo?q=1", {"X-Forwarded-For": "81.2.69.142", "X-Request-Id": "acc-1"})
        def line():
            for ln in r.stdout_path.read_text().splitlines():
                rec = json.loads(ln)
                if rec["request_id"] == "acc-1":
                    return rec
        rec = wait_until(line, 5, what="access log line")
        assert rec["country"] == "GB" and rec["region"] == "eu-west-1" and rec["status"] == 200
        assert rec["strategy"] == "geographic" and rec["attempts"] == 1 and rec["duration_ms"] > 0
    finally:
        r.stop()


def test_client_leaving_mid_request_frees_everything():
    s2 = start_sim({"us-east-1": 0.0})
    r = start_router(make_config(s2.ports, limits={"pool_size": 4}))
    try:
        s2.fault("us-east-1", extra_latency="1s")
        for _ in range(6):  # more than the pool holds: leaked connections would show
            with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
                s.sendall(b"GET /api/v1/echo HTTP/1.1\r\nHost: x\r\n\r\n")
                wait_until(lambda: r.region_state("us-east-1")["in_flight"] == 1, 5, what="in flight")
        wait_until(lambda: r.region_state("us-east-1")["in_flight"] == 0, 5, what="in_flight back to 0")
        s2.reset("us-east-1")
        st = r.region_state("us-east-1")
        assert st["breaker"] == "closed" and st["connections"]["open"] <= 4
        resp = r.get("/api/v1/echo")
        assert resp.status == 200
    finally:
        r.stop()
        s2.stop()


def test_port_in_use_is_a_clear_error(tmp_path, sim):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text(make_config(sim.ports))
        p = run_cli("serve", "--config", str(cfg), "--listen", f"127.0.0.1:{busy.getsockname()[1]}")
        assert p.returncode == 1 and "address already in use" in p.stderr and "Traceback" not in p.stderr
    finally:
        busy.close()
