"""Issue 16 from outside: `edge-router serve` processes, the region simulator,
a real redis-server. One client over its limit gets 429s with Retry-After and
RateLimit headers while another is untouched; rejected requests never reach a
region; log_only only counts; two routers on one Redis hold one quota; Redis
stopped -> local fallback, logged and shown in /admin/state."""
from __future__ import annotations

import http.client
import threading
import time

import pytest

from harness import REGIONS, make_config, request, start_sim, toml_str, wait_until

pytestmark = pytest.mark.timeout(120)

PATH = "/api/v1/echo"
A, B = "81.2.69.142", "81.2.69.160"  # two GB clients (-> eu-west-1)


@pytest.fixture(scope="module")
def sim():
    s = start_sim({r: 0.0 for r in REGIONS})
    yield s
    s.stop()


def rate_limit_toml(rules: list[dict], **top) -> str:
    lines = ["[rate_limit]"] + [f"{k} = {toml_str(v)}" for k, v in top.items()]
    for rule in rules:
        lines.append("[[rate_limit.rules]]")
        for k, v in rule.items():
            if isinstance(v, dict):
                v = "{ " + ", ".join(f"{mk} = {toml_str(mv)}" for mk, mv in v.items()) + " }"
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {toml_str(v)}")
    return "\n".join(lines) + "\n"


def state_toml(url: str) -> str:
    return f'[state]\nbackend = "redis"\nurl = {toml_str(url)}\nkey_prefix = "e2e:"\n'


def path_count(sim, region: str = "eu-west-1") -> int:
    return sim.stats(region)["by_path"].get(PATH, 0)


def test_client_over_its_limit_gets_429_another_is_untouched(sim, router_factory):
    rules = [{"name": "per-ip", "key": "client_ip", "rate": "1/m", "burst": 5}]
    rp = router_factory(make_config(sim.ports) + rate_limit_toml(rules))
    before = path_count(sim)
    answers = [rp.get(PATH, headers={"X-Forwarded-For": A}) for _ in range(15)]
    assert [r.status for r in answers] == [200] * 5 + [429] * 10
    ok, limited = answers[0], answers[-1]
    # allowed answers carry the remaining quota
    assert ok.headers["ratelimit-policy"] == '"per-ip";q=5;w=300'
    assert ok.headers["ratelimit"] == '"per-ip";r=4;t=60'
    assert answers[4].headers["ratelimit"].startswith('"per-ip";r=0;')
    # the 429: JSON, Retry-After, the draft's headers, no region
    assert limited.headers["content-type"] == "application/json"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["ratelimit-policy"] == '"per-ip";q=5;w=300'
    assert limited.headers["ratelimit"] == f'"per-ip";r=0;t={limited.headers["retry-after"]}'
    assert limited.headers["x-edge-region"] == "none"
    body = limited.json()
    assert body["error"] == "rate_limited" and "per-ip" in body["detail"]
    # the second client is untouched
    assert all(rp.get(PATH, headers={"X-Forwarded-For": B}).status == 200 for _ in range(5))
    # rejected requests never reached a region
    assert path_count(sim) - before == 5 + 5

    state = rp.state()["rate_limit"]
    assert state["backend"] == "local"
    rule = state["rules"][0]
    assert (rule["name"], rule["rate"], rule["burst"], rule["action"]) == ("per-ip", "1/m", 5, "reject")
    assert rule["top_limited"] == [{"key": A, "limited": 10}]
    metrics = request(rp.admin, "GET", "/metrics").body.decode()
    assert 'edge_router_rate_limited_total{rule="per-ip"} 10.0' in metrics
    assert 'edge_router_requests_total{code="4xx",region="none"' in metrics

    # the operator lifts the limit for this client: token needed, bad input named
    assert rp.admin_req("POST", "/admin/ratelimit/lift", {"rule": "per-ip", "key": A}, token=None).status in (401, 403)
    bad = rp.admin_req("POST", "/admin/ratelimit/lift", {"rule": "per-ip", "key": A, "for": "soon"})
    assert bad.status == 400 and bad.json()["field"] == "for"
    bad = rp.admin_req("POST", "/admin/ratelimit/lift", {"rule": "nope", "key": A})
    assert bad.status == 400 and bad.json()["field"] == "rule"
    lifted = rp.admin_req("POST", "/admin/ratelimit/lift", {"rule": "per-ip", "key": A, "for": "10m"})
    assert lifted.status == 200 and lifted.json()["lifted_for_seconds"] == 600
    assert rp.get(PATH, headers={"X-Forwarded-For": A}).status == 200
    assert '"action": "ratelimit_lift"' in rp.log() or '"action":"ratelimit_lift"' in rp.log()


