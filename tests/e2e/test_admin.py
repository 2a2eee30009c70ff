"""Issue 4, checked from outside: the admin API, runtime strategy switching,
drains, metrics, audit lines, explain and SIGTERM, against real processes."""
from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REGIONS, TOKEN, make_config, request, start_router, start_sim, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(60)

GB = "81.2.69.142"  # -> eu-west-1
DE = "2a02:d180::1"  # -> eu-west-1, and only there (residency)
API = "/api/v1/echo"
NAMES = ("geographic", "least-latency", "health-based", "round-robin")
SPEC_REGION_FIELDS = {
    "id": str, "healthy": (bool, type(None)), "breaker": str, "latency_ms": (float, int, type(None)),
    "error_rate": (float, int), "weight": (float, int), "effective_weight": (float, int),
    "disabled": bool, "draining": bool, "in_flight": int,
}


def client(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


@pytest.fixture(scope="module")
def sim():
    s = start_sim({r: 0.002 for r in REGIONS})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rp(sim):
    r = start_router(make_config(sim.ports, residency=[{"countries": ["DE", "FR"], "regions": ["eu-west-1"]}]))
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def clean(sim, rp):
    """Each test starts from the config's decisions: geographic, all enabled."""
    yield
    for rid in REGIONS:
        sim.reset(rid)
        assert rp.admin_req("POST", f"/admin/regions/{rid}/enable").status == 200
    assert rp.admin_req("PUT", "/admin/strategy", {"strategy": "geographic"}).status == 200


def audit_lines(rp) -> list[dict]:
    out = []
    for line in rp.log().splitlines():
        if line.startswith("{") and '"audit"' in line:
            out.append(json.loads(line))
    return out


def metric_families(rp) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    r = request(rp.admin, "GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.body.decode())}


# ---------------------------------------------------------------------------------------
def test_healthz_and_readyz(rp):
    r = request(rp.admin, "GET", "/healthz")
    assert r.status == 200
    r = request(rp.admin, "GET", "/readyz")
    assert r.status == 200, r.body
    # Disabling the last enabled region is refused (409 naming the regions) ...
    for rid in REGIONS[:-1]:
        assert rp.admin_req("POST", f"/admin/regions/{rid}/disable").status == 200
    r = rp.admin_req("POST", f"/admin/regions/{REGIONS[-1]}/disable")
    assert r.status == 409 and r.json()["error"] == "conflict", r.body
    assert set(r.json()["regions"]) == set(REGIONS) and "force" in r.json()["detail"]
    r = rp.admin_req("POST", f"/admin/regions/{REGIONS[-1]}/drain", {"over": "1s"})
    assert r.status == 409
    assert request(rp.admin, "GET", "/readyz").status == 200
    # ... unless forced. No region available at all: not ready, but alive.
    r = rp.admin_req("POST", f"/admin/regions/{REGIONS[-1]}/disable", {"force": True})
    assert r.status == 200 and r.json()["force"] is True
    assert audit_lines(rp)[-1]["args"] == {"region": REGIONS[-1], "force": True}
    assert request(rp.admin, "GET", "/readyz").status == 503
    assert request(rp.admin, "GET", "/healthz").status == 200
    assert rp.state()["panic"] is False  # an operator's decision, not a prober failure
    r = rp.get(API, headers=client(GB))
    assert r.status == 503 and r.json()["error"] == "no_region" and "disabled" in r.json()["detail"]
    assert rp.admin_req("POST", "/admin/regions/ap-southeast-1/enable").status == 200
    assert request(rp.admin, "GET", "/readyz").status == 200


def test_state_shape(rp):
    st = rp.state()
    assert st["strategy"] == "geographic"
    assert [r["id"] for r in st["regions"]] == list(REGIONS)
    for r in st["regions"]:
        for name, kind in SPEC_REGION_FIELDS.items():
            assert name in r, (name, r)
            assert isinstance(r[name], kind) and not (kind is int and isinstance(r[name], bool)), (name, r)
        assert r["breaker"] in ("closed", "half-open", "open")
        assert r["healthy"] is True and r["breaker"] == "closed"
        assert r["weight"] == 1.0 and r["effective_weight"] == 1.0
        assert r["disabled"] is False and r["draining"] is False
        assert r["in_flight"] == 0 and 0.0 <= r["error_rate"] <= 1.0
        assert r["latency_ms"] is not None and r["latency_ms"] > 0
    # The same document, read twice, only differs in live numbers.
    assert json.loads(request(rp.admin, "GET", "/admin/state").body)["regions"][0]["id"] == "us-east-1"


def test_mutations_need_the_bearer_token(rp):
    before = len(audit_lines(rp))
    cases = [
        ("PUT", "/admin/strategy", {"strategy": "round-robin"}),
        ("POST", "/admin/regions/eu-west-1/drain", {"over": "5s"}),
        ("POST", "/admin/regions/eu-west-1/disable", None),
        ("POST", "/admin/regions/eu-west-1/enable", None),
    ]
    for method, path, body in cases:
        for token in (None, "wrong-token", TOKEN + "x", TOKEN[:-1]):
            r = rp.admin_req(method, path, body, token=token)
            assert r.status == 401, (method, path, token, r.status, r.body)
            assert r.json()["error"] == "unauthorized"
            assert "bearer" in r.headers.get("www-authenticate", "").lower()
        # Not a bearer scheme at all.
        r = request(rp.admin, method, path, json.dumps(body).encode() if body else None,
                    {"Authorization": f"Basic {TOKEN}"})
        assert r.status == 401
    st = rp.state()
    assert st["strategy"] == "geographic"
    assert not any(r["disabled"] or r["draining"] for r in st["regions"])
    assert len(audit_lines(rp)) == before  # refused calls change nothing


def test_bad_requests_name_the_problem(rp):
    r = rp.admin_req("PUT", "/admin/strategy", {"strategy": "fastest"})
    assert r.status == 400
    body = r.json()
    assert body["error"] and body["detail"]
    for name in NAMES:
        assert name in body["detail"], body
    # Malformed bodies: the field is named.
    r = rp.admin_req("PUT", "/admin/strategy", {"strat": "round-robin"})
    assert r.status == 400 and "strategy" in r.json()["detail"] and r.json().get("field") == "strategy", r.body
    r = rp.admin_req("PUT", "/admin/strategy", {"strategy": 7})
    assert r.status == 400 and r.json().get("field") == "strategy", r.body
    r = rp.admin_req("PUT", "/admin/strategy", b"{not json")
    assert r.status == 400 and r.json().get("field") == "body", r.body
    r = rp.admin_req("PUT", "/admin/strategy", b'["round-robin"]')
    assert r.status == 400 and r.json().get("field") == "body", r.body
    r = rp.admin_req("POST", "/admin/regions/eu-west-1/drain", {"over": 60})
    assert r.status == 400 and "over" in r.json()["detail"] and r.json().get("field") == "over", r.body
    r = rp.admin_req("POST", "/admin/regions/eu-west-1/drain", {"over": "soon"})
    assert r.status == 400 and r.json().get("field") == "over", r.body
    # Unknown region.
    for action in ("drain", "disable", "enable"):
        r = rp.admin_req("POST", f"/admin/regions/mars-north-1/{action}", {"over": "5s"} if action == "drain" else None)
        assert r.status == 404 and "mars-north-1" in r.json()["detail"], (action, r.status, r.body)
    st = rp.state()
    assert st["strategy"] == "geographic" and not any(r["disabled"] or r["draining"] for r in st["regions"])


def test_strategy_switch_at_runtime_in_the_same_process(rp, sim):
    pid = rp.proc.pid
    conn = http.client.HTTPConnection("127.0.0.1", rp.port, timeout=10)  # one keep-alive connection

    def get() -> str:
        conn.request("GET", API, headers=client(GB))
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        return r.getheader("X-Edge-Region")

    try:
        assert Counter(get() for _ in range(40)) == {"eu-west-1": 40}
        r = rp.admin_req("PUT", "/admin/strategy", {"strategy": "round-robin"})
        assert r.status == 200 and r.json()["strategy"] == "round-robin", r.body
        assert rp.state()["strategy"] == "round-robin"
        # Right after the PUT, on the same client connection: an even split.
        got = Counter(get() for _ in range(40))
        assert got == {rid: 10 for rid in REGIONS}, got
    finally:
        conn.close()
    assert rp.proc.poll() is None and rp.proc.pid == pid
    fams = metric_families(rp)
    info = {s.labels["strategy"]: s.value for s in fams["edge_router_strategy_info"].samples}
    assert info == {"round-robin": 1.0}, info


def test_disable_and_enable(rp, sim):
    assert rp.get(API, headers=client(GB)).region == "eu-west-1"
    r = rp.admin_req("POST", "/admin/regions/eu-west-1/disable")
    assert r.status == 200, r.body
    st = rp.region_state("eu-west-1")
    assert st["disabled"] is True and st["effective_weight"] == 0.0
    sim.reset_stats("eu-west-1")
    regions = Counter(rp.get(API, headers=client(GB)).region for _ in range(20))
    assert regions == {"us-east-1": 20}, regions  # at once, to its failover region
    assert sim.stats("eu-west-1")["by_path"].get(API, 0) == 0
    # Residency: DE may only use eu-west-1, which is disabled.
    r = rp.get(API, headers=client(DE))
    assert r.status == 503 and r.json()["error"] == "residency"
    r = rp.admin_req("POST", "/admin/regions/eu-west-1/enable")
    assert r.status == 200, r.body
    st = rp.region_state("eu-west-1")
    assert st["disabled"] is False and st["effective_weight"] == 1.0
    assert Counter(rp.get(API, headers=client(GB)).region for _ in range(20)) == {"eu-west-1": 20}
    assert rp.get(API, headers=client(DE)).region == "eu-west-1"


def test_drain_share_falls_gradually_to_zero(rp):
    results: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", rp.port, timeout=10)
        try:
            while not stop.is_set():
                conn.request("GET", API, headers=client(GB))
                r = conn.getresponse()
                r.read()
                assert r.status == 200
                with lock:
                    results.append((time.monotonic(), r.getheader("X-Edge-Region")))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) > 50, 10, what="warm-up")
        t0 = time.monotonic()
        r = rp.admin_req("POST", "/admin/regions/eu-west-1/drain", {"over": "3s"})
        assert r.status == 200, r.body
        weights = []
        while time.monotonic() - t0 < 4.5:
            st = rp.region_state("eu-west-1")
            assert st["draining"] is True
            weights.append(st["effective_weight"])
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    # effective_weight: 1 -> 0, never up again, through values in between.
    assert all(a >= b for a, b in zip(weights, weights[1:])), weights
    assert weights[-1] == 0.0 and weights[0] > 0.8, weights
    assert len({w for w in weights if 0.05 < w < 0.95}) >= 3, weights
    # The traffic share follows, second by second.
    share = []
    for lo in (0.0, 1.0, 2.0, 3.5):
        hi = lo + (1.0 if lo < 3 else 1.0)
        window = [reg for t, reg in results if t0 + lo <= t < t0 + hi]
        assert len(window) > 20, (lo, len(window))
        share.append(sum(reg == "eu-west-1" for reg in window) / len(window))
        assert set(window) <= {"eu-west-1", "us-east-1"}, Counter(window)  # its failover region
    assert share[0] > 0.65 and 0.2 < share[1] < 0.8 and share[2] < 0.45 and share[3] == 0.0, share
    assert share[0] > share[1] > share[2], share
    # Enable brings it back at once.
    assert rp.admin_req("POST", "/admin/regions/eu-west-1/enable").status == 200
    assert rp.region_state("eu-west-1")["effective_weight"] == 1.0
    assert rp.get(API, headers=client(GB)).region == "eu-west-1"