def test_three_times_the_rate_gets_about_the_rate(sim, router_factory):
    rate, burst = 10.0, 5
    rules = [{"name": "per-ip", "key": "client_ip", "rate": "10/s", "burst": burst}]
    rp = router_factory(make_config(sim.ports) + rate_limit_toml(rules))
    conn = http.client.HTTPConnection("127.0.0.1", rp.port, timeout=10)
    statuses, retry_after = [], set()
    t0 = time.monotonic()
    for i in range(90):  # 30 requests a second for 3 s, paced
        delay = t0 + i / (3 * rate) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        conn.request("GET", PATH, headers={"X-Forwarded-For": A})
        r = conn.getresponse()
        r.read()
        statuses.append(r.status)
        if r.status == 429:
            retry_after.add(r.getheader("Retry-After"))
    elapsed = time.monotonic() - t0
    conn.close()
    allowed = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert allowed <= rate * elapsed + burst  # exact in local mode
    assert allowed >= 0.8 * rate * min(elapsed, 3.0)
    assert retry_after == {"1"}
    assert rp.get(PATH, headers={"X-Forwarded-For": B}).status == 200


def test_match_only_limits_what_it_names(sim, router_factory):
    rules = [{"name": "payments", "key": "client_ip", "rate": "1/m", "burst": 1,
              "match": {"path_prefix": "/api/v1/payments", "methods": ["POST"]}}]
    rp = router_factory(make_config(sim.ports) + rate_limit_toml(rules, headers=False))
    h = {"X-Forwarded-For": A, "Content-Type": "application/json", "Idempotency-Key": "k-1"}
    first = rp.req("POST", "/api/v1/payments", b'{"amount": 1}', headers=h)
    assert first.status != 429 and "ratelimit" not in first.headers  # headers = false
    assert rp.req("POST", "/api/v1/payments", b'{"amount": 1}', headers={**h, "Idempotency-Key": "k-2"}).status == 429
    assert all(rp.get(PATH, headers={"X-Forwarded-For": A}).status == 200 for _ in range(5))


def test_log_only_lets_everything_through_and_counts(sim, router_factory):
    rules = [{"name": "dry", "key": "header:X-Api-Key", "rate": "1/m", "burst": 2, "action": "log_only"}]
    rp = router_factory(make_config(sim.ports) + rate_limit_toml(rules))
    answers = [rp.get(PATH, headers={"X-Forwarded-For": A, "X-Api-Key": "key-123"}) for _ in range(12)]
    assert all(r.status == 200 for r in answers)
    rule = rp.state()["rate_limit"]["rules"][0]
    assert rule["limited"] == 10 and rule["action"] == "log_only"
    assert rule["top_limited"][0]["key"].startswith("sha256:")  # API keys hashed
    assert "key-123" not in str(rp.state())
    metrics = request(rp.admin, "GET", "/metrics").body.decode()
    assert 'edge_router_rate_limited_total{rule="dry"} 10.0' in metrics