def test_drain_under_round_robin_follows_effective_weight(rp):
    """Round-robin schedules by effective_weight: the drained region's share is
    w/(sum w), not thinned a second time, and nothing spills onto one neighbour."""
    assert rp.admin_req("PUT", "/admin/strategy", {"strategy": "round-robin"}).status == 200
    assert rp.admin_req("POST", "/admin/regions/eu-west-1/drain", {"over": "8s"}).status == 200
    wait_until(lambda: rp.region_state("eu-west-1")["effective_weight"] < 0.75, 8, what="drain under way")
    w0 = rp.region_state("eu-west-1")["effective_weight"]
    conn = http.client.HTTPConnection("127.0.0.1", rp.port, timeout=10)
    got: Counter = Counter()
    try:
        for _ in range(300):
            conn.request("GET", API)
            r = conn.getresponse()
            r.read()
            got[r.getheader("X-Edge-Region")] += 1
    finally:
        conn.close()
    w1 = rp.region_state("eu-west-1")["effective_weight"]
    assert 0.1 < w1 <= w0, (w0, w1)
    share = got["eu-west-1"] / 300
    assert w1 / (3 + w1) - 0.04 < share < w0 / (3 + w0) + 0.04, (share, w0, w1, got)
    others = [got[rid] for rid in REGIONS if rid != "eu-west-1"]
    assert max(others) - min(others) <= 0.05 * 300, got


SPEC_METRICS = {
    # family name as the parser reports it -> (type, sample name, labels)
    "edge_router_requests": ("counter", "edge_router_requests_total", {"region", "code", "strategy"}),
    "edge_router_upstream_latency_seconds": ("histogram", "edge_router_upstream_latency_seconds_bucket", {"region", "le"}),
    "edge_router_request_duration_seconds": ("histogram", "edge_router_request_duration_seconds_bucket", {"region", "le"}),
    "edge_router_region_healthy": ("gauge", "edge_router_region_healthy", {"region"}),
    "edge_router_probe_latency_seconds": ("gauge", "edge_router_probe_latency_seconds", {"region"}),
    "edge_router_circuit_state": ("gauge", "edge_router_circuit_state", {"region"}),
    "edge_router_failovers": ("counter", "edge_router_failovers_total", {"from_region", "to_region", "reason"}),
    "edge_router_strategy_info": ("gauge", "edge_router_strategy_info", {"strategy"}),
    "edge_router_requests_in_flight": ("gauge", "edge_router_requests_in_flight", {"region"}),
    "edge_router_residency_refusals": ("counter", "edge_router_residency_refusals_total", {"country"}),
}


def test_metrics_every_spec_name_and_label(rp):
    for _ in range(5):
        assert rp.get(API, headers=client(GB)).status == 200
    assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
    assert rp.get(API, headers=client(GB)).region == "us-east-1"  # a failover
    assert rp.get(API, headers=client(DE)).status == 503  # a residency refusal
    assert rp.admin_req("POST", "/admin/regions/eu-west-1/enable").status == 200

    fams = metric_families(rp)
    for fam_name, (kind, sample, labels) in SPEC_METRICS.items():
        assert fam_name in fams, fam_name
        fam = fams[fam_name]
        assert fam.type == kind, (fam_name, fam.type)
        samples = [s for s in fam.samples if s.name == sample]
        assert samples, (fam_name, [s.name for s in fam.samples])
        for s in samples:
            assert set(s.labels) == labels, (sample, s.labels)

    def samples(name):
        fam_name = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
        return [s for s in fams[fam_name].samples if s.name == name]

    by_region = {s.labels["region"] for s in samples("edge_router_region_healthy")}
    assert by_region == set(REGIONS)
    for name in ("edge_router_region_healthy", "edge_router_circuit_state", "edge_router_probe_latency_seconds",
                 "edge_router_requests_in_flight"):
        assert {s.labels["region"] for s in samples(name)} == set(REGIONS), name
    assert all(s.value == 1 for s in samples("edge_router_region_healthy"))
    assert all(s.value == 0 for s in samples("edge_router_circuit_state"))
    assert all(0 < s.value < 1 for s in samples("edge_router_probe_latency_seconds"))
    ok = [s for s in samples("edge_router_requests_total")
          if s.labels == {"region": "eu-west-1", "code": "2xx", "strategy": "geographic"}]
    assert ok and ok[0].value >= 5
    assert {s.labels["code"] for s in samples("edge_router_requests_total")} <= {"2xx", "3xx", "4xx", "5xx"}
    fo = [s for s in samples("edge_router_failovers_total")
          if s.labels == {"from_region": "eu-west-1", "to_region": "us-east-1", "reason": "disabled"}]
    assert fo and fo[0].value >= 1
    assert [s.value for s in samples("edge_router_residency_refusals_total") if s.labels["country"] == "DE"][0] >= 1
    assert {s.labels["strategy"]: s.value for s in samples("edge_router_strategy_info")} == {"geographic": 1.0}
    # Buckets fit inter-region latencies: 1 ms to 10 s.
    les = {float(s.labels["le"]) for s in samples("edge_router_upstream_latency_seconds_bucket")}
    assert min(les) <= 0.001 and 10.0 in les and float("inf") in les
    count = [s for s in samples("edge_router_upstream_latency_seconds_count") if s.labels["region"] == "eu-west-1"]
    assert count[0].value >= 5


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_metrics_pass_promtool(rp):
    rp.get(API, headers=client(GB))
    text = request(rp.admin, "GET", "/metrics").body.decode()
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (p.stdout + p.stderr).strip(), p.stdout + p.stderr  # not even a lint warning