def hammer(port: int, ip: str, seconds: float, counts: dict, stop_at: float) -> None:
    """One keep-alive client sending as fast as it can until stop_at."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ok = limited = 0
    try:
        while time.monotonic() < stop_at:
            conn.request("GET", PATH, headers={"X-Forwarded-For": ip})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                ok += 1
            elif r.status == 429:
                limited += 1
    finally:
        conn.close()
        counts[port] = (ok, limited)


def test_two_routers_on_one_redis_share_one_quota(sim, router_factory, redis_server):
    rate, burst, sync = 20.0, 10, 0.2
    rules = [{"name": "per-ip", "key": "client_ip", "rate": "20/s", "burst": burst}]
    text = (make_config(sim.ports) + state_toml(redis_server.url)
            + rate_limit_toml(rules, backend="redis", sync_interval="200ms"))
    r1, r2 = router_factory(text), router_factory(text)
    wait_until(lambda: all(r.state()["rate_limit"]["redis"]["replicas"] == 2 for r in (r1, r2)), 15,
               what="both replicas registered in Redis")
    window = 10.0
    counts: dict = {}
    t0 = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(r.port, A, window, counts, t0 + window)) for r in (r1, r2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(window + 30)
    elapsed = time.monotonic() - t0
    allowed = sum(ok for ok, _ in counts.values())
    refused = sum(n for _, n in counts.values())
    # router/ratelimit/global_sync.py's bound for N = 2; d = sync + a generous round trip
    bound = rate * elapsed + burst + (burst + rate * (sync + 0.3))
    print(f"allowed {allowed} (each {counts}) in {elapsed:.1f}s, bound {bound:.0f};"
          f" two independent routers would allow about {2 * (rate * elapsed + burst):.0f}")
    assert refused > allowed  # both clients were offered much more than the rate
    assert allowed <= bound
    assert allowed >= 0.8 * rate * window
    for r in (r1, r2):
        st = r.state()["rate_limit"]
        assert st["redis"]["up"] is True and st["redis"]["mode"] == "global"


def test_redis_stopped_falls_back_to_local_share(sim, router_factory, redis_server):
    rules = [{"name": "per-ip", "key": "client_ip", "rate": "1/m", "burst": 6}]
    text = (make_config(sim.ports) + state_toml(redis_server.url)
            + rate_limit_toml(rules, backend="redis", sync_interval="100ms", replicas=3))
    rp = router_factory(text)
    wait_until(lambda: rp.state()["rate_limit"]["redis"]["up"] is True, 15, what="Redis link up")
    redis_server.stop()
    wait_until(lambda: rp.state()["rate_limit"]["redis"]["up"] is False, 15, what="Redis seen down")
    st = rp.state()["rate_limit"]
    assert st["redis"]["mode"].startswith("local fallback") and st["redis"]["error"]
    assert st["rules"][0]["share"] == 1  # Redis had seen one replica: the whole rate stays here
    t0 = time.monotonic()
    statuses = [rp.get(PATH, headers={"X-Forwarded-For": B}).status for _ in range(8)]
    assert statuses == [200] * 6 + [429] * 2  # limits still hold, locally
    assert time.monotonic() - t0 < 5  # and requests never wait for Redis
    assert "falling back to local limits" in rp.log()


def test_workers_merge_state_and_take_lifts(sim, router_factory):
    rules = [{"name": "per-ip", "key": "client_ip", "rate": "1/m", "burst": 1}]
    rp = router_factory("workers = 2\n" + make_config(sim.ports) + rate_limit_toml(rules))
    statuses = [rp.get(PATH, headers={"X-Forwarded-For": A}).status for _ in range(6)]
    assert 429 in statuses  # each worker holds its own buckets in local mode
    rule = rp.state()["rate_limit"]["rules"][0]
    assert rule["limited"] == statuses.count(429)  # summed over the workers
    assert rule["top_limited"] == [{"key": A, "limited": statuses.count(429)}]
    lifted = rp.admin_req("POST", "/admin/ratelimit/lift", {"rule": "per-ip", "key": A, "for": "1m"})
    assert lifted.status == 200, lifted.body
    assert all(rp.get(PATH, headers={"X-Forwarded-For": A}).status == 200 for _ in range(6))