def test_audit_line_per_mutation_without_the_token(rp):
    before = len(audit_lines(rp))
    done = [
        ("set_strategy", rp.admin_req("PUT", "/admin/strategy", {"strategy": "health-based"})),
        ("drain", rp.admin_req("POST", "/admin/regions/us-west-2/drain", {"over": "30s"})),
        ("disable", rp.admin_req("POST", "/admin/regions/ap-southeast-1/disable")),
        ("enable", rp.admin_req("POST", "/admin/regions/ap-southeast-1/enable")),
        ("enable", rp.admin_req("POST", "/admin/regions/us-west-2/enable")),
    ]
    assert all(r.status == 200 for _, r in done), [(a, r.status, r.body) for a, r in done]
    wait_until(lambda: len(audit_lines(rp)) >= before + len(done), 5, what="audit lines")
    lines = audit_lines(rp)[before:]
    assert [line["action"] for line in lines] == [a for a, _ in done], lines
    fingerprints = {line["token"] for line in lines}
    assert len(fingerprints) == 1 and fingerprints != {""}, fingerprints
    for line in lines:
        assert line["time"] and line["source"] == "127.0.0.1" and isinstance(line["args"], dict), line
    assert lines[0]["args"]["strategy"] == "health-based"
    assert lines[1]["args"] == {"region": "us-west-2", "over": "30s"}
    assert lines[2]["args"] == {"region": "ap-southeast-1"}
    log = rp.log()
    assert TOKEN not in log and TOKEN[:12] not in log  # never the token, nor a prefix of it


def test_route_explains_candidates_and_skip_reasons(rp):
    r = rp.admin_req("GET", f"/admin/route?ip={GB}")
    assert r.status == 200, r.body
    ex = r.json()
    assert ex["strategy"] == "geographic" and ex["country"] == "GB" and ex["chosen"] == "eu-west-1"
    assert [c["region"] for c in ex["candidates"]] == ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"]

    assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
    assert rp.admin_req("POST", "/admin/regions/us-east-1/drain", {"over": "1h"}).status == 200
    ex = rp.admin_req("GET", f"/admin/route?ip={GB}").json()
    cands = {c["region"]: c for c in ex["candidates"]}
    assert [c["region"] for c in ex["candidates"]][0] == "eu-west-1"
    assert cands["eu-west-1"]["usable"] is False and cands["eu-west-1"]["reason"] == "disabled", cands
    assert cands["us-east-1"]["usable"] is True and cands["us-east-1"].get("admits", 1) <= 1
    assert ex["chosen"] == "us-east-1"
    # The explanation matches what the data plane does.
    assert rp.get(API, headers=client(GB)).region == "us-east-1"
    # Residency shows up as a reason, and the answer says what would happen.
    ex = rp.admin_req("GET", "/admin/route?country=DE").json()
    assert ex["residency"] == ["eu-west-1"] and ex["chosen"] is None and "residency" in ex["answer"], ex
    assert {c["region"]: c["reason"] for c in ex["candidates"]}["us-east-1"] == "residency"
    # Bad queries.
    assert rp.admin_req("GET", "/admin/route?ip=not-an-ip").status == 400
    assert rp.admin_req("GET", "/admin/route").status == 400


def test_no_token_means_403_and_sigterm_drains_in_flight_requests(sim):
    rp = start_router(make_config(sim.ports), token=None)
    try:
        r = rp.admin_req("PUT", "/admin/strategy", {"strategy": "round-robin"}, token=TOKEN)
        assert r.status == 403, r.body
        assert "EDGE_ROUTER_ADMIN_TOKEN" in r.json()["detail"]
        assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable", token=None).status == 403
        assert rp.state()["strategy"] == "geographic"
        assert request(rp.admin, "GET", "/readyz").status == 200

        sim.fault("eu-west-1", extra_latency="1s")
        slow: list = []
        t = threading.Thread(target=lambda: slow.append(rp.get(API, headers=client(GB), timeout=10)), daemon=True)
        t.start()
        wait_until(lambda: rp.region_state("eu-west-1")["in_flight"] == 1, 5, interval=0.01, what="slow request in flight")
        rp.proc.send_signal(signal.SIGTERM)
        # Readiness turns 503 first, while the slow request is still in flight.
        wait_until(lambda: request(rp.admin, "GET", "/readyz", timeout=1).status == 503, 1.5, interval=0.02,
                   what="readyz 503")
        assert not slow
        assert rp.proc.wait(15) == 0
        t.join(5)
        assert slow and slow[0].status == 200 and slow[0].region == "eu-west-1", slow
        # The listener is closed.
        with pytest.raises(OSError):
            request(rp.port, "GET", API, timeout=1)
    finally:
        rp.stop()
